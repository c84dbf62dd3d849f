"""Where commands run: this machine, or a SLURM gateway over SSH, behind one small interface.

``runner_for(gateway, ...)`` picks the side: :class:`LocalRunner` when the gateway is absent or
names this host, :class:`SshRunner` (fabric, with host keys checked) otherwise. Both take an
argv list, never a shell string; every call has a timeout; a timeout or a connection failure
raises :class:`~metalab.errors.RemoteError` with a one-line message naming where it ran. File
contents travel on stdin, never in argv.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .errors import RemoteError

__all__ = [
    "LOCAL",
    "CommandResult",
    "LocalRunner",
    "RemoteError",
    "Runner",
    "SshRunner",
    "is_this_host",
    "runner_for",
    "shell_command",
]

LOCAL = "this machine"
SSH_CONFIG_ENV = "METALAB_SSH_CONFIG"  # an ssh_config to use instead of ~/.ssh/config (tests)
FILE_TIMEOUT = 30.0
# Passwords a user may keep in the environment: sbatch copies the environment into the job
# (slurmctld stores it), so the cluster's commands never receive them. Jobs read the 0600 files.
SECRET_ENV_VARS = ("METALAB_POSTGRES_PASSWORD", "PGPASSWORD")
_MISSING = 44  # exit code of _READ_SCRIPT for "no such file"
# $1 = path. Exit 44 when it does not exist, so that a read error is not mistaken for "missing".
_READ_SCRIPT = '[ -e "$1" ] || exit 44; exec cat -- "$1"'
# $1 = path, $2 = octal mode; text on stdin. mktemp creates the file 0600 before the first byte,
# chmod widens it only once written, mv replaces the target atomically.
_WRITE_SCRIPT = (
    'umask 077; tmp=$(mktemp -- "$1.XXXXXX") || exit 1; '
    'if cat >"$tmp" && chmod "$2" "$tmp" && mv -f -- "$tmp" "$1"; then exit 0; fi; '
    'rm -f -- "$tmp"; exit 1'
)
# $1 = directory; a tar of the files on stdin. Made 0700 if missing; the files arrive 0600 (umask),
# each moved into place whole, all in one SSH session (each session costs the gateway a fork).
_WRITE_FILES_SCRIPT = (
    'umask 077; mkdir -p -m 700 -- "$1" && tmp=$(mktemp -d -- "$1/.incoming.XXXXXX") || exit 1; '
    'if tar -x -o -f - -C "$tmp" && for f in "$tmp"/*; do mv -f -- "$f" "$1/" || exit 1; done; '
    'then rmdir -- "$tmp"; exit 0; fi; rm -rf -- "$tmp"; exit 1'
)


class CommandResult(NamedTuple):
    """Exit code and decoded output of one command."""

    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs commands and reads/writes files on one side: this machine or a gateway."""

    where: str  # "this machine" or "user@gateway", for messages

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> CommandResult: ...

    def read_text(self, path: str) -> str | None: ...

    def write_text(self, path: str, text: str, *, mode: int = 0o600) -> None: ...

    def write_files(self, directory: str, files: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...


def shell_command(argv: Sequence[str | os.PathLike[str]]) -> str:
    """The POSIX shell command line that runs ``argv`` as is (what the gateway's shell receives)."""
    if not argv:
        raise ValueError("empty argv")
    return shlex.join(os.fspath(arg) for arg in argv)


def _program(argv: Sequence[Any]) -> str:
    """The program's name, for messages (arguments may carry paths; they are left out)."""
    return os.path.basename(os.fspath(argv[0])) if argv else "?"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _without_secrets(environ: Any) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key not in SECRET_ENV_VARS}


class LocalRunner:
    """Commands as subprocesses of this process, files through the local filesystem."""

    where = LOCAL

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> CommandResult:
        args = [os.fspath(arg) for arg in argv]
        try:
            done = subprocess.run(
                args, input=input, stdin=subprocess.DEVNULL if input is None else None,
                capture_output=True, text=True, timeout=timeout, check=False, env=_without_secrets(os.environ),
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{_program(args)} timed out after {timeout:g} s on {self.where}") from None
        except FileNotFoundError:  # what a shell would say and return
            return CommandResult(127, "", f"{args[0]}: command not found\n")
        except PermissionError:
            return CommandResult(126, "", f"{args[0]}: permission denied\n")
        except OSError as error:
            raise RemoteError(f"cannot run {_program(args)} on {self.where}: {error.strerror}") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise RemoteError(f"cannot read {path} on {self.where}: {error.strerror}") from None

    def write_text(self, path: str, text: str, *, mode: int = 0o600) -> None:
        target = Path(path)
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # 0600 from the start
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
            tmp = None
        except OSError as error:
            raise RemoteError(f"cannot write {path} on {self.where}: {error.strerror}") from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def write_files(self, directory: str, files: Mapping[str, str]) -> None:
        """Several 0600 files in ``directory`` (made 0700 if missing), each written atomically."""
        try:
            Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise RemoteError(f"cannot create {directory} on {self.where}: {error.strerror}") from None
        for name, text in files.items():
            self.write_text(os.path.join(directory, name), text)

    def close(self) -> None:
        pass


class SshRunner:
    """Commands on a gateway over SSH (fabric), honouring ssh_config, the agent and ``ssh_key``.

    Host keys are checked against ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts and the ssh_config's
    UserKnownHostsFile / GlobalKnownHostsFile; an unknown or changed key is refused. The connection
    opens on first use and is reused until :meth:`close`.
    """

    def __init__(
        self, host: str, *, user: str | None, ssh_key: Path | None, connect_timeout: float = 10,
        file_timeout: float = FILE_TIMEOUT,
    ) -> None:
        import fabric  # ~0.5 s: only when a gateway is really used

        config_path = os.environ.get(SSH_CONFIG_ENV)
        config = fabric.Config(runtime_ssh_path=config_path) if config_path else fabric.Config()
        seconds = max(1, math.ceil(connect_timeout))
        connect_kwargs: dict[str, Any] = {"banner_timeout": seconds, "auth_timeout": seconds}
        if ssh_key is not None:
            connect_kwargs["key_filename"] = [os.fspath(Path(ssh_key).expanduser())]
        try:
            self._conn = fabric.Connection(
                host, user=user, config=config, connect_timeout=seconds, connect_kwargs=connect_kwargs
            )
        except (OSError, ValueError) as error:
            raise RemoteError(f"cannot use the SSH settings for {host}: {error}") from None
        self.host = host
        self.where = f"{self._conn.user}@{host}"
        self.file_timeout = file_timeout
        self._trust_known_hosts()

    def _trust_known_hosts(self) -> None:
        import paramiko

        client = self._conn.client
        files = ["~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts"]
        for key in ("userknownhostsfile", "globalknownhostsfile"):
            files += str(self._conn.ssh_config.get(key, "")).split()
        for name in files:
            path = os.path.expanduser(name)
            if os.path.isfile(path):
                try:
                    client.load_system_host_keys(path)  # read only: never written back
                except (OSError, paramiko.SSHException) as error:
                    raise RemoteError(f"cannot read known hosts {path} for {self.where}: {error}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # fabric's default would add any key

    def _open(self) -> Any:
        import paramiko

        if self._conn.is_connected:
            return self._conn
        try:
            self._conn.open()
        except paramiko.BadHostKeyException:
            self._conn.close()
            raise RemoteError(
                f"cannot connect to {self.where}: its host key does not match known_hosts (refused)"
            ) from None
        except paramiko.AuthenticationException as error:
            self._conn.close()
            raise RemoteError(f"cannot connect to {self.where}: authentication failed ({error})") from None
        except paramiko.SSHException as error:
            self._conn.close()
            reason = str(error)
            if "not found in known_hosts" in reason:
                reason = "unknown host key (not in known_hosts; connect once with ssh to check and accept it)"
            raise RemoteError(f"cannot connect to {self.where}: {reason}") from None
        except (OSError, EOFError) as error:  # refused, unreachable, DNS, connect timeout
            self._conn.close()
            raise RemoteError(f"cannot connect to {self.where}: {error.strerror or error or type(error).__name__}") from None
        return self._conn

    def run(self, argv: Sequence[str], *, timeout: float, input: str | bytes | None = None) -> CommandResult:
        import paramiko

        command = shell_command(argv)
        deadline = time.monotonic() + timeout
        conn = self._open()
        try:
            channel = conn.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as error:
            self._conn.close()
            raise RemoteError(f"cannot run {_program(argv)} on {self.where}: {error or type(error).__name__}") from None
        try:
            channel.exec_command(command)
            # stdin from a thread: the text, then EOF (so the command never waits for more)
            data = input if isinstance(input, bytes) else (input or "").encode()
            sender = threading.Thread(target=_send_and_close, args=(channel, data), daemon=True)
            sender.start()
            out, err = bytearray(), bytearray()
            while True:
                busy = False
                while channel.recv_ready():
                    out += channel.recv(65536)
                    busy = True
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    busy = True
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise RemoteError(f"{_program(argv)} timed out after {timeout:g} s on {self.where}")
                if not busy:
                    time.sleep(0.002)
            code = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as error:
            self._conn.close()
            raise RemoteError(f"{_program(argv)} failed on {self.where}: connection lost ({type(error).__name__})") from None
        finally:
            channel.close()  # on a timeout this leaves the remote command without its client
        return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def read_text(self, path: str) -> str | None:
        done = self.run(["sh", "-c", _READ_SCRIPT, "sh", path], timeout=self.file_timeout)
        if done.returncode == _MISSING:
            return None
        if done.returncode != 0:
            raise RemoteError(f"cannot read {path} on {self.where}: {_first_line(done.stderr)}")
        return done.stdout

    def write_text(self, path: str, text: str, *, mode: int = 0o600) -> None:
        done = self.run(["sh", "-c", _WRITE_SCRIPT, "sh", path, format(mode, "o")], timeout=self.file_timeout, input=text)
        if done.returncode != 0:
            raise RemoteError(f"cannot write {path} on {self.where}: {_first_line(done.stderr)}")

    def write_files(self, directory: str, files: Mapping[str, str]) -> None:
        """Several 0600 files in ``directory`` (made 0700 if missing) in one SSH session: a tar
        on stdin (never argv), each file moved into place whole."""
        import io
        import tarfile

        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, text in files.items():
                data = text.encode("utf-8")
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data), 0o600, int(time.time())
                tar.addfile(member, io.BytesIO(data))
        done = self.run(["sh", "-c", _WRITE_FILES_SCRIPT, "sh", directory], timeout=self.file_timeout,
                        input=archive.getvalue())
        if done.returncode != 0:
            raise RemoteError(f"cannot write {', '.join(files)} in {directory} on {self.where}: {_first_line(done.stderr)}")

    def close(self) -> None:
        self._conn.close()


def _send_and_close(channel: Any, data: bytes) -> None:
    with contextlib.suppress(OSError, EOFError):  # the command may exit without reading it all
        if data:
            channel.sendall(data)
        channel.shutdown_write()


def is_this_host(gateway: str | None) -> bool:
    """True when ``gateway`` is absent, ``localhost``, or names this machine (short or full name)."""
    if gateway is None or not gateway.strip():
        return True
    name = gateway.strip().rsplit("@", 1)[-1].lower()
    if name == "localhost":
        return True
    here = socket.gethostname().lower()
    if name in (here, here.split(".")[0]):
        return True
    fqdn = socket.getfqdn().lower()  # may ask the resolver: only when the cheap checks failed
    return name in (fqdn, fqdn.split(".")[0])


def runner_for(gateway: str | None, *, user: str | None = None, ssh_key: Path | None = None) -> Runner:
    """A :class:`LocalRunner` when ``gateway`` is this host (or absent), else an :class:`SshRunner` to it."""
    if is_this_host(gateway):
        return LocalRunner()
    assert gateway is not None
    return SshRunner(gateway.strip(), user=user, ssh_key=ssh_key)
