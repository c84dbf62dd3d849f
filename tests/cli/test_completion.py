"""Tab completion in real shells: the completion script sourced, then asked as the shell asks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import METALAB

PROJECT = '[project]\nname = "x"\n[services.postgres]\n[environments.local]\ntype = "local"\n' \
          '[environments.cluster]\ntype = "slurm"\ngateway = "login"\nfile_root = "/shared"\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".metalab.toml").write_text(PROJECT)
    return tmp_path


def shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{METALAB.parent}{os.pathsep}{os.environ['PATH']}"}


def bash_complete(project: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (the line typed so far), with the script sourced."""
    line = " ".join(f"'{word}'" for word in ("metalab", *words))
    code = (f'source <(metalab --print-completion-script bash); COMP_WORDS=({line}); COMP_CWORD={len(words)}; '
            '_metalab_complete; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", code], cwd=project, env=shell_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return sorted(line for line in done.stdout.splitlines() if line)


def test_bash_completes_the_spaced_spelling(project: Path) -> None:
    assert bash_complete(project, "serv") == ["services"]
    assert bash_complete(project, "services", "u") == ["up", "url"]
    assert bash_complete(project, "services", "st") == ["status"]
    assert bash_complete(project, "env", "") == ["list", "show"]
    assert "--json" in bash_complete(project, "services", "status", "--")


def test_bash_completes_profile_names_after_env_and_service_names_after_logs(project: Path) -> None:
    assert bash_complete(project, "--env", "") == ["cluster", "local"]
    assert bash_complete(project, "services", "up", "--env", "c") == ["cluster"]
    assert bash_complete(project, "env", "show", "") == ["--env", "--json", "--name", "cluster", "local"]
    assert bash_complete(project, "services", "logs", "") == ["--env", "--follow", "--service", "-n", "atlas", "job",
                                                              "postgres"]
    assert bash_complete(project, "services", "logs", "--service", "p") == ["postgres"]


def test_fish_completes_the_spaced_spelling_and_profiles(project: Path) -> None:
    fish = shutil.which("fish")
    assert fish, "fish is installed by scripts/test.sh"
    code = 'source (metalab --print-completion-script fish | psub); complete -C "metalab services u"; ' \
           'echo ---; complete -C "metalab --env "'
    done = subprocess.run([fish, "-c", code], cwd=project, env=shell_env(), capture_output=True, text=True, timeout=60)
    spaced, profiles = done.stdout.split("---\n")
    assert sorted(spaced.split()) == ["up", "url"] and sorted(profiles.split()) == ["cluster", "local"], done


def test_zsh_loads_its_script_and_an_unknown_shell_is_one_line(project: Path, metalab) -> None:
    zsh = shutil.which("zsh")
    assert zsh, "zsh is installed by scripts/test.sh"
    code = "autoload -U compinit; compinit -u; source <(metalab --print-completion-script zsh); whence -w _metalab"
    done = subprocess.run([zsh, "-c", code], cwd=project, env=shell_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_metalab: function" in done.stdout, done
    wrong = metalab("--print-completion-script", "tcsh")
    assert wrong.code == 2 and wrong.err.strip() == "metalab: no completion script for 'tcsh'; choose bash, zsh or fish"
