from __future__ import annotations

from pathlib import Path

import pytest

from metalab.config import load_config, resolve_environment, select_environment
from metalab.errors import ConfigError

CFG = Path("/p/.metalab.toml")


def choose(flag=None, environ=None, default_env=None, names=("local", "slurm")):
    return select_environment(list(names), flag=flag, environ=environ or {}, default_env=default_env, config_path=CFG)


def test_flag_beats_variable_beats_default_env():
    assert choose("local", {"METALAB_ENV": "slurm"}, "slurm") == ("local", "--env")
    assert choose(None, {"METALAB_ENV": "slurm"}, "local") == ("slurm", "METALAB_ENV")
    assert choose(None, {}, "slurm") == ("slurm", "default_env")


def test_a_single_profile_needs_no_selection():
    assert choose(names=("only",)) == ("only", "the only profile")
    assert choose() == (None, "")


@pytest.mark.parametrize(
    "kwargs, named",
    [({"flag": "nope"}, "--env 'nope'"), ({"environ": {"METALAB_ENV": "nope"}}, "METALAB_ENV 'nope'"),
     ({"default_env": "nope"}, "default_env = 'nope'")],
)
def test_unknown_names_list_the_profiles(kwargs, named):
    with pytest.raises(ConfigError) as error:
        choose(**kwargs)
    assert named in str(error.value) and "(profiles: local, slurm)" in str(error.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_local_file_default_env_wins_and_profiles_may_live_only_there(tmp_path):
    config = write(tmp_path / ".metalab.toml", '[project]\ndefault_env = "a"\n[environments.a]\ntype = "local"\n')
    write(tmp_path / ".metalab.local.toml", '[project]\ndefault_env = "mine"\n[environments.mine]\ntype = "local"\n')
    resolved = resolve_environment(load_config(config), flag=None, environ={})
    assert resolved.name == "mine" and resolved.selected_by == "default_env"


def test_relative_file_root_is_anchored_at_the_config_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    config = write(tmp_path / ".metalab.toml", '[environments.l]\ntype = "local"\nfile_root = "./runs"\n')
    resolved = resolve_environment(load_config(config), flag=None, environ={})
    assert resolved.file_root == tmp_path / "runs"


def test_tilde_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = write(tmp_path / ".metalab.toml", '[environments.s]\ntype = "slurm"\nssh_key = "~/.ssh/k"\nfile_root = "~/runs"\n')
    profile = load_config(config).config.environments["s"]
    assert profile.ssh_key == tmp_path / "home/.ssh/k"
    assert profile.file_root == tmp_path / "home/runs"


def test_errors_name_the_file_that_set_the_key(tmp_path):
    config = write(tmp_path / ".metalab.toml", '[environments.s]\ntype = "slurm"\n')
    local = write(tmp_path / ".metalab.local.toml", '[environments.s.services]\ntime = "soon"\n')
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert str(error.value).startswith(f"{local}: [environments.s.services] time: 'soon' is not a SLURM time")


def test_password_is_masked_in_repr(tmp_path):
    config = write(tmp_path / ".metalab.toml", '[services.postgres]\npassword = "hunter2-secret"\n')
    loaded = load_config(config)
    assert "hunter2-secret" not in repr(loaded)
    assert loaded.config.services.postgres.password.reveal() == "hunter2-secret"
