"""PostgreSQL as metalab runs it: where its files live, the commands and config files that
set it up, and how to find, start, check and stop a server on this machine.

Nothing here knows about SLURM; the services job script does the same steps on a node.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, MetalabError, NotFoundError, UsageError
from ..procs import is_alive, process_start, stop_process
from ..secret import Secret
from . import DEFAULT_AUTH_METHOD, DEFAULT_DATABASE, DEFAULT_USER, LOOPBACK

__all__ = [
    "DEFAULT_AUTH_METHOD",
    "DEFAULT_DATABASE",
    "DEFAULT_USER",
    "PASSWORD_ENV_VAR",
    "PostgresLayout",
    "PostgresPlan",
    "RunningPostgres",
    "find_bin_dir",
    "quote_ident",
    "quote_literal",
]

PASSWORD_ENV_VAR = "METALAB_POSTGRES_PASSWORD"
LISTEN_HOST = LOOPBACK
CONF_NAME = "metalab.conf"
INSTALL_HINT = "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) or set [services.postgres] bin_dir"


class PostgresError(MetalabError):
    """PostgreSQL could not be set up, started or reached."""


# NamedTuples rather than dataclasses: as typed and immutable, and this module sits on the
# import path of `status` and of a warm `up`, where dataclass creation shows.


class PostgresLayout(NamedTuple):
    """Where one PostgreSQL instance keeps its files, all under the profile's services dir."""

    services_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.services_dir / "postgres"

    @property
    def password_file(self) -> Path:
        return self.services_dir / "postgres.password"

    @property
    def pgpass_file(self) -> Path:
        """A libpq password file beside the password (``PGPASSFILE=... psql``, psycopg, pandas)."""
        return self.services_dir / PGPASS_NAME

    @property
    def log_file(self) -> Path:
        return self.services_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes: keep the directory short and private.
        import tempfile

        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"metalab-pg-{digest}"

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()


class PostgresPlan(NamedTuple):
    """Everything needed to start the server; pure data, printable in a dry run."""

    layout: PostgresLayout
    bin_dir: Path
    port: int
    user: str
    database: str
    auth_method: str
    run_as: str | None  # the OS user that owns and runs the server; None means "this user"
    listen: str = LOOPBACK  # a compute node listens on its own address instead

    @property
    def clients(self) -> str:
        """Who may log in over TCP (always with a password): loopback only, or the cluster."""
        return f"{self.listen}/32" if self.listen == LOOPBACK else "all"

    @property
    def superuser(self) -> str:
        return self.run_as or getpass.getuser()

    def initdb_command(self, target: Path) -> list[str]:
        return [
            str(self.bin_dir / "initdb"), "-D", str(target), "-U", self.superuser,
            "--auth-local=trust", f"--auth-host={self.auth_method}", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-instructions",
        ]

    def server_command(self) -> list[str]:
        return [str(self.bin_dir / "postgres"), "-D", str(self.layout.data_dir)]

    def psql_command(self) -> list[str]:
        return [
            str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.layout.socket_dir),
            "-p", str(self.port), "-U", self.superuser, "-d", "postgres", "-f", "-",
        ]

    def describe(self, argv: Sequence[str]) -> str:
        """How a command reads in a dry run: who runs it, then the argv."""
        return (f"(as {self.run_as}) " if self.run_as else "") + " ".join(argv)

    def conf_text(self) -> str:
        """``metalab.conf``, included from postgresql.conf: where to listen, how to hash."""
        return (
            "# written by metalab on every start; edit .metalab.toml instead\n"
            f"listen_addresses = '{self.listen}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.layout.socket_dir}'\n"
            "password_encryption = 'scram-sha-256'\n"
        )

    def hba_text(self) -> str:
        """Socket logins only for the owner (private socket dir); TCP with a password, from loopback
        (or, on a compute node, from the cluster)."""
        return (
            "# written by metalab on every start\n"
            "local all all trust\n"
            f"host all all {self.clients} {self.auth_method}\n"
        )

    def setup_sql(self, password: Secret) -> str:
        """Create the role and database if missing; (re)set the password as a SCRAM verifier,
        so the plain password never reaches the server or its log."""
        user, db = quote_ident(self.user), quote_ident(self.database)
        verifier = quote_literal(scram_verifier(password.reveal()))
        return (
            f"SELECT 'CREATE ROLE {user} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = {quote_literal(self.user)}) \\gexec\n"
            f"ALTER ROLE {user} WITH LOGIN PASSWORD {verifier};\n"
            f"SELECT 'CREATE DATABASE {db} OWNER {user}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = {quote_literal(self.database)}) \\gexec\n"
        )


class RunningPostgres(NamedTuple):
    """A live server found through its ``postmaster.pid``."""

    pid: int
    start: float
    port: int
    data_dir: str  # its ``-D``: a process without it on its command line is not this server

    @property
    def command(self) -> tuple[str, ...]:
        return (f"-D {self.data_dir}",)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` string PostgreSQL stores for a password."""
    import secrets

    from .pgwire import scram_keys, scram_salted_password

    salt = salt if salt is not None else secrets.token_bytes(16)
    stored_key, server_key = scram_keys(scram_salted_password(password, salt, iterations))
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def find_bin_dir(configured: str | None, environ: Mapping[str, str]) -> Path:
    """The directory holding ``initdb``/``pg_ctl``: config, ``PATH``, ``pg_config``, then Debian's newest."""
    if configured:
        path = Path(configured).expanduser()
        if not (path / "initdb").is_file():
            raise ConfigError(f"[services.postgres] bin_dir = {configured!r} holds no initdb; {INSTALL_HINT}")
        return path
    import shutil

    on_path = shutil.which("initdb", path=environ.get("PATH"))
    if on_path:
        return Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config", path=environ.get("PATH"))
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidate = Path(done.stdout.strip())
        if done.returncode == 0 and (candidate / "initdb").is_file():
            return candidate
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: _version_key(p.parent.name),
    )
    if versions:
        return versions[-1]
    raise NotFoundError(f"PostgreSQL server binaries not found; {INSTALL_HINT}")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def choose_run_as(configured: str | None) -> str | None:
    """Which OS user runs the server: nobody else unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        if configured and configured != getpass.getuser():
            raise ConfigError(
                f"[services.postgres] run_as = {configured!r} needs root; remove it to run the server as yourself"
            )
        return None
    name = configured or "postgres"
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"PostgreSQL cannot run as root and there is no user {name!r}; "
            "set [services.postgres] run_as to an unprivileged user"
        ) from None
    if name == "root":
        raise ConfigError("[services.postgres] run_as = 'root' is refused by PostgreSQL; name an unprivileged user")
    return name


def remembered_port(layout: PostgresLayout) -> int | None:
    """The port written into ``metalab.conf`` by the previous start, if any."""
    try:
        text = (layout.data_dir / CONF_NAME).read_text()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None
    match = re.search(r"^port = (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


PGPASS_NAME = "postgres.pgpass"


def find_running(layout: PostgresLayout) -> RunningPostgres | None:
    """The server running on this data directory, from its ``postmaster.pid``, if alive."""
    try:
        lines = (layout.data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except (IndexError, ValueError):
        return None
    start = process_start(pid)
    running = RunningPostgres(pid=pid, start=start or 0.0, port=port, data_dir=str(layout.data_dir))
    return running if start is not None and alive(running) else None


def resolve_password(configured: Secret | None, layout: PostgresLayout, environ: Mapping[str, str], *, create: bool) -> Secret:
    """Config, then ``METALAB_POSTGRES_PASSWORD``, then the 0600 file beside the data dir
    (generated on first use, so a data directory keeps working across down/up)."""
    if configured:
        return configured
    if environ.get(PASSWORD_ENV_VAR):
        return Secret(environ[PASSWORD_ENV_VAR])
    try:
        return Secret(layout.password_file.read_text().strip())
    except FileNotFoundError:
        pass
    import secrets

    generated = Secret(secrets.token_urlsafe(24))
    if create:
        sync_password_file(layout, generated)
    return generated


def pgpass_text(password: Secret) -> str:
    """A libpq password file's line for any host, port, database and user: the file is used
    only where ``PGPASSFILE`` names it. ``:`` and ``\\`` are escaped as libpq reads them."""
    escaped = password.reveal().replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def sync_password_file(layout: PostgresLayout, password: Secret) -> None:
    """Keep the 0600 password file, and the libpq password file beside it, equal to the
    password in use (jobs and stores read the first; psql, psycopg and pandas the second)."""
    for path, text in ((layout.password_file, password.reveal() + "\n"), (layout.pgpass_file, pgpass_text(password))):
        try:
            if path.read_text() == text:
                continue
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def prepare_directories(plan: PostgresPlan) -> None:
    """Create the data, socket and log locations, owned by the server's OS user."""
    layout = plan.layout
    layout.services_dir.mkdir(parents=True, exist_ok=True)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    layout.log_file.touch(mode=0o600, exist_ok=True)
    if plan.run_as:
        # The services dir stays private to us but must be traversable by the server's user.
        os.chmod(layout.services_dir, 0o711)
        _give_to_owner(plan, layout.socket_dir)
        _check_reachable(layout.services_dir, plan.run_as)


def _give_to_owner(plan: PostgresPlan, path: Path) -> None:
    if plan.run_as:
        owner = pwd.getpwnam(plan.run_as)
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _check_reachable(path: Path, user: str) -> None:
    owner = pwd.getpwnam(user)
    done = subprocess.run(["test", "-x", str(path)], user=owner.pw_uid, group=owner.pw_gid, extra_groups=[], cwd="/")
    if done.returncode != 0:
        raise UsageError(
            f"{path} is not reachable by the OS user {user!r} that runs PostgreSQL (a parent directory "
            "is private); put file_root somewhere it can reach, or set [services.postgres] run_as"
        )


def write_config_files(plan: PostgresPlan) -> None:
    """(Re)write metalab.conf and pg_hba.conf so config changes apply at the next start."""
    data = plan.layout.data_dir
    main_conf = data / "postgresql.conf"
    include = f"include_if_exists = '{CONF_NAME}'"
    if include not in main_conf.read_text():
        with main_conf.open("a") as handle:
            handle.write(f"\n# metalab's settings\n{include}\n")
    _write_owned(data / CONF_NAME, plan.conf_text(), plan)
    _write_owned(data / "pg_hba.conf", plan.hba_text(), plan)


def _write_owned(path: Path, text: str, plan: PostgresPlan) -> None:
    path.write_text(text)
    _give_to_owner(plan, path)


def _as_owner(plan: PostgresPlan) -> dict[str, object]:
    """Popen arguments that run a child as the server's OS user (no runuser in between,
    so the pid we get is the server's own)."""
    if not plan.run_as:
        return {}
    owner = pwd.getpwnam(plan.run_as)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": owner.pw_dir, "USER": plan.run_as, "LC_ALL": "C.UTF-8"}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [], "env": env}


def run_checked(plan: PostgresPlan, argv: Sequence[str], *, what: str, stdin: str | None = None) -> None:
    """Run a PostgreSQL tool as the server's owner; on failure raise one line with its last message."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, cwd="/", **_as_owner(plan))
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {done.returncode}"
        raise PostgresError(f"{what} failed: {last}")


def initialize(plan: PostgresPlan) -> None:
    """initdb into a scratch directory, then rename it into place: an interrupted initdb
    never leaves a half-made data directory behind."""
    import shutil

    layout = plan.layout
    scratch = layout.data_dir.with_name(layout.data_dir.name + ".initdb")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    _give_to_owner(plan, scratch)
    try:
        run_checked(plan, plan.initdb_command(scratch), what="initdb")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if layout.data_dir.exists():
        layout.data_dir.rmdir()  # only an empty leftover can be here: initialized() was False
    os.rename(scratch, layout.data_dir)


def start_server(plan: PostgresPlan, *, timeout: float) -> RunningPostgres:
    """Start the postmaster detached (its own session, so Ctrl+C in this terminal spares it)
    and wait until it accepts connections.

    The process is known from the first instant, so a caller interrupted while waiting can stop it.
    """
    deadline = time.monotonic() + timeout
    _wait_for_previous_postmaster(plan.layout, deadline)
    while True:
        log = os.open(plan.layout.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                plan.server_command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                start_new_session=True, **_as_owner(plan),
            )
        finally:
            os.close(log)
        running = RunningPostgres(pid=proc.pid, start=process_start(proc.pid) or 0.0, port=plan.port,
                                  data_dir=str(plan.layout.data_dir))
        try:
            _wait_until_ready(plan, proc, deadline)
            return running
        except _ShmemStillInUse:
            # Backends of a server killed with -9 linger for a moment; try again once they are gone.
            time.sleep(0.2)
        except BaseException:
            stop(running, kill_after=5.0)
            raise


class _ShmemStillInUse(Exception):
    pass


def _wait_for_previous_postmaster(layout: PostgresLayout, deadline: float) -> None:
    """After a crash the old postmaster may linger as a zombie until init reaps it, and
    PostgreSQL refuses to start while its pid still exists: wait for it to vanish."""
    try:
        old_pid = int((layout.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    while time.monotonic() < deadline:
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # exists, owned by someone else
        if process_start(old_pid) is not None:
            return  # a live, unrelated process reuses the pid; PostgreSQL copes with that
        time.sleep(0.05)


def _wait_until_ready(plan: PostgresPlan, proc: subprocess.Popen, deadline: float) -> None:
    pid_file = plan.layout.data_dir / "postmaster.pid"
    delay = 0.002
    while True:
        if proc.poll() is not None:
            last = _last_log_line(plan.layout.log_file)
            lingering = ("pre-existing shared memory block" in last or "already exists" in last)
            if lingering and time.monotonic() < deadline:
                raise _ShmemStillInUse
            raise PostgresError(f"PostgreSQL exited during start-up: {last} (log: {plan.layout.log_file})")
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        # Line 1 is the pid, line 8 the postmaster's status ("ready" once it takes connections).
        if len(lines) >= 8 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
            return
        if time.monotonic() > deadline:
            raise PostgresError(f"PostgreSQL did not become ready in time (log: {plan.layout.log_file})")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _last_log_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def remove_socket_dir(layout: PostgresLayout) -> None:
    """The private socket directory outlives the server otherwise (the server removes only its socket)."""
    try:
        layout.socket_dir.rmdir()
    except OSError:
        pass  # not there, or a server (ours, restarted) still uses it


def stop(running: RunningPostgres, *, kill_after: float) -> bool:
    """Fast shutdown (SIGINT): committed data is safe; SIGKILL the group if it hangs."""
    return stop_process(running.pid, running.start, command=running.command, sig=signal.SIGINT,
                        kill_after=kill_after, group=True)


def alive(running: RunningPostgres) -> bool:
    return is_alive(running.pid, running.start, running.command)
