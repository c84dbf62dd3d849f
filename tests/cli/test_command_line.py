"""The command line as a researcher meets it in the first hour: help, did-you-mean, --env
anywhere, a pipe that closes early."""

from __future__ import annotations

import subprocess

import pytest

from conftest import METALAB

INVOKE_RUNNER_OPTIONS = ("--hide", "--pty", "--echo", "--warn-only", "--prompt-for-sudo-password", "--command-timeout",
                         "--write-pyc", "--list-format", "--list-depth", "--config", "--debug")


def test_help_lists_metalabs_commands_grouped_and_only_its_own_options(metalab):
    helped = metalab("--help")
    assert helped.code == 0
    for heading in ("Project:", "Environment profiles:", "Services:", "Options:"):
        assert heading in helped.out
    for command in ("services up", "services status", "services down", "env list", "env show", "tunnel", "init"):
        assert f"\n  {command} " in helped.out
    for option in ("--env NAME", "--dry", "--verbose", "--version", "--print-completion-script"):
        assert option in helped.out
    assert not [option for option in INVOKE_RUNNER_OPTIONS if option in helped.out]


def test_a_group_alone_lists_its_commands(metalab):
    listed = metalab("services")
    assert listed.code == 0 and listed.err == ""
    assert "services up" in listed.out and "services status" in listed.out and "env list" not in listed.out


@pytest.mark.parametrize(
    ("argv", "meant"),
    [(("services", "upp"), "services up"), (("servces", "status"), "services status"), (("env", "shwo"), "env show"),
     (("services.dwn",), "services down")],
)
def test_an_unknown_command_gets_did_you_mean_on_one_line(metalab, argv, meant):
    result = metalab(*argv)
    assert result.code == 2 and result.out == ""
    [line] = result.err.strip().splitlines()
    assert line == f"metalab: no command `{' '.join(argv)}`; did you mean `metalab {meant}`?", line


def test_env_is_accepted_before_the_command_and_after_it(metalab, doc_project):
    before = metalab("--env", "local", "env", "show", cwd=doc_project)
    after = metalab("env", "show", "--env", "local", cwd=doc_project)
    assert before.code == after.code == 0 and before.out == after.out and "local" in before.out
    other = metalab("--env", "slurm", "env", "show", cwd=doc_project)
    assert other.code == 0 and other.out != before.out
    wrong = metalab("--env", "nosuch", "services", "status", cwd=doc_project)
    assert wrong.code == 2 and "'nosuch'" in wrong.err and len(wrong.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [("--help",), ("env", "list"), ("env", "show", "--json")])
def test_a_reader_that_leaves_early_ends_quietly(doc_project, argv):
    shell = subprocess.run(["bash", "-c", f"{METALAB} {' '.join(argv)} | head -1; exit ${{PIPESTATUS[0]}}"],
                           cwd=doc_project, capture_output=True, text=True, timeout=60)
    assert shell.stderr == "" and len(shell.stdout.splitlines()) <= 1, shell.stderr
    closed = subprocess.Popen([str(METALAB), *argv], cwd=doc_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    closed.stdout.close()  # gone before the first byte
    err = closed.stderr.read().decode()
    assert closed.wait(timeout=60) in (0, 1) and "Traceback" not in err and "Broken pipe" not in err, err


def test_the_examples_never_share_an_atlas_port_and_quickstart_ends_with_a_command_that_runs():
    from pathlib import Path

    import tomllib

    repo = Path(__file__).resolve().parents[2]
    ports = {}
    for config in sorted(repo.glob("examples/*/.metalab.toml")):
        atlas = tomllib.loads(config.read_text()).get("services", {}).get("atlas")
        if atlas is not None:
            ports.setdefault(atlas.get("port", 8000), []).append(config.parent.name)
    assert ports and all(len(names) == 1 for names in ports.values()), ports
    last = [line for line in (repo / "scripts" / "quickstart.sh").read_text().splitlines() if line.strip()][-1]
    assert "$VENV/bin/metalab services down" in last and "cd $project" in last  # works from the user's own shell
