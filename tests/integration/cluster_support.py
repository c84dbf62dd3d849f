"""The multi-host test cluster (scripts/cluster.sh) as the tests drive it.

The pytest process stays in the root namespace and never sends a packet to the cluster's
addresses: every command meant for a host runs *on* it, entering its namespaces with
``nsenter`` (:class:`Host`). A :class:`ClusterProject` is a researcher's project either on the
login node (sbatch runs there) or on the workstation ``ws``, which reaches only the gateway's
sshd and cannot see the shared filesystem where the cluster's ``file_root`` lives.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

CLUSTER_ENV = "METALAB_TEST_CLUSTER"  # the cluster.json that `scripts/cluster.sh start` writes
INSIDE_ENV = "METALAB_TEST_HOST"  # set for a pytest run inside a host (see conftest's on_host)
CLUSTER_HINT = 'run: bash scripts/cluster.sh start && eval "$(bash scripts/cluster.sh env)"'
METALAB = str(Path(sys.executable).with_name("metalab"))
ENV = "slurm"  # every cluster project's profile


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """Exit code and output of one command on a host."""

    argv: list[str]
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:  # shown by assertion messages
        return f"$ {' '.join(self.argv)}\n[exit {self.code}]\n--- stdout\n{self.out}--- stderr\n{self.err}"


@dataclasses.dataclass(frozen=True)
class HostInfo:
    name: str
    address: str
    holder: int  # the pid whose namespaces are the host


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What scripts/cluster.sh wrote to cluster.json."""

    state_dir: Path
    hosts: dict[str, HostInfo]
    gateway: str
    gateway_address_from_ws: str
    gateway_user: str
    nodes: tuple[str, ...]
    partition: str
    shared: Path  # the cluster's shared filesystem; hidden on ws
    workstation: Path  # the researcher's folders; hidden on the cluster
    ws_home: Path  # ws's /root, as the root namespace sees it
    ws_home_on_ws: Path
    max_array_size: int
    slurm_log_dir: Path

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        data = json.loads(path.read_text())
        hosts = {name: HostInfo(name=name, **entry) for name, entry in data.pop("hosts").items()}
        paths = {key: Path(data[key]) for key in ("state_dir", "shared", "workstation", "ws_home", "ws_home_on_ws",
                                                   "slurm_log_dir")}
        return cls(**{**data, **paths, "hosts": hosts, "nodes": tuple(data["nodes"])})

    def address(self, host: str) -> str:
        return self.hosts[host].address


def clean_environ(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without metalab's, libpq's or ssh-agent settings; HOME as given."""
    drop = ("METALAB_", "PG", "NO_COLOR", "SSH_AUTH_SOCK", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HOME"] = home
    env.update(extra or {})
    return env


class Host:
    """One host of the cluster: commands run in its namespaces (``nsenter`` into its holder)."""

    def __init__(self, info: HostInfo, *, home: str) -> None:
        self.name = info.name
        self.address = info.address
        self.holder = info.holder
        self.home = home

    def __repr__(self) -> str:
        return f"Host({self.name})"

    def command(self, argv: Sequence[Any], cwd: str | Path | None = None) -> list[str]:
        # Without a pid namespace nsenter execs the program itself: its pid is the Popen's.
        return ["nsenter", "-t", str(self.holder), "-n", "-u", "-m", f"--wd={cwd or '/'}", "--", *map(str, argv)]

    def run(
        self, argv: Sequence[Any], *, cwd: str | Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 120, home: str | None = None,
    ) -> CommandResult:
        command = self.command(argv, cwd)
        done = subprocess.run(
            command, env=clean_environ(home or self.home, env), input=input, capture_output=True, text=True,
            timeout=timeout, check=False, stdin=None if input is not None else subprocess.DEVNULL,
        )
        return CommandResult([str(a) for a in argv], done.returncode, done.stdout, done.stderr)

    def popen(
        self, argv: Sequence[Any], *, cwd: str | Path | None = None, env: dict[str, str] | None = None,
        home: str | None = None, **kwargs: Any,
    ) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.command(argv, cwd), env=clean_environ(home or self.home, env), **kwargs)

    def python(self, code: str, *args: Any, python: str = sys.executable, timeout: float = 60,
               env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Any:
        """Run ``code`` with ``python`` here; its last stdout line, as JSON."""
        done = self.run([python, "-c", code, *args], timeout=timeout, env=env, cwd=cwd)
        assert done.code == 0, f"python on {self.name} failed:\n{done}"
        return json.loads(done.out.strip().splitlines()[-1])

    def http_get(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str]:
        """(status, body) of GET ``url`` from this host; status 0 when nothing answers."""
        return tuple(self.python(HTTP_GET, url, json.dumps(headers or {}), str(timeout), timeout=timeout + 20))

    def port_is_free(self, port: int, host: str = "127.0.0.1") -> bool:
        return self.python(PORT_FREE, host, str(port))

    def listen(self, port: int, host: str = "0.0.0.0") -> subprocess.Popen:
        """A process that holds ``host:port`` here until it is killed."""
        proc = self.popen([sys.executable, "-c", LISTEN, host, str(port)])
        assert proc.stdout.readline().strip() == "listening", proc.communicate()
        return proc


HTTP_GET = """
import http.cookiejar, json, sys, urllib.error, urllib.request
url, headers, timeout = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
# as a browser: redirects followed with the cookies they set
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                     urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
try:
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
except OSError as e:
    print(json.dumps([0, str(e)]))
"""

PORT_FREE = """
import json, socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(sys.argv[2]))); print("true")
    except OSError:
        print("false")
"""

LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("listening", flush=True)
time.sleep(3600)
"""

PG_QUERY = """
import json, sys, psycopg
host, port, user, db, password_file, sql = sys.argv[1:7]
password = open(password_file).read().strip()
with psycopg.connect(host=host, port=int(port), user=user, dbname=db, password=password, connect_timeout=10,
                     autocommit=True) as conn:
    rows = conn.execute(sql).fetchall() if sql.lstrip().upper().startswith(("SELECT", "WITH")) else conn.execute(sql) and []
print(json.dumps([list(row) for row in rows], default=str))
"""


# -- processes: one pid space for this machine and every host of the cluster


@dataclasses.dataclass(frozen=True)
class Proc:
    """One process seen in /proc."""

    pid: int
    argv: tuple[str, ...]
    cwd: str
    uid: int

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)


def all_processes() -> list[Proc]:
    """Every live process on the machine (zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if re.search(r"^State:\s+[ZX]", status, re.MULTILINE):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
        argv = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        found.append(Proc(pid=pid, argv=argv, cwd=cwd, uid=uid))
    return found


class Cluster:
    """The running cluster: its hosts, and SLURM as seen from the login node."""

    def __init__(self, info: ClusterInfo) -> None:
        self.info = info
        self.login = Host(info.hosts["login"], home="/root")
        self.ws = Host(info.hosts["ws"], home=str(info.ws_home_on_ws))
        self.nodes = {name: Host(info.hosts[name], home="/root") for name in info.nodes}

    def host(self, name: str) -> Host:
        return {"login": self.login, "ws": self.ws, **self.nodes}[name]

    def squeue(self, *args: str) -> list[str]:
        done = self.login.run(["squeue", "-h", *args])
        assert done.code == 0, done
        return [line for line in done.out.splitlines() if line.strip()]

    def jobs_named(self, name: str) -> list[str]:
        """``job id|state|node`` of the live jobs called ``name``."""
        return self.squeue("--name", name, "-o", "%i|%T|%N")

    def scancel(self, *args: str) -> None:
        self.login.run(["scancel", *args])

    def node_of(self, address: str) -> str:
        return next(name for name in self.info.nodes if self.info.address(name) == address)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def gateway_python() -> str:
    """The interpreter the gateway user runs: the unprivileged venv scripts/test.sh makes (no numpy)."""
    venv = os.environ.get("METALAB_UNPRIVILEGED_VENV", "")
    if not venv or not Path(venv, "bin", "python").exists():
        raise AssertionError("METALAB_UNPRIVILEGED_VENV must name a venv the gateway user can run (scripts/test.sh makes one)")
    return f"{venv}/bin/python"


@dataclasses.dataclass
class ClusterProject:
    """A researcher's project with a ``slurm`` profile, on the login node or on the workstation."""

    cluster: Cluster
    name: str
    side: str  # "login" or "ws"
    root: Path  # holds .metalab.toml (the same path on its host and here)
    file_root: Path  # on the shared filesystem
    atlas_port: int
    home: str  # HOME for metalab on its host

    @property
    def host(self) -> Host:
        return self.cluster.host(self.side)

    @property
    def gateway(self) -> str | None:
        return self.cluster.info.gateway if self.side == "ws" else None

    @property
    def python(self) -> str:
        """What the jobs run: as root from the login node, this interpreter; as the gateway user, its venv."""
        return gateway_python() if self.side == "ws" else sys.executable

    @property
    def services_job(self) -> str:
        return f"metalab-services-{self.name}-{ENV}"

    def write_config(
        self, *, atlas: bool = True, services: bool = True, partition: str | None = None, executor: str = "",
        postgres: str = "", services_resources: str = "", local: str = "",
    ) -> None:
        text = f'[project]\nname = "{self.name}"\ndefault_env = "{ENV}"\n\n'
        if services:
            text += f"[services.postgres]\n{postgres}\n"
        if services and atlas:
            text += f"[services.atlas]\nport = {self.atlas_port}\n\n"
        text += f'[environments.{ENV}]\ntype = "slurm"\n'
        if self.gateway:
            text += f'gateway = "{self.gateway}"\n'
        text += f'file_root = "{self.file_root}"\npython = "{self.python}"\n\n'
        text += (f'[environments.{ENV}.services]\npartition = "{partition or self.cluster.info.partition}"\n'
                 f'time = "0:30:00"\nmemory = "512M"\n{services_resources}')
        if executor:
            text += f"\n[environments.{ENV}.executor]\n{executor}"
        (self.root / ".metalab.toml").write_text(text)
        if local:
            (self.root / ".metalab.local.toml").write_text(local)

    # -- running things where the researcher is -------------------------------------------

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> CommandResult:
        return self.host.run([METALAB, *args], cwd=self.root, env=env, timeout=timeout, home=self.home)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
        return self.host.popen([METALAB, *args], cwd=self.root, env=env, home=self.home, **kwargs)

    def python_script(self, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
                      cwd: Path | None = None) -> CommandResult:
        """``python SCRIPT ARGS`` in the project folder (or ``cwd``) on its host."""
        return self.host.run([sys.executable, script, *args], cwd=cwd or self.root, env=env, timeout=timeout,
                             home=self.home)

    # -- what it left ---------------------------------------------------------------------

    @property
    def cluster_services_dir(self) -> Path:
        return self.file_root / "services"

    @property
    def cluster_bundle_path(self) -> Path:
        return self.cluster_services_dir / "bundle.json"

    @property
    def local_services_dir(self) -> Path:
        """Where metalab on the researcher's side keeps the bundle (as the root namespace sees it)."""
        if self.side == "ws":
            return self.cluster.info.ws_home / ".metalab" / "clusters" / self.name / ENV
        return self.cluster_services_dir

    @property
    def bundle_path(self) -> Path:
        return self.local_services_dir / "bundle.json"

    def bundle(self) -> dict[str, Any]:
        return json.loads(self.bundle_path.read_text())

    def cluster_bundle(self) -> dict[str, Any]:
        return json.loads(self.cluster_bundle_path.read_text())

    def password(self) -> str:
        return (self.cluster_services_dir / "postgres.password").read_text().strip()

    def services_jobs(self) -> list[str]:
        return self.cluster.jobs_named(self.services_job)

    def sql(self, query: str, *, host: str = "login") -> list[list[Any]]:
        """``query`` against the services' PostgreSQL, from ``host`` (the login node reaches the node)."""
        pg = self.cluster_bundle()["services"]["postgres"]
        password_file = self.cluster_services_dir / "postgres.password"
        return self.cluster.host(host).python(PG_QUERY, pg["host"], str(pg["port"]), pg["user"], pg["database"],
                                              str(password_file), query)

    # -- cleaning up ----------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Processes started for this project (their cwd or command line is in its folders)."""
        roots = (str(self.root), str(self.file_root))
        return [proc.pid for proc in all_processes() if proc.pid != os.getpid() and any(
            root in proc.cmdline or proc.cwd == root or proc.cwd.startswith(root + "/") for root in roots)]

    def teardown(self) -> None:
        try:
            if (self.root / ".metalab.toml").exists():
                self.run("services", "down", "--env", ENV, timeout=120)
        except Exception:  # the safety nets below still run
            pass
        finally:
            for line in self.cluster.squeue("-o", "%A|%j"):
                job, name = line.split("|", 1)
                if name == self.services_job or name.startswith(f"metalab-services-{self.name}-"):
                    self.cluster.scancel(job)
            for _ in range(50):
                left = self.processes()
                if not left:
                    break
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                time.sleep(0.1)
            shutil.rmtree(self.root, ignore_errors=True)
            shutil.rmtree(self.file_root.parent if self.side == "ws" else self.file_root, ignore_errors=True)
            if self.side == "ws":
                shutil.rmtree(self.cluster.info.ws_home / ".metalab" / "clusters" / self.name, ignore_errors=True)


def new_project(cluster: Cluster, side: str, *, name: str | None = None) -> ClusterProject:
    """A fresh project folder: on the shared filesystem for the login node, on the workstation's own
    disk for ws (its file_root then on the shared filesystem, owned by the gateway user)."""
    info = cluster.info
    name = name or f"it-{secrets.token_hex(3)}"
    if side == "login":
        root = info.shared / name
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        file_root = root / "runs"
        home = root / "home"
        home.mkdir()
        home_text = str(home)
    else:
        root = info.workstation / name
        root.mkdir(mode=0o755)
        cluster_side = info.shared / name
        cluster_side.mkdir(mode=0o755)
        cluster_side.chmod(0o755)
        file_root = cluster_side / "runs"
        file_root.mkdir()
        user = pwd.getpwnam(info.gateway_user)
        os.chown(file_root, user.pw_uid, user.pw_gid)
        home_text = str(info.ws_home_on_ws)
    return ClusterProject(cluster=cluster, name=name, side=side, root=root, file_root=file_root,
                          atlas_port=18000 + secrets.randbelow(1000), home=home_text)


def project_factory(cluster: Cluster) -> Iterator[Callable[..., ClusterProject]]:
    made: list[ClusterProject] = []

    def make(side: str, **kwargs: Any) -> ClusterProject:
        project = new_project(cluster, side, **kwargs)
        made.append(project)
        return project

    try:
        yield make
    finally:
        for project in reversed(made):
            project.teardown()
