"""Fixtures for integration tests: real services, started with their own tools (not metalab's).

They are independent oracles: a bug in metalab's provisioning cannot hide a bug in the code
under test. A missing service is a failure, never a skip: CI must run these tests.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root; Debian's package creates this user


@dataclasses.dataclass(frozen=True)
class PgServer:
    """A throwaway PostgreSQL: TCP on 127.0.0.1 with scram-sha-256, its unix socket with trust."""

    host: str
    port: int
    user: str
    password: str = dataclasses.field(repr=False)
    database: str
    socket_dir: str
    superuser: str = "postgres"

    def dsn(self, *, superuser: bool = False) -> str:
        """A libpq keyword string: the app role over TCP, or the superuser over the socket."""
        if superuser:
            params = {"host": self.socket_dir, "port": self.port, "user": self.superuser, "dbname": "postgres"}
        else:
            params = {
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "password": self.password,
                "dbname": self.database,
            }
        return " ".join(f"{key}={_libpq_quote(str(value))}" for key, value in params.items())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """Start PostgreSQL with initdb/pg_ctl in a temp dir under /tmp; stop it and wipe it at the end."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no pg_config): "
            "install it (apt-get install postgresql); integration tests must not be skipped",
            pytrace=False,
        )
    owner = _os_owner()
    # Under /tmp, not pytest's tmp_path: that lives below a 0700 root-owned dir on root runs,
    # which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="metalab-pgtest-", dir="/tmp"))
    data, sock, log = root / "data", root / "sock", root / "postgres.log"
    sock.mkdir()
    if owner is not None:
        for path in (root, sock):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    root.chmod(0o700)
    started = False
    try:
        _run(
            [bindir / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
             "--auth-host=scram-sha-256", "--auth-local=trust", "--no-instructions", "--no-sync"],
            owner=owner, cwd=root,
        )  # fmt: skip
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# metalab integration tests: loopback only, durability off (throwaway data)\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{sock}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        # Another process may take the free port before postgres binds it: try a few.
        for _ in range(3):
            port = _free_port()
            with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(f"port = {port}\n")  # the last setting in the file wins
            result = _run(
                [bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start"],
                owner=owner, cwd=root, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                started = True
                break
        else:
            pytest.fail(f"pg_ctl start failed:\n{_tail(log)}", pytrace=False)

        user, database, password = "metalab_app", "metalab_test", secrets.token_urlsafe(18)
        # SQL on stdin, so the password is not in any argv; token_urlsafe needs no quoting.
        _run(
            [bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", sock, "-p", str(port), "-U", "postgres", "-d", "postgres"],
            owner=None, cwd=root,
            stdin=f"CREATE ROLE {user} LOGIN PASSWORD '{password}';\nCREATE DATABASE {database} OWNER {user};\n",
        )  # fmt: skip
        yield PgServer(
            host="127.0.0.1", port=port, user=user, password=password, database=database, socket_dir=str(sock)
        )
    finally:
        if started:
            stop: list[str | Path] = [bindir / "pg_ctl", "-D", data, "-w", "-t", "60", "stop", "-m"]
            if _run([*stop, "fast"], owner=owner, cwd=root, check=False).returncode != 0:
                _run([*stop, "immediate"], owner=owner, cwd=root, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin (Debian), else what pg_config reports."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if found:
        return max(found, key=version)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    return None


def _os_owner() -> pwd.struct_passwd | None:
    """The OS user to run PostgreSQL as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        owner = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pytest.fail(f"running as root needs the OS user {PG_OS_USER!r} (Debian's postgresql package creates it)")
    if shutil.which("runuser") is None:
        pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as an unprivileged user")
    return owner


def _run(
    cmd: list[str | Path],
    *,
    owner: pwd.struct_passwd | None,
    cwd: Path,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as `owner` via runuser when given; fail the test run on error."""
    argv = [str(c) for c in cmd]
    if owner is not None:
        argv = ["runuser", "-u", owner.pw_name, "--", *argv]
    # Drop PG* variables (PGHOST, PGPASSWORD...) so that an outer setup cannot steer the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        tool = Path(cmd[0]).name
        pytest.fail(f"{tool} failed (exit {result.returncode}):\n{result.stderr[-2000:]}", pytrace=False)
    return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _libpq_quote(value: str) -> str:
    """Quote a libpq keyword value when it is empty or holds a space, quote or backslash."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
