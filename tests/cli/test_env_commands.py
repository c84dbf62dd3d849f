from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_env_show_prints_the_merged_documentation_example(metalab, doc_project):
    result = metalab("env", "show", "slurm", cwd=doc_project)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:3] == ["Environment: slurm", "Type: slurm", "File root: /shared/experiments"]
    assert "  gateway: hpc.university.edu" in lines
    assert "  user: jsmith" in lines  # the local override wins over "researcher"
    services_line = next(line for line in lines if line.startswith("  services:"))
    assert "'partition': 'my-lab-partition'" in services_line and "'time': '7-00:00:00'" in services_line
    executor_line = next(line for line in lines if line.startswith("  executor:"))
    for expected in ("'partition': 'gpu'", "'memory': '32G'", "'gpus': 1", "'max_concurrent': 200",
                     "'modules': ['cuda/12.0']", "'conda_env': 'ml-env'", "'setup': ['source ~/my_setup.sh']",
                     "'mail_user': 'jsmith@university.edu'"):
        assert expected in executor_line
    assert "  atlas: {'port': 8000}" in lines
    assert "my-secret-password" not in result.out + result.err
    assert "'password': '***'" in result.out


def test_both_spellings_and_json_agree(metalab, doc_project):
    spaced = metalab("env", "show", "slurm", "--json", cwd=doc_project)
    dotted = metalab("env.show", "slurm", "--json", cwd=doc_project)
    assert spaced.code == dotted.code == 0
    assert json.loads(spaced.out) == json.loads(dotted.out)
    view = json.loads(spaced.out)
    assert view["config"]["user"] == "jsmith" and view["services"]["postgres"]["password"] == "***"
    assert list(view) == ["environment", "type", "file_root", "config", "services"]


def test_show_without_a_name_shows_the_active_profile(metalab, doc_project):
    assert metalab("env", "show", cwd=doc_project).out.startswith("Environment: slurm")
    assert metalab("env", "show", "--env", "local", cwd=doc_project).out.startswith("Environment: local")
    assert metalab("env", "show", cwd=doc_project, env={"METALAB_ENV": "local"}).out.startswith("Environment: local")
    # flags win over the environment variable
    assert metalab("env", "show", "--env", "slurm", cwd=doc_project, env={"METALAB_ENV": "local"}).out.startswith(
        "Environment: slurm"
    )


def test_list_marks_the_active_profile(metalab, doc_project):
    result = metalab("env", "list", cwd=doc_project)
    assert result.code == 0
    assert result.out.splitlines()[0].startswith("  local")
    assert result.out.splitlines()[1].startswith("* slurm")
    rows = json.loads(metalab("env", "list", "--json", cwd=doc_project, env={"METALAB_ENV": "local"}).out)
    assert rows["active"] == "local"
    assert [(r["name"], r["active"]) for r in rows["environments"]] == [("local", True), ("slurm", False)]


def test_commands_work_from_a_subdirectory_and_resolve_paths_at_the_root(metalab, doc_project):
    deep = doc_project / "a" / "b"
    deep.mkdir(parents=True)
    view = json.loads(metalab("env", "show", "local", "--json", cwd=deep).out)
    assert view["file_root"] == str(doc_project / "runs")


def test_metalab_config_names_the_file_explicitly(metalab, doc_project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"METALAB_CONFIG": str(doc_project / ".metalab.toml")}
    assert metalab("env", "show", cwd=elsewhere, env=env).out.startswith("Environment: slurm")
    missing = metalab("env", "list", cwd=elsewhere, env={"METALAB_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.code == 2 and "METALAB_CONFIG" in missing.err


def test_no_config_anywhere_says_how_to_create_one(metalab, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = metalab("env", "list", cwd=empty)
    assert result.code == 3
    assert "metalab init" in result.err and len(result.err.strip().splitlines()) == 1


def test_init_writes_a_starter_config_and_gitignores_local_overrides(metalab, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".gitignore").write_text("*.pyc")
    result = metalab("init", cwd=project)
    assert result.code == 0, result.err
    assert 'name = "proj"' in (project / ".metalab.toml").read_text()
    assert (project / ".gitignore").read_text().splitlines() == ["*.pyc", ".metalab.local.toml", "runs/services/"]
    assert "runs/services/" in result.out and "passwords" in result.out
    assert metalab("env", "show", cwd=project).out.startswith("Environment: local")
    again = metalab("init", cwd=project)
    assert again.code == 2 and "already exists" in again.err
    assert (project / ".gitignore").read_text().count(".metalab.local.toml") == 1


def test_version_and_help(metalab):
    assert metalab("--version").out.strip() == "metalab 0.1.0"
    helped = metalab("--help")
    assert helped.code == 0 and "env show" in helped.out and "--verbose" in helped.out


def test_unknown_command_is_a_usage_error(metalab, doc_project):
    result = metalab("env", "shw", cwd=doc_project)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


BAD_INPUTS = [
    # (file contents, local contents, extra args/env, expected text in the one-line error)
    ('[project\nname = "x"\n', None, {}, "invalid TOML"),
    ('[environments.x]\nfile_root = "r"\n', None, {}, "[environments.x] type: is missing"),
    ('[environments.x]\ntype = "slurmm"\n', None, {}, "unknown type 'slurmm'; did you mean 'slurm'? (supported: local, slurm)"),
    ('[environments.x]\ntype = "kubernetes"\n', None, {}, "'kubernetes' is not supported yet"),
    ('[environments.x]\ntype = "cloud"\n', None, {}, "'cloud' is not supported yet"),
    ('[environments.x]\ntype = "slurm"\ngatway = "h"\n', None, {}, "[environments.x] gatway: unknown key; did you mean 'gateway'?"),
    ('[services.atlas]\nport = "8000"\n[environments.x]\ntype = "local"\n', None, {}, "[services.atlas] port: must be an integer"),
    ('[project]\ndefault_env = "nope"\n[environments.x]\ntype = "local"\n[environments.y]\ntype = "local"\n', None, {},
     "default_env = 'nope' names no environment profile (profiles: x, y)"),
    ('[environments.x]\ntype = "local"\n', None, {"args": ["--env", "nope"]}, "--env 'nope' names no environment profile (profiles: x)"),
    ('[environments.x]\ntype = "slurm"\n[environments.x.services]\ntime = "25:61:00"\n', None, {}, "not a SLURM time"),
    ('[environments.x]\ntype = "slurm"\n[environments.x.executor]\nmemory = "10 GB"\n', None, {}, "not a SLURM memory size"),
    ('[environments.x]\ntype = "slurm"\n', '[environments.x]\nusr = "me"\n', {}, ".metalab.local.toml: [environments.x] usr"),
]


@pytest.mark.parametrize("base, local, extra, expected", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(metalab, tmp_path, base, local, extra, expected):
    (tmp_path / ".metalab.toml").write_text(base)
    if local is not None:
        (tmp_path / ".metalab.local.toml").write_text(local)
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["env", "show"], ["env", "list"]):
        result = metalab(*command, *extra.get("args", []), cwd=tmp_path)
        assert result.code == 2, (command, result)
        assert result.out == ""
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.err
        assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_toml_errors_carry_the_line(metalab, tmp_path):
    (tmp_path / ".metalab.toml").write_text('[project]\nname = "x"\nbroken = \n')
    result = metalab("env", "list", cwd=tmp_path)
    assert "line 3" in result.err and str(tmp_path / ".metalab.toml") in result.err


def test_verbose_shows_the_traceback(metalab, tmp_path):
    (tmp_path / ".metalab.toml").write_text('[environments.x]\ntype = "cloud"\n')
    result = metalab("--verbose", "env", "list", cwd=tmp_path)
    assert result.code != 0 and "Traceback" in result.err and "ConfigError" in result.err


def test_help_imports_nothing_heavy():
    probe = (
        "import sys\n"
        "from metalab.cli import MetalabProgram, _namespace\n"
        "p = MetalabProgram(name='metalab', binary='metalab', version='x', namespace=_namespace())\n"
        "p.run(['metalab', '--help'], exit=False)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'psycopg', 'psycopg_pool', 'fabric', 'paramiko', 'jinja2', 'uvicorn', 'fastapi', 'starlette'})\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
