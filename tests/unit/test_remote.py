"""metalab.remote without a gateway: which side runs a command, and how argv is quoted for it."""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from metalab import remote
from metalab.remote import (
    LocalRunner,
    SshRunner,
    is_this_host,
    runner_for,
    shell_command,
)

TRICKY = ["plain", "a b", "it's", '"double"', "$HOME", "${X:-y}", "`id`", "$(id)", "a;b", "a|b", "a&&b",
          "*", "?", "~", "", " ", "tab\there", "line\nbreak", "back\\slash", "-n", "--", "ünïcode ✓", "#hash"]


@pytest.fixture(autouse=True)
def fixed_hostnames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "login1")
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "login1.cluster.example.org")


HERE = [None, "", "  ", "localhost", "LOCALHOST", "login1", "Login1", "login1.cluster.example.org", "alice@login1",
        " login1 "]


@pytest.mark.parametrize("gateway", HERE)
def test_this_host_runs_locally(gateway: str | None) -> None:
    assert is_this_host(gateway)
    assert isinstance(runner_for(gateway, user="alice", ssh_key=None), LocalRunner)


@pytest.mark.parametrize("gateway", ["login2", "login1.other.org", "gw.cluster.example.org", "testgw", "alice@login2"])
def test_other_hosts_go_through_ssh(gateway: str) -> None:
    assert not is_this_host(gateway)


def test_runner_for_builds_an_ssh_runner_without_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host gw\n  HostName 192.0.2.1\n  User fromconfig\n")
    monkeypatch.setenv(remote.SSH_CONFIG_ENV, str(config))
    runner = runner_for("gw", user=None, ssh_key=None)
    assert isinstance(runner, SshRunner)
    assert runner.where == "fromconfig@gw"  # ssh_config's User applies
    assert runner_for("gw", user="bob", ssh_key=tmp_path / "key").where == "bob@gw"  # an explicit user wins
    runner.close()  # never opened: nothing to do


def test_ssh_runner_rejects_unknown_host_keys_by_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko

    monkeypatch.setenv(remote.SSH_CONFIG_ENV, str(tmp_path / "empty_config"))
    (tmp_path / "empty_config").write_text("")
    runner = SshRunner("gw", user="u", ssh_key=None)
    assert isinstance(runner._conn.client._policy, paramiko.RejectPolicy)


@pytest.mark.parametrize("arg", TRICKY)
def test_shell_command_round_trips_each_argument(arg: str) -> None:
    assert shlex.split(shell_command(["prog", arg])) == ["prog", arg]


def test_shell_command_is_what_a_posix_shell_runs_as_is() -> None:
    command = shell_command(["printf", r"%s\0", *TRICKY])
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert done.stdout.split("\0")[:-1] == TRICKY


def test_shell_command_accepts_paths_and_refuses_empty_argv() -> None:
    assert shell_command([Path("/opt/my tools/sbatch"), "x"]) == "'/opt/my tools/sbatch' x"
    with pytest.raises(ValueError):
        shell_command([])
