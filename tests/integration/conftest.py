"""Fixtures for integration tests: real services, started with their own tools (not metalab's).

They are independent oracles: a bug in metalab's provisioning cannot hide a bug in the code
under test. A missing service is a failure, never a skip: CI must run these tests.

The second half provides throwaway metalab projects (``project``, ``make_project``) whose
services the tests start with the installed ``metalab`` command and inspect from outside
(/proc, psycopg, HTTP); their teardown stops and removes everything a test left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_support import (
    CLUSTER_ENV,
    CLUSTER_HINT,
    INSIDE_ENV,
    Cluster,
    ClusterInfo,
    CommandResult,
    Proc,
    all_processes,
    project_factory,
)

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
        )
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
            )
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
        )
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


# --------------------------------------------------------------------------------------------
# Throwaway metalab projects, driven through the installed `metalab` command
# (tests/integration/test_services_local.py).

METALAB = Path(sys.executable).with_name("metalab")
INV = Path(sys.executable).with_name("inv")


def proc_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def all_text(exc: BaseException) -> str:
    """The exception's str and repr, and those of everything chained to it."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def pid_alive(pid: int, start: int | None = None) -> bool:
    now = proc_start(pid)
    return now is not None and (start is None or now == start)


@dataclasses.dataclass
class Project:
    """A project folder under /tmp (reachable by the `postgres` OS user) with a .metalab.toml."""

    root: Path
    atlas_port: int
    home: Path
    run_as: str | None = None  # run metalab as this OS user (through runuser) instead of ourselves
    program: Path = METALAB  # the `metalab` command to run

    # -- files ---------------------------------------------------------------------------

    @property
    def services_dir(self) -> Path:
        return self.root / "runs" / "services"

    @property
    def bundle_path(self) -> Path:
        return self.services_dir / "bundle.json"

    @property
    def data_dir(self) -> Path:
        return self.services_dir / "postgres"

    @property
    def password_file(self) -> Path:
        return self.services_dir / "postgres.password"

    @property
    def socket_dir(self) -> Path:
        """metalab's private socket directory for this data dir (see PostgresLayout.socket_dir)."""
        return self.socket_dir_for(self.data_dir)

    @staticmethod
    def socket_dir_for(data_dir: Path) -> Path:
        import hashlib

        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"metalab-pg-{digest}"

    def write_config(
        self, *, postgres: bool = True, atlas: bool = True, atlas_port: int | None = None, postgres_extra: str = "",
        file_root: str | None = "./runs", extra: str = "",
    ) -> None:
        if atlas_port is not None:
            self.atlas_port = atlas_port
        text = '[project]\nname = "it-project"\ndefault_env = "local"\n\n'
        if postgres:
            text += f"[services.postgres]\n{postgres_extra}\n"
        if atlas:
            text += f"[services.atlas]\nport = {self.atlas_port}\n\n"
        text += '[environments.local]\ntype = "local"\n'
        if file_root is not None:
            text += f'file_root = "{file_root}"\n'
        text += extra
        (self.root / ".metalab.toml").write_text(text)

    def bundle(self) -> dict:
        return json.loads(self.bundle_path.read_text())

    def password(self) -> str:
        return self.password_file.read_text().strip()

    # -- running metalab -----------------------------------------------------------------

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METALAB_", "PG", "NO_COLOR"))}
        env["HOME"] = str(self.home)
        env.update(extra or {})
        return env

    def argv(self, program: Path, args: tuple[str, ...]) -> list[str]:
        argv = [str(program), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, program: Path | None = None,
        cwd: Path | None = None,
    ) -> CommandResult:
        argv = self.argv(program or self.program, args)
        done = subprocess.run(
            argv, cwd=cwd or self.root, env=self.environ(env), capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        return CommandResult(argv, done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.argv(self.program, args), cwd=self.root, env=self.environ(env), **kwargs)

    # -- the services, seen from outside ---------------------------------------------------

    def connect(self, **overrides):
        """A psycopg connection to the bundle's database, with the password from its file."""
        import psycopg

        pg = self.bundle()["services"]["postgres"]
        params = {"host": "127.0.0.1", "port": pg["port"], "user": pg["user"], "dbname": pg["database"],
                  "password": self.password(), "connect_timeout": 5, "autocommit": True}
        params.update(overrides)
        return psycopg.connect(**params)

    def http_get(self, path: str, port: int | None = None) -> tuple[int, str, str]:
        """(status, content type, body) of GET http://127.0.0.1:<atlas port><path>."""
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{port or self.atlas_port}{path}"
        try:
            with opener.open(url, timeout=10) as response:
                return response.status, response.headers.get("content-type", ""), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("content-type", ""), error.read().decode()

    def _mine(self, proc: Proc) -> bool:
        root = str(self.root)
        if root in proc.cmdline or proc.cwd == root or proc.cwd.startswith(root + "/"):
            return True
        return "metalab.atlas" in proc.cmdline and proc.argv[-2:] == ("--port", str(self.atlas_port))

    def processes(self) -> list[Proc]:
        """Every process of this project: servers, Atlas, initdb/pg_ctl, metalab itself."""
        return [proc for proc in all_processes() if proc.pid != os.getpid() and self._mine(proc)]

    def postmasters(self) -> list[Proc]:
        """PostgreSQL servers running on this project's data directory."""
        return [
            proc for proc in all_processes()
            if proc.argv and proc.argv[0].endswith("/postgres") and "-D" in proc.argv
            and proc.argv[proc.argv.index("-D") + 1 :][:1] == (str(self.data_dir),)
        ]

    def atlases(self) -> list[Proc]:
        """Atlas servers of this project (python -m metalab.atlas started from its folder, or on its port)."""
        return [proc for proc in self.processes() if "metalab.atlas" in proc.argv]

    def postmaster_pid_alive(self) -> bool:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            return False
        return pid_alive(pid)

    # -- cleaning up -----------------------------------------------------------------------

    def kill_leftovers(self) -> None:
        """Safety net: SIGKILL every process of this project (servers by process group)."""
        import signal

        for _ in range(50):
            left = self.processes()
            if not left:
                return
            for proc in left:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            time.sleep(0.1)

    def teardown(self) -> None:
        try:
            if (self.root / ".metalab.toml").exists():
                if self.run("services", "down", "--env", "local", timeout=60).code == 2:
                    self.write_config()  # the test left a config that `down` rejects
                    self.run("services", "down", "--env", "local", timeout=60)
        except Exception:  # the safety net below still runs
            pass
        finally:
            self.kill_leftovers()
            shutil.rmtree(self.socket_dir, ignore_errors=True)  # and the one of a data dir under HOME:
            shutil.rmtree(self.socket_dir_for(self.home / ".metalab" / "services" / "local" / "postgres"), ignore_errors=True)
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def metalab_project(*, run_as: str | None = None) -> Iterator[Project]:
    """A fresh project folder (Postgres + Atlas declared, file_root ./runs); everything stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="metalab-it-", dir="/tmp"))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir()
    project = Project(root=root, atlas_port=_free_port(), home=home, run_as=run_as)
    while project.atlas_port == 8000:
        project.atlas_port = _free_port()
    project.write_config()
    try:
        yield project
    finally:
        project.teardown()


@pytest.fixture
def make_project() -> Iterator:
    """``make_project()`` → a new :class:`Project`; all of them are torn down after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(metalab_project(**kwargs))


@pytest.fixture
def project(make_project) -> Project:
    return make_project()


@pytest.fixture(scope="module")
def module_project() -> Iterator[Project]:
    """One project shared by a test module's read-only checks."""
    with metalab_project() as project:
        yield project


# --------------------------------------------------------------------------------------------
# The multi-host test cluster (scripts/cluster.sh; scripts/test.sh starts it). Missing is a
# failure, never a skip. Tests drive its hosts from here (cluster_support.Host); a test marked
# ``on_host("ws")`` runs inside that host instead, in a pytest of its own (see below).

@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The running cluster; fails (never skips) when it is not up."""
    path = os.environ.get(CLUSTER_ENV)
    if not path or not Path(path).is_file():
        pytest.fail(f"{CLUSTER_ENV} does not name the cluster's cluster.json; {CLUSTER_HINT}", pytrace=False)
    info = ClusterInfo.load(Path(path))
    dead = [name for name, host in info.hosts.items() if not pid_alive(host.holder)]
    if dead:
        pytest.fail(f"cluster hosts {', '.join(dead)} are down; {CLUSTER_HINT}", pytrace=False)
    found = Cluster(info)
    if os.environ.get(INSIDE_ENV) is None:
        nodes = found.login.run(["sinfo", "-h", "-N", "-p", info.partition, "-o", "%N %T"], timeout=30)
        if nodes.code != 0 or len(nodes.out.split()) != 2 * len(info.nodes):
            pytest.fail(f"sinfo on login failed ({nodes.err.strip() or nodes.out.strip()}); {CLUSTER_HINT}", pytrace=False)
    return found


@pytest.fixture
def make_cluster_project(cluster):
    """``make_cluster_project("login" | "ws")`` → a new project; all torn down after the test."""
    yield from project_factory(cluster)


# -- tests that run inside a host ---------------------------------------------------------------
# ``@pytest.mark.on_host("ws")``: the test runs in a pytest inside that host's namespaces (to use
# metalab's Python API where the researcher is). All such tests of a host run in one inner
# pytest, started at the first of them; each is then reported here with its inner outcome.

_inner_results: dict[str, dict[str, tuple[str, str]]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "on_host(name): run this test inside the named cluster host")


def _wanted_host(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("on_host")
    if marker is None:
        return None
    host = marker.args[0]
    return None if os.environ.get(INSIDE_ENV) == host else host


def _run_inside(session: pytest.Session, host: str) -> dict[str, tuple[str, str]]:
    import xml.etree.ElementTree as ET

    ids = [item.nodeid for item in session.items if _wanted_host(item) == host]
    info = ClusterInfo.load(Path(os.environ[CLUSTER_ENV]))
    report = info.state_dir / "hosts" / host / "tmp" / f"inner-{os.getpid()}.xml"
    inside = Cluster(info).host(host)
    done = inside.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml=/tmp/{report.name}",
         "--rootdir", str(session.config.rootpath), *ids],
        cwd=session.config.rootpath, env={CLUSTER_ENV: os.environ[CLUSTER_ENV], INSIDE_ENV: host,
                                          **({"CI": os.environ["CI"]} if "CI" in os.environ else {})},
        timeout=900,
    )
    results: dict[str, tuple[str, str]] = {}
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            nodeid = f"{module}.py::{case.get('name')}"
            outcome, text = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome, text = "failed", (child.get("message", "") + "\n" + (child.text or ""))
                elif child.tag == "skipped":
                    outcome, text = "skipped", child.get("message", "")
            results[nodeid] = (outcome, text)
        report.unlink()
    for nodeid in ids:
        results.setdefault(nodeid, ("failed", f"the inner pytest on {host} did not report it:\n{done}"))
    return results


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    host = _wanted_host(item)
    if host is None:
        return None
    from _pytest.reports import TestReport

    if host not in _inner_results:
        _inner_results[host] = _run_inside(item.session, host)
    outcome, text = _inner_results[host][item.nodeid]
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for when in ("setup", "call", "teardown"):
        result, longrepr = (outcome, f"[inside {host}] {text}") if when == "call" else ("passed", None)
        if result == "skipped":
            longrepr = (str(item.path), 0, f"[inside {host}] {text}")
        report = TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, result, longrepr, when)
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


# The Atlas tests' module fixture (a real Atlas over an index written by metalab.run()).
from atlas_support import site  # noqa: E402, F401
