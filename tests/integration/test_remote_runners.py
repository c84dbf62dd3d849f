"""metalab.remote against the real thing, where researchers have it: a LocalRunner on the login
node (SLURM answers there), and an SshRunner from the workstation to the gateway (login's sshd,
the only thing the workstation can reach). Each test runs inside its host (``on_host``)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalab.errors import MetalabError, RemoteError
from metalab.remote import LOCAL, LocalRunner, Runner, SshRunner, runner_for

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Gateway:
    """The gateway as the workstation's ~/.ssh names it (scripts/cluster.sh writes that config)."""

    host: str
    address: str
    user: str
    key: Path
    known_hosts: Path
    port: int = 22


@pytest.fixture
def ssh_gateway(cluster) -> Gateway:
    ssh = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"  # not HOME: bare_home moves that
    info = cluster.info
    return Gateway(host=info.gateway, address=info.gateway_address_from_ws, user=info.gateway_user,
                   key=ssh / "id_ed25519", known_hosts=ssh / "known_hosts")


@pytest.fixture(params=[pytest.param("local", marks=pytest.mark.on_host("login")),
                        pytest.param("ssh", marks=pytest.mark.on_host("ws"))])
def side(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def runner(side: str, request: pytest.FixtureRequest) -> Iterator[Runner]:
    if side == "local":
        made: Runner = LocalRunner()
    else:
        made = runner_for(request.getfixturevalue("ssh_gateway").host, user=None, ssh_key=None)
    yield made
    made.close()


@pytest.fixture
def expected_user(side: str, request: pytest.FixtureRequest) -> str:
    if side == "local":
        return pwd.getpwuid(os.geteuid()).pw_name
    return request.getfixturevalue("ssh_gateway").user


@pytest.fixture
def scratch(runner: Runner, tmp_path: Path) -> Iterator[str]:
    """A directory the runner's user can write (on the gateway: made there, as that user)."""
    if isinstance(runner, LocalRunner):
        yield str(tmp_path)
        return
    made = runner.run(["mktemp", "-d", "/tmp/metalab-remote-test-XXXXXX"], timeout=20)
    assert made.returncode == 0, made.stderr
    path = made.stdout.strip()
    yield path
    runner.run(["rm", "-rf", "--", path], timeout=20)


def test_runs_as_the_side_user(runner: Runner, expected_user: str, side: str) -> None:
    done = runner.run(["id", "-un"], timeout=20)
    assert done == (0, f"{expected_user}\n", "")
    assert runner.where == (LOCAL if side == "local" else f"{expected_user}@login")


def test_argv_reaches_the_program_unchanged(runner: Runner) -> None:
    args = ["a b", "it's", '"q"', "$HOME", "`id`", "x;y", "*", "", "line\nbreak", "ünï"]
    done = runner.run(["printf", r"%s\0", *args], timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\0")[:-1] == args


def test_stdin_input(runner: Runner) -> None:
    text = "first line\nsecond ✓ line\n" + "x" * 20_000 + "\n"
    assert runner.run(["cat"], timeout=20, input=text).stdout == text
    # no input: stdin is at EOF, the command does not wait for it
    assert runner.run(["cat"], timeout=20) == (0, "", "")


def test_exit_code_and_stderr(runner: Runner) -> None:
    done = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20)
    assert done == (3, "out\n", "err\n")


def test_nonexistent_command_exits_127(runner: Runner) -> None:
    done = runner.run(["metalab-no-such-command-xyz"], timeout=20)
    assert done.returncode == 127
    assert "metalab-no-such-command-xyz" in done.stderr


def test_timeout_raises_quickly(runner: Runner) -> None:
    start = time.monotonic()
    with pytest.raises(RemoteError) as raised:
        runner.run(["sleep", "8"], timeout=1)
    assert time.monotonic() - start < 4
    message = str(raised.value)
    assert isinstance(raised.value, MetalabError)
    assert "\n" not in message and "timed out" in message and runner.where in message
    assert runner.run(["true"], timeout=20).returncode == 0  # the runner is still usable


def _cmdlines() -> list[bytes]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes())
            except OSError:
                pass
    return found


def test_write_text_is_0600_round_trips_and_never_in_argv(
    runner: Runner, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-" + secrets.token_hex(16)
    text = f"password = {secret}\nünïcode line\n"
    path = f"{scratch}/secret file.txt"

    seen_argv: list[str] = []
    real_run = runner.run

    def spy(argv, **kwargs):  # type: ignore[no-untyped-def]
        seen_argv.extend(argv)
        return real_run(argv, **kwargs)

    if not isinstance(runner, LocalRunner):
        monkeypatch.setattr(runner, "run", spy)

    leaked = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if any(secret.encode() in cmdline for cmdline in _cmdlines()):
                leaked.set()
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for _ in range(5):
            runner.write_text(path, text)
    finally:
        stop.set()
        watcher.join()
    assert not leaked.is_set(), "the file's content appeared in a process's command line"
    assert all(secret not in arg for arg in seen_argv)

    assert runner.read_text(path) == text
    stat = runner.run(["stat", "-c", "%a %U", path], timeout=20)
    assert stat.stdout.split() == ["600", runner.run(["id", "-un"], timeout=20).stdout.strip()]
    # an existing wider file is replaced, not reused with its old mode
    runner.run(["chmod", "644", path], timeout=20)
    runner.write_text(path, "second\n")
    assert runner.run(["stat", "-c", "%a", path], timeout=20).stdout.strip() == "600"
    assert runner.read_text(path) == "second\n"
    runner.write_text(path, "shared\n", mode=0o644)
    assert runner.run(["stat", "-c", "%a", path], timeout=20).stdout.strip() == "644"
    # no temporary file left behind
    assert runner.run(["ls", "-A", scratch], timeout=20).stdout.split("\n")[:-1] == ["secret file.txt"]


def test_write_files_writes_several_0600_files_in_one_go_into_a_new_private_dir(runner: Runner, scratch: str) -> None:
    secret = "s3cret-" + secrets.token_hex(16)
    directory = f"{scratch}/services"
    files = {"postgres.password": secret + "\n", "node.json": '{"ünï": 1}', "services.sbatch": "#!/bin/bash\nexit 0\n"}
    runner.write_files(directory, files)
    assert {name: runner.read_text(f"{directory}/{name}") for name in files} == files
    modes = runner.run(["stat", "-c", "%n %a", directory, *(f"{directory}/{name}" for name in files)], timeout=20)
    assert [line.split()[1] for line in modes.stdout.splitlines()] == ["700", "600", "600", "600"]
    runner.write_files(directory, {"node.json": "{}"})  # replaces one, keeps the others, leaves no temp dir
    assert runner.read_text(f"{directory}/node.json") == "{}" and runner.read_text(f"{directory}/postgres.password")
    assert sorted(runner.run(["ls", "-A", directory], timeout=20).stdout.split()) == sorted(files)


def test_read_text_of_a_missing_file_is_none(runner: Runner, scratch: str) -> None:
    assert runner.read_text(f"{scratch}/nothing-here") is None


def test_write_text_into_a_missing_dir_is_an_error(runner: Runner, scratch: str) -> None:
    with pytest.raises(RemoteError, match="cannot write"):
        runner.write_text(f"{scratch}/no/such/dir/file", "x")


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_sbatch_squeue_scancel(runner: Runner, expected_user: str) -> None:
    # The job's output goes nowhere: it runs on a compute node, whose /tmp is its own (a log in a
    # scratch dir made on login would not exist there, and the job would fail at once).
    name = f"metalab-remote-test-{secrets.token_hex(3)}"
    submitted = runner.run(
        ["sbatch", "--parsable", "--job-name", name, "--output", "/dev/null", "--wrap", "sleep 30"],
        timeout=30,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    assert job.isdigit(), submitted.stdout
    try:
        queued = runner.run(["squeue", "-h", "-j", job, "-o", "%i|%j|%u|%T"], timeout=30)
        assert queued.returncode == 0, queued.stderr
        jid, jname, juser, state = queued.stdout.strip().split("|")
        assert (jid, jname, juser) == (job, name, expected_user)
        assert state in ("PENDING", "CONFIGURING", "RUNNING")

        by_name = runner.run(["squeue", "-h", "--name", name, "-o", "%i"], timeout=30)
        assert by_name.stdout.split() == [job]

        cancelled = runner.run(["scancel", job], timeout=30)
        assert cancelled == (0, "", "")

        def gone() -> bool:
            return runner.run(["squeue", "-h", "-j", job, "-o", "%i"], timeout=30).stdout.strip() == ""

        _wait_for(gone, 20, f"job {job} to leave the queue")
        final = runner.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], timeout=30)
        assert final.stdout.strip() == "CANCELLED"
    finally:
        runner.run(["scancel", job], timeout=30)


def test_scancel_of_an_unknown_job_exits_0_and_says_so_only_when_verbose(runner: Runner) -> None:
    """SLURM 22.05's scancel exits 0 for an unknown or finished job; only -v prints the error.

    So callers cannot rely on scancel's exit code: use -v and read stderr, and check squeue after.
    """
    assert runner.run(["scancel", "999999999"], timeout=30) == (0, "", "")
    verbose = runner.run(["scancel", "-v", "999999999"], timeout=30)
    assert verbose.returncode == 0
    assert "error: Kill job error on job id 999999999: Invalid job id specified" in verbose.stderr


# -- the SSH side only, from the workstation -----------------------------------------------------


def _write_ssh_config(tmp_path: Path, gateway, *, known_hosts: Path, identity: bool = True) -> Path:  # type: ignore[no-untyped-def]
    lines = [
        "Host othergw",
        f"  HostName {gateway.address}",
        f"  Port {gateway.port}",
        f"  User {gateway.user}",
        f"  UserKnownHostsFile {known_hosts}",
        "  StrictHostKeyChecking yes",
    ]
    if identity:
        lines.append(f"  IdentityFile {gateway.key}")
    path = tmp_path / "ssh_config"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME without ~/.ssh (no known_hosts, no default keys) and no agent."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.mark.on_host("ws")
def test_unknown_host_key_is_refused(ssh_gateway, tmp_path: Path, bare_home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("METALAB_SSH_CONFIG", str(_write_ssh_config(tmp_path, ssh_gateway, known_hosts=empty)))
    runner = runner_for("othergw", user=None, ssh_key=None)
    with pytest.raises(RemoteError, match="unknown host key") as raised:
        runner.run(["true"], timeout=20)
    assert f"{ssh_gateway.user}@othergw" in str(raised.value)
    assert empty.read_text() == ""  # nothing was added
    runner.close()


@pytest.mark.on_host("ws")
def test_changed_host_key_is_refused(ssh_gateway, tmp_path: Path, bare_home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = tmp_path / "known_hosts"
    fake.write_text(f"{ssh_gateway.address} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    monkeypatch.setenv("METALAB_SSH_CONFIG", str(_write_ssh_config(tmp_path, ssh_gateway, known_hosts=fake)))
    runner = runner_for("othergw", user=None, ssh_key=None)
    with pytest.raises(RemoteError, match="does not match"):
        runner.run(["true"], timeout=20)


@pytest.mark.on_host("ws")
def test_ssh_key_argument_is_used(ssh_gateway, tmp_path: Path, bare_home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = _write_ssh_config(tmp_path, ssh_gateway, known_hosts=ssh_gateway.known_hosts, identity=False)
    monkeypatch.setenv("METALAB_SSH_CONFIG", str(config))
    without = runner_for("othergw", user=None, ssh_key=None)
    with pytest.raises(RemoteError, match="cannot connect"):
        without.run(["true"], timeout=20)
    with_key = runner_for("othergw", user=ssh_gateway.user, ssh_key=ssh_gateway.key)
    assert with_key.run(["id", "-un"], timeout=20).stdout.strip() == ssh_gateway.user
    with_key.close()


@pytest.mark.on_host("ws")
def test_connection_refused_is_a_quick_remote_error(ssh_gateway, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    config = tmp_path / "ssh_config"
    config.write_text(f"Host deadgw\n  HostName 127.0.0.1\n  Port {port}\n  User {ssh_gateway.user}\n")
    monkeypatch.setenv("METALAB_SSH_CONFIG", str(config))
    runner = runner_for("deadgw", user=None, ssh_key=ssh_gateway.key, )
    start = time.monotonic()
    with pytest.raises(RemoteError, match="cannot connect to .*@deadgw") as raised:
        runner.run(["true"], timeout=20)
    assert time.monotonic() - start < 5
    assert "\n" not in str(raised.value)


@pytest.mark.on_host("ws")
def test_runner_for_picks_the_side(ssh_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for gateway in (None, "localhost", socket.gethostname(), socket.getfqdn()):
        assert isinstance(runner_for(gateway, user=None, ssh_key=None), LocalRunner), gateway
    remote = runner_for(ssh_gateway.host, user=None, ssh_key=None)
    assert isinstance(remote, SshRunner)
    assert remote.where == f"{ssh_gateway.user}@{ssh_gateway.host}"
    remote.close()
