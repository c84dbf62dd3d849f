"""``metalab services`` for the ``local`` environment, against the real PostgreSQL on this machine.

Every test runs the installed ``metalab`` command (or ``inv``) as a subprocess in a throwaway
project folder under /tmp (see ``conftest.metalab_project``) and checks the outcome from outside:
psycopg logins, HTTP requests to Atlas, /proc, and the files metalab leaves behind.
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from cluster_support import wait_until
from conftest import pid_alive, proc_start

if TYPE_CHECKING:
    from conftest import CommandResult, Project

pytestmark = pytest.mark.integration

UNPRIVILEGED_USER = "metalabtest"
METALAB = Path(sys.executable).with_name("metalab")
INV = Path(sys.executable).with_name("inv")


# ------------------------------------------------------------------------------------ helpers


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive after {timeout} s"
        time.sleep(0.02)


def owner_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))


def ok(result: CommandResult) -> CommandResult:
    assert result.code == 0, str(result)
    return result


def up(project: Project, *args: str, **kwargs) -> CommandResult:
    return ok(project.run("services", "up", *args, **kwargs))


def status_json(project: Project) -> tuple[int, dict]:
    result = project.run("services", "status", "--json")
    assert "Traceback" not in result.err, str(result)
    return result.code, json.loads(result.out)


def service_pids(project: Project) -> dict[str, tuple[int, int]]:
    """name → (pid, start time) of the services the bundle records, all checked to be alive."""
    found = {}
    for name, entry in project.bundle()["services"].items():
        start = proc_start(entry["pid"])
        assert start is not None, f"{name} pid {entry['pid']} from the bundle is not running"
        found[name] = (entry["pid"], start)
    return found


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def assert_nothing_running(project: Project) -> None:
    left = [f"{p.pid}: {p.cmdline}" for p in project.processes()]
    assert not left, "processes of the project still running:\n" + "\n".join(left)
    assert not project.postmaster_pid_alive(), "postmaster.pid names a live process"


def one_line_error(result: CommandResult) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{result}"
    assert "Traceback" not in result.text, str(result)
    return lines[0]


def files_under(root: Path) -> dict[str, tuple[int, int, int]]:
    """relative path → (mode, size, mtime_ns) of every file and directory below ``root``."""
    snapshot = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            st = path.lstat()
            snapshot[str(path.relative_to(root))] = (st.st_mode, st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                                                     st.st_mtime_ns)
    return snapshot


# ------------------------------------------------- one provisioned project for read-only checks


@pytest.fixture(scope="module")
def running(module_project: Project) -> tuple[Project, CommandResult]:
    """A project brought up once; the tests using it only read (a reusing `up` included)."""
    result = module_project.run("services", "up")
    assert result.code == 0, str(result)
    return module_project, result


def test_up_prints_the_atlas_url_and_the_store_locator_on_stdout(running) -> None:
    project, result = running
    bundle = project.bundle()
    assert f"Atlas: http://127.0.0.1:{project.atlas_port}" in result.out.splitlines()
    assert f"store: {bundle['store_locator']}" in result.out.splitlines()
    # progress goes to stderr: one short line per step, saying where and how long it took
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    lines = result.err.splitlines()
    assert lines and all(len(line) < 200 for line in lines), str(result)
    duration = re.compile(r"\(\d+(\.\d+)? s\)")
    assert any(f"127.0.0.1:{pg['port']}" in line and duration.search(line) for line in lines), str(result)
    assert any(atlas["url"] in line and duration.search(line) for line in lines), str(result)


def test_up_gives_a_database_that_accepts_the_bundled_login(running) -> None:
    project, _ = running
    pg = project.bundle()["services"]["postgres"]
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        user, database, version = conn.execute(
            "SELECT current_user, current_database(), current_setting('server_version_num')::int"
        ).fetchone()
        assert (user, database) == (pg["user"], pg["database"])
        assert version >= 150000
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
        # the app role can create tables in its database
        conn.execute("CREATE TABLE IF NOT EXISTS readonly_check (x int)")
        conn.execute("DROP TABLE readonly_check")
    with pytest.raises(psycopg.OperationalError):
        project.connect(password="definitely-not-the-password").close()


def test_the_server_listens_on_loopback_only_with_a_private_socket_and_scram(running) -> None:
    project, _ = running
    # postmaster.pid: line 5 is the first socket directory, line 6 the first listen address
    pid_lines = (project.data_dir / "postmaster.pid").read_text().splitlines()
    socket_dir, listen = Path(pid_lines[4]), pid_lines[5].strip()
    assert listen == "127.0.0.1"
    mode = stat.S_IMODE(socket_dir.stat().st_mode)
    assert mode & 0o077 == 0, f"socket directory {socket_dir} is not private: {oct(mode)}"
    rules = [line.split() for line in (project.data_dir / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    host_rules = [rule for rule in rules if rule[0].startswith("host")]
    assert host_rules, rules
    for rule in host_rules:
        assert rule[3] in ("127.0.0.1/32", "::1/128") and rule[4] == "scram-sha-256", rule


def test_as_root_the_server_runs_as_postgres_and_up_says_so(running) -> None:
    """PostgreSQL refuses root: metalab runs it as `postgres` and says so (ARCHITECTURE: running as root)."""
    project, result = running
    [postmaster] = project.postmasters()
    if os.geteuid() != 0:
        assert postmaster.uid == os.geteuid()
        return
    postgres_uid = pwd.getpwnam("postgres").pw_uid
    assert postmaster.uid == postgres_uid
    assert project.data_dir.stat().st_uid == postgres_uid
    said = [line for line in result.err.splitlines() if re.search(r"\b(as|user)\s+'?postgres'?\b", line, re.I)]
    assert said, f"`up` as root does not say that PostgreSQL runs as the OS user postgres:\n{result.err}"


def test_up_starts_a_live_atlas(running) -> None:
    project, _ = running
    code, ctype, body = project.http_get("/api/health")
    assert code == 200, body
    assert ctype.startswith("application/json")
    health = json.loads(body)
    assert isinstance(health, dict)
    assert project.password() not in body

    code, ctype, body = project.http_get("/api/experiments")
    assert (code, json.loads(body)) == (200, [])
    assert ctype.startswith("application/json")

    code, ctype, body = project.http_get("/")
    assert code == 200
    assert ctype.startswith("text/html")
    assert "<html" in body.lower()
    assert project.password() not in body


def test_bundle_is_private_and_has_the_documented_fields(running) -> None:
    project, _ = running
    mode = stat.S_IMODE(project.bundle_path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    bundle = project.bundle()
    assert bundle["schema_version"] == 1
    assert bundle["project"] == "it-project"
    assert bundle["environment"] == "local"
    assert bundle["type"] == "local"
    created = datetime.fromisoformat(bundle["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs((datetime.now(created.tzinfo) - created).total_seconds()) < 600
    assert bundle["host"] == socket.gethostname()
    assert set(bundle["services"]) == {"postgres", "atlas"}
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    assert pg["host"] == "127.0.0.1"
    assert isinstance(pg["port"], int) and isinstance(pg["pid"], int)
    assert (pg["database"], pg["user"]) == ("metalab", "metalab")
    assert atlas["host"] == "127.0.0.1"
    assert atlas["port"] == project.atlas_port
    assert isinstance(atlas["pid"], int)
    assert atlas["url"] == f"http://127.0.0.1:{project.atlas_port}"
    locator = bundle["store_locator"]
    assert locator.startswith("postgresql://")
    assert f"127.0.0.1:{pg['port']}/metalab" in locator
    assert f"file_root={project.root / 'runs'}" in locator
    assert bundle["tunnel"] is None
    # the recorded pids are the processes actually serving
    [postmaster] = project.postmasters()
    [atlas_proc] = project.atlases()
    assert (pg["pid"], atlas["pid"]) == (postmaster.pid, atlas_proc.pid)


def test_status_reports_both_services_running(running) -> None:
    project, _ = running
    bundle = project.bundle()
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    result = ok(project.run("services", "status"))
    pg_line = next(line for line in result.out.splitlines() if "postgres" in line)
    atlas_line = next(line for line in result.out.splitlines() if "atlas" in line)
    for line, entry in ((pg_line, pg), (atlas_line, atlas)):
        assert "running" in line and f"127.0.0.1:{entry['port']}" in line and str(entry["pid"]) in line, result.out
        assert re.search(r"\bup \d", line), f"no uptime in: {line}"
    assert atlas["url"] in atlas_line

    code, report = status_json(project)
    assert code == 0
    assert report["environment"] == "local"
    assert report["bundle"] == str(project.bundle_path)
    assert report["healthy"] is True
    assert report["orphans"] == [] and report["problem"] is None
    by_name = {s["name"]: s for s in report["services"]}
    assert set(by_name) == {"postgres", "atlas"}
    for name, entry in (("postgres", pg), ("atlas", atlas)):
        s = by_name[name]
        assert (s["state"], s["host"], s["port"], s["pid"]) == ("running", "127.0.0.1", entry["port"], entry["pid"])
        assert isinstance(s["uptime"], (int, float)) and s["uptime"] >= 0
    assert by_name["atlas"]["url"] == atlas["url"]


def test_second_up_reuses_the_running_services(running) -> None:
    project, _ = running
    before = project.bundle()
    pids = service_pids(project)
    result = up(project)
    assert "reusing" in result.err, str(result)
    assert service_pids(project) == pids
    assert project.bundle() == before
    assert len(project.postmasters()) == 1 and len(project.atlases()) == 1
    assert f"store: {before['store_locator']}" in result.out


def test_commands_from_a_subdirectory_use_the_project_config_and_bundle(running) -> None:
    project, _ = running
    subdir = project.root / "analysis" / "notebooks"
    subdir.mkdir(parents=True, exist_ok=True)
    result = ok(project.run("services", "status", "--json", cwd=subdir))
    assert json.loads(result.out)["bundle"] == str(project.bundle_path)  # file_root resolved against .metalab.toml
    result = up(project, cwd=subdir)
    assert "reusing" in result.err, str(result)
    assert not (subdir / "runs").exists()


def test_up_with_tunnel_and_tunnel_are_a_one_line_no_op_for_local(running) -> None:
    project, _ = running
    pids = service_pids(project)
    result = up(project, "--tunnel")
    assert "tunnel" in result.out, str(result)
    assert service_pids(project) == pids
    result = ok(project.run("tunnel"))
    assert len(result.out.strip().splitlines()) == 1 and "tunnel" in result.out, str(result)


def test_discover_finds_the_bundle_walking_up_or_through_the_config(running) -> None:
    project, _ = running
    locator = project.bundle()["store_locator"]
    script = (
        "import os, pathlib; from metalab.bundle import discover\n"
        "print(discover(pathlib.Path.cwd(), os.environ).bundle.store_locator)\n"
    )
    experiment_dir = project.root / "runs" / "exp-1" / "run-0"
    experiment_dir.mkdir(parents=True, exist_ok=True)
    for cwd in (experiment_dir, project.root):  # walking up to runs/services; the profile's bundle path
        done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=project.environ(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == locator

    with tempfile.TemporaryDirectory(prefix="metalab-it-nowhere-", dir="/tmp") as elsewhere:  # no project, no bundle
        done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=project.environ(), capture_output=True,
                              text=True, timeout=60)
    assert done.returncode != 0
    assert "metalab services up" in done.stderr.strip().splitlines()[-1], done.stderr


# --------------------------------------------------------------------------- lifecycle faults


def test_another_projects_bundle_is_never_reused_replaced_or_stopped(make_project) -> None:
    first, second = make_project(), make_project()
    up(first)
    shared = first.root / "runs"
    (second.root / ".metalab.toml").write_text(  # another project, pointed at the first one's file_root
        f'[project]\nname = "other-project"\n[services.postgres]\n[environments.local]\ntype = "local"\nfile_root = "{shared}"\n'
    )
    pids = service_pids(first)
    for command in (("services", "up"), ("services", "status"), ("services", "down")):
        result = second.run(*command)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, str(result)
        assert "records the services of project 'it-project', not 'other-project'" in result.err
    assert all(pid_alive(pid, start) for pid, start in pids.values())
    assert first.run("services", "status").code == 0



def test_down_stops_both_keeps_the_data_and_is_idempotent(project: Project) -> None:
    up(project)
    pids = service_pids(project)
    pg_port = project.bundle()["services"]["postgres"]["port"]

    result = ok(project.run("services", "down"))
    for name, (pid, start) in pids.items():
        assert not pid_alive(pid, start), f"{name} (pid {pid}) survived down"
    stopped = [line.split(":")[0] for line in result.err.splitlines() if "stopped" in line]
    assert stopped == ["atlas", "postgres"], f"expected Atlas stopped before PostgreSQL:\n{result}"
    assert not project.bundle_path.exists()
    assert (project.data_dir / "PG_VERSION").is_file(), "down removed the data directory"
    assert not (project.data_dir / "postmaster.pid").exists()
    assert "fast shutdown" in (project.services_dir / "postgres.log").read_text()
    assert_nothing_running(project)
    assert port_refuses(project.atlas_port) and port_refuses(pg_port)

    result = project.run("services", "status")
    assert result.code == 3, str(result)
    code, report = status_json(project)
    assert code == 3
    assert report["services"] == [] and report["orphans"] == [] and report["healthy"] is False

    ok(project.run("services", "down"))  # nothing running: still success


def test_changed_config_is_reported_by_a_reusing_up_and_applied_by_down_then_up(project: Project) -> None:
    up(project)
    old_port = project.atlas_port
    pids = service_pids(project)
    new_port = old_port
    while new_port in (old_port, 8000):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            new_port = probe.getsockname()[1]
    project.write_config(atlas_port=new_port, postgres_extra='database = "otherdb"\n')

    result = up(project)
    assert "reusing" in result.err, str(result)
    assert "[services.atlas] port" in result.err, str(result)
    assert str(old_port) in result.err and str(new_port) in result.err, str(result)
    assert "[services.postgres] database" in result.err and "otherdb" in result.err, str(result)
    assert "down" in result.err and "up" in result.err, str(result)
    assert service_pids(project) == pids  # nothing restarted
    assert project.bundle()["services"]["postgres"]["database"] == "metalab"

    ok(project.run("services", "down"))
    up(project)
    assert project.bundle()["services"]["atlas"]["port"] == new_port
    assert project.bundle()["services"]["postgres"]["database"] == "otherdb"
    assert project.http_get("/api/health", port=new_port)[0] == 200
    with project.connect() as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("otherdb",)


def test_killed_atlas_makes_status_fail_and_up_reprovisions_on_the_same_data(project: Project) -> None:
    up(project)
    with project.connect() as conn:
        conn.execute("CREATE TABLE survives_reprovision (x int)")
    old = project.bundle()
    atlas_pid = old["services"]["atlas"]["pid"]
    os.kill(atlas_pid, signal.SIGKILL)
    wait_dead(atlas_pid)

    result = project.run("services", "status")
    assert result.code == 1, str(result)
    assert re.search(r"atlas\s+stopped", result.out), result.out
    code, report = status_json(project)
    states = {s["name"]: s["state"] for s in report["services"]}
    assert code == 1 and report["healthy"] is False
    assert states == {"postgres": "running", "atlas": "stopped"}

    result = up(project)
    assert "stale" in result.err, str(result)
    new = project.bundle()
    assert new["services"]["atlas"]["pid"] != atlas_pid
    assert new["services"]["postgres"]["data_dir"] == old["services"]["postgres"]["data_dir"]
    assert project.http_get("/api/health")[0] == 200
    assert len(project.postmasters()) == 1 and len(project.atlases()) == 1
    with project.connect() as conn:
        assert conn.execute("SELECT to_regclass('survives_reprovision') IS NOT NULL").fetchone() == (True,)
    assert ok(project.run("services", "status")).code == 0


def test_committed_rows_survive_kill_9_of_the_server_and_down(project: Project) -> None:
    up(project)
    with project.connect() as conn:
        conn.execute("CREATE TABLE durable (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO durable VALUES (1, 'before kill -9')")
    pg_pid = project.bundle()["services"]["postgres"]["pid"]
    os.kill(pg_pid, signal.SIGKILL)
    wait_dead(pg_pid)

    code, report = status_json(project)
    assert code == 1
    assert {s["name"]: s["state"] for s in report["services"]}["postgres"] == "stopped"
    # Atlas's health follows the database: not 200 while PostgreSQL is gone
    deadline = time.monotonic() + 10
    while (health := project.http_get("/api/health"))[0] == 200:
        assert time.monotonic() < deadline, "Atlas still reports healthy 10 s after PostgreSQL died"
        time.sleep(0.1)
    assert project.password() not in health[2]

    result = up(project)
    assert project.bundle()["services"]["postgres"]["pid"] != pg_pid
    with project.connect() as conn:
        assert conn.execute("SELECT id, note FROM durable").fetchall() == [(1, "before kill -9")], str(result)
        conn.execute("INSERT INTO durable VALUES (2, 'before down')")

    port = project.bundle()["services"]["postgres"]["port"]
    ok(project.run("services", "down"))
    up(project)
    assert project.bundle()["services"]["postgres"]["port"] == port, "the free port was not remembered"
    with project.connect() as conn:
        assert conn.execute("SELECT id FROM durable ORDER BY id").fetchall() == [(1,), (2,)]
    assert ok(project.run("services", "status")).code == 0


def test_corrupt_bundle_is_one_line_in_status_and_moved_aside_by_up(project: Project) -> None:
    up(project)
    garbage = '{"schema_version": 1, "project": oops this is not json'
    project.bundle_path.write_text(garbage)

    result = project.run("services", "status")
    assert result.code == 1, str(result)
    lines = [line for line in result.text.splitlines() if line.strip()]
    assert len(lines) == 1, str(result)
    assert "corrupt" in lines[0] and str(project.bundle_path) in lines[0]
    assert "Traceback" not in result.text
    code, report = status_json(project)
    assert code == 1 and report["problem"] and report["healthy"] is False

    up(project)
    aside = sorted(project.services_dir.glob("bundle.json.corrupt-*"))
    assert len(aside) == 1, sorted(p.name for p in project.services_dir.iterdir())
    assert aside[0].read_text() == garbage
    assert project.bundle()["schema_version"] == 1
    assert ok(project.run("services", "status")).code == 0
    assert len(project.postmasters()) == 1 and len(project.atlases()) == 1


def test_orphans_are_reported_by_status_and_adopted_by_up(project: Project) -> None:
    up(project)
    pids = service_pids(project)
    project.bundle_path.unlink()

    result = project.run("services", "status")
    assert result.code == 1, str(result)
    assert "orphan" in result.out, str(result)
    assert str(pids["postgres"][0]) in result.out and str(pids["atlas"][0]) in result.out, str(result)
    code, report = status_json(project)
    assert code == 1
    assert {o["name"] for o in report["orphans"]} == {"postgres", "atlas"}

    result = up(project)
    assert "adopt" in result.err, str(result)
    assert service_pids(project) == pids  # the same processes, now recorded again
    assert ok(project.run("services", "status")).code == 0
    assert len(project.postmasters()) == 1 and len(project.atlases()) == 1


def test_orphans_are_stopped_by_down(project: Project) -> None:
    up(project)
    pids = service_pids(project)
    project.bundle_path.unlink()

    ok(project.run("services", "down"))
    for name, (pid, start) in pids.items():
        assert not pid_alive(pid, start), f"orphan {name} (pid {pid}) survived down"
    assert_nothing_running(project)
    assert project.run("services", "status").code == 3


def test_four_concurrent_ups_start_one_set_of_services(project: Project) -> None:
    procs = [project.popen("services", "up") for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append((proc.returncode, out, err))
    for code, out, err in results:
        assert code == 0, f"[exit {code}]\n{out}\n{err}"

    postmasters, atlases = project.postmasters(), project.atlases()
    assert len(postmasters) == 1, [p.cmdline for p in postmasters]
    assert len(atlases) == 1, [p.cmdline for p in atlases]
    bundle = project.bundle()
    assert bundle["services"]["postgres"]["pid"] == postmasters[0].pid
    assert bundle["services"]["atlas"]["pid"] == atlases[0].pid
    locators = {re.search(r"^store: (.+)$", out, re.MULTILINE).group(1) for _, out, _ in results}
    assert locators == {bundle["store_locator"]}
    assert ok(project.run("services", "status")).code == 0


@pytest.mark.parametrize("moment", ["initdb-started", "initdb-writing", "server-ready"])
def test_ctrl_c_during_up_stops_what_it_started_and_writes_no_bundle(project: Project, moment: str) -> None:
    """SIGINT to up's process group (what Ctrl+C in a terminal does) at three points of a cold up."""

    def reached() -> bool:
        if moment == "initdb-started":  # an initdb process runs for this project
            return any(p.argv[0].endswith("/initdb") for p in project.processes() if p.argv)
        if moment == "initdb-writing":  # the data directory (or initdb's scratch copy of it) is appearing
            return any((d / "PG_VERSION").exists() for d in project.services_dir.glob("postgres*"))
        try:  # PostgreSQL is up; metalab is creating the role, waiting for a login, or for Atlas
            return "ready to accept connections" in (project.services_dir / "postgres.log").read_text()
        except OSError:
            return False

    proc = project.popen("services", "up", start_new_session=True)
    deadline = time.monotonic() + 60
    while not reached():
        assert proc.poll() is None, "up ended before the moment to interrupt it:\n" + "".join(proc.communicate())
        assert time.monotonic() < deadline, "the moment to interrupt never came"
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.fail("up finished before SIGINT could be sent (the test was too slow, not a product failure)")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode != 0, f"[exit {proc.returncode}]\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert not project.bundle_path.exists()
    time.sleep(0.25)  # let signalled processes finish exiting
    assert_nothing_running(project)

    # what the interrupted `up` left on disk does not stand in the way of the next one
    up(project)
    assert ok(project.run("services", "status")).code == 0
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("service", ["atlas", "postgres"])
def test_port_already_in_use_is_a_one_line_error_and_starts_nothing(project: Project, service: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        if service == "atlas":
            project.write_config(atlas_port=port)
        else:
            project.write_config(postgres_extra=f"port = {port}\n")
        result = project.run("services", "up")

    assert result.code == 2, str(result)
    line = one_line_error(result)
    assert str(port) in line and f"[services.{service}] port" in line, line
    assert not project.bundle_path.exists()
    assert_nothing_running(project)


def test_a_project_folder_the_server_user_cannot_enter(project: Project) -> None:
    """As root PostgreSQL runs as `postgres`, which cannot reach into a 0700 folder: a one-line
    error that says so, and nothing left running. As an ordinary user the server runs as us: it works."""
    project.root.chmod(0o700)
    result = project.run("services", "up")
    if os.geteuid() == 0:
        assert result.code == 2, str(result)
        line = one_line_error(result)
        assert "not reachable" in line and "postgres" in line, line
        assert not project.bundle_path.exists()
        assert_nothing_running(project)
    else:
        assert result.code == 0, str(result)


def test_atlas_without_postgres_is_a_config_error_before_anything_starts(project: Project) -> None:
    project.write_config(postgres=False, atlas=True)
    result = project.run("services", "up")
    assert result.code == 2, str(result)
    line = one_line_error(result)
    assert "[services.postgres]" in line, line
    assert not (project.root / "runs").exists()
    assert not (project.home / ".metalab").exists()
    assert_nothing_running(project)


def test_unresponsive_atlas_is_unhealthy_and_replaced_by_up(project: Project) -> None:
    up(project)
    old = project.bundle()
    atlas_pid = old["services"]["atlas"]["pid"]
    os.kill(atlas_pid, signal.SIGSTOP)  # alive, listening, but answering nothing
    try:
        code, report = status_json(project)
        states = {s["name"]: s["state"] for s in report["services"]}
        assert code == 1 and states == {"postgres": "running", "atlas": "unhealthy"}, report
        result = up(project)
        assert "stale" in result.err, str(result)
    finally:
        try:
            os.kill(atlas_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert not pid_alive(atlas_pid), "the unresponsive Atlas was left running"
    assert project.bundle()["services"]["atlas"]["pid"] != atlas_pid
    assert project.http_get("/api/health")[0] == 200
    assert len(project.postmasters()) == 1 and len(project.atlases()) == 1
    assert ok(project.run("services", "status")).code == 0


def test_a_reused_pid_in_a_stale_bundle_is_not_taken_for_the_service_nor_stopped(project: Project) -> None:
    """The bundle's Atlas died and the kernel gave its pid to an unrelated process (simulated)."""
    up(project)
    bundle = project.bundle()
    os.kill(bundle["services"]["atlas"]["pid"], signal.SIGKILL)
    wait_dead(bundle["services"]["atlas"]["pid"])
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        bundle["services"]["atlas"]["pid"] = bystander.pid  # pid_start still names the dead Atlas
        project.bundle_path.write_text(json.dumps(bundle))
        code, report = status_json(project)
        assert code == 1
        assert {s["name"]: s["state"] for s in report["services"]}["atlas"] == "stopped"
        ok(project.run("services", "down"))
        assert bystander.poll() is None, "down killed an unrelated process that reused the bundle's pid"
        assert_nothing_running(project)
    finally:
        bystander.kill()
        bystander.wait()


def test_bundle_pids_now_owned_by_strangers_neither_hide_the_services_nor_get_the_strangers_signalled(
    project: Project,
) -> None:
    """Both services run, but the bundle's pids (and start times) name two unrelated processes:
    only the command line tells them apart. status finds the real services through their own
    records, down stops exactly those, and up starts afresh on the freed ports."""
    from metalab.procs import process_start

    up(project)
    bundle = project.bundle()
    strangers = [subprocess.Popen(["sleep", "120"], start_new_session=True) for _ in range(2)]
    try:
        for name, stranger in zip(("postgres", "atlas"), strangers):
            bundle["services"][name].update(pid=stranger.pid, pid_start=process_start(stranger.pid))
        project.bundle_path.write_text(json.dumps(bundle))
        code, report = status_json(project)
        assert code == 0, report
        states = {s["name"]: (s["state"], s["pid"]) for s in report["services"]}
        assert states["postgres"][0] == states["atlas"][0] == "running"
        assert {pid for _, pid in states.values()}.isdisjoint({s.pid for s in strangers})
        ok(project.run("services", "down"))
        assert all(stranger.poll() is None for stranger in strangers), "down signalled a process metalab did not start"
        assert_nothing_running(project)
        ok(up(project))
        assert len(project.postmasters()) == 1 and len(project.atlases()) == 1
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()


def test_up_after_only_atlas_died_restarts_atlas_alone_and_a_sweeps_connection_survives(project: Project) -> None:
    up(project)
    before = project.bundle()["services"]
    with project.connect() as sweep:  # a sweep's connection, open across the `up`
        os.kill(before["atlas"]["pid"], signal.SIGKILL)
        wait_dead(before["atlas"]["pid"])
        result = up(project)
        assert "restarting atlas, keeping the running postgres" in result.err, result
        assert sweep.execute("SELECT 1").fetchone() == (1,)
    after = project.bundle()["services"]
    assert after["postgres"]["pid"] == before["postgres"]["pid"] and after["atlas"]["pid"] != before["atlas"]["pid"]
    assert project.http_get("/api/health")[0] == 200 and len(project.postmasters()) == 1
    assert status_json(project)[0] == 0


def test_up_after_only_postgres_died_keeps_the_running_atlas(project: Project) -> None:
    up(project)
    before = project.bundle()["services"]
    os.kill(before["postgres"]["pid"], signal.SIGKILL)
    wait_dead(before["postgres"]["pid"])
    result = up(project)
    assert "restarting postgres, keeping the running atlas" in result.err, result
    after = project.bundle()["services"]
    assert after["atlas"]["pid"] == before["atlas"]["pid"] and after["postgres"]["pid"] != before["postgres"]["pid"]
    assert project.http_get("/api/health")[0] == 200 and len(project.atlases()) == 1


def test_provision_postgres_on_its_own_updates_the_bundle_so_nothing_healthy_is_restarted(project: Project) -> None:
    up(project)
    before = project.bundle()["services"]
    os.kill(before["postgres"]["pid"], signal.SIGKILL)
    wait_dead(before["postgres"]["pid"])
    ok(project.run("services.provision-postgres"))
    restarted = project.bundle()["services"]["postgres"]
    assert restarted["pid"] != before["postgres"]["pid"] and pid_alive(restarted["pid"])
    assert status_json(project)[0] == 0  # status sees the new server
    result = up(project)
    assert "reusing the running postgres, atlas" in result.err, result
    assert project.bundle()["services"]["atlas"]["pid"] == before["atlas"]["pid"]


@pytest.mark.parametrize("command", ["up", "down"])
def test_waiting_on_a_lock_another_command_holds_says_who_holds_it(project: Project, command: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from metalab.bundle import lock\n"
         f"with lock(Path({str(project.bundle_path)!r})):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=project.environ(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = project.popen("services", command)
        time.sleep(2.5)  # a hung holder
        assert waiting.poll() is None
    finally:
        holder.kill()
        holder.wait()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert re.search(rf"waiting for the bundle lock .*bundle\.json\.lock: pid {holder.pid} \(-c\), since \d\d:\d\d:\d\d",
                     err), err


def test_dry_up_while_the_services_are_healthy_says_it_would_reuse_them(project: Project) -> None:
    up(project)
    before = files_under(project.root)
    result = ok(project.run("--dry", "services", "up"))
    assert "would reuse the running postgres, atlas" in result.err and "would start" not in result.text, result
    assert files_under(project.root) == before  # and changed nothing


def test_postgres_only_starts_no_atlas_and_a_later_atlas_is_reported_as_drift(project: Project) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        pg_port = probe.getsockname()[1]
    project.write_config(atlas=False, postgres_extra=f"port = {pg_port}\n")
    result = up(project)
    bundle = project.bundle()
    assert set(bundle["services"]) == {"postgres"}
    assert bundle["services"]["postgres"]["port"] == pg_port
    assert bundle["store_locator"].startswith("postgresql://")
    assert "Atlas:" not in result.out
    assert project.atlases() == [] and len(project.postmasters()) == 1
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert ok(project.run("services", "status")).code == 0

    project.write_config(atlas=True, postgres_extra=f"port = {pg_port}\n")
    result = up(project)
    assert "reusing" in result.err and "[services.atlas]" in result.err and "down" in result.err, str(result)
    assert project.atlases() == []


def test_without_file_root_the_state_lives_under_home(project: Project) -> None:
    project.write_config(file_root=None)
    result = up(project)
    services_dir = project.home / ".metalab" / "services" / "local"
    bundle = json.loads((services_dir / "bundle.json").read_text())
    assert stat.S_IMODE((services_dir / "bundle.json").stat().st_mode) == 0o600
    assert bundle["services"]["postgres"]["data_dir"] == str(services_dir / "postgres")
    assert (services_dir / "postgres" / "PG_VERSION").is_file()
    records = services_dir / "runs"
    assert bundle["store_locator"].endswith(f"?file_root={records}")
    assert f"store: {bundle['store_locator']}" in result.out
    # store="discover" writes its records beside the bundle, and Atlas's indexer follows them
    script = project.root / "sweep.py"
    script.write_text(
        "import metalab\n"
        "@metalab.operation\n"
        "def train(params, seeds, capture):\n"
        "    capture.metric('score', params['x'])\n"
        "exp = metalab.Experiment(name='home', version='1', operation=train, params=metalab.grid(x=[1, 2, 3]))\n"
        "print(metalab.run(exp, store='discover', progress=False).ran)\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=project.root, env=project.environ(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["3"], done.stderr
    assert len(list((records / "home-1" / "runs").glob("*.jsonl"))) == 1
    wait_until(lambda: [(e["experiment_id"], e["runs"]) for e in json.loads(project.http_get("/api/experiments")[2])]
               == [("home-1", 3)], 15, "Atlas listing the 3 runs")
    assert not (project.root / "runs").exists()
    assert ok(project.run("services", "status")).code == 0
    ok(project.run("services", "down"))
    assert not (services_dir / "bundle.json").exists()
    assert (services_dir / "postgres" / "PG_VERSION").is_file()
    assert_nothing_running(project)


def test_failure_half_way_stops_what_up_started(project: Project) -> None:
    """An initdb that fails (a fake bin_dir) after Atlas has already been spawned."""
    fake = project.root / "fake-pg-bin"
    fake.mkdir()
    (fake / "initdb").write_text("#!/bin/sh\necho 'initdb: error: simulated failure' >&2\nexit 1\n")
    (fake / "initdb").chmod(0o755)
    project.write_config(postgres_extra=f'bin_dir = "{fake}"\n')
    result = project.run("services", "up")
    assert result.code == 1, str(result)
    line = one_line_error(result)
    assert "initdb" in line and "simulated failure" in line, line
    assert not project.bundle_path.exists()
    assert_nothing_running(project)
    assert not (project.data_dir / "PG_VERSION").exists()


def test_missing_postgresql_binaries_is_a_one_line_error_saying_how_to_install(project: Project) -> None:
    empty = project.root / "no-postgres-here"
    empty.mkdir()
    project.write_config(postgres_extra=f'bin_dir = "{empty}"\n')
    result = project.run("services", "up")
    assert result.code != 0, str(result)
    line = one_line_error(result)
    assert "install" in line and "postgresql" in line.lower(), line
    assert not project.bundle_path.exists()
    assert_nothing_running(project)


# ------------------------------------------------------------------------------------ secrets


class ProcScanner(threading.Thread):
    """Collect every /proc/*/cmdline seen, and the environment of this project's processes."""

    def __init__(self, project: Project) -> None:
        super().__init__(daemon=True)
        self.root = str(project.root).encode()
        self.cmdlines: set[bytes] = set()
        self.environs: set[bytes] = set()
        self.rounds = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                    self.cmdlines.add(cmdline)
                    cwd = os.readlink(Path(entry.path, "cwd")).encode()
                    if self.root in cmdline or cwd.startswith(self.root):
                        self.environs.add(Path(entry.path, "environ").read_bytes())
                except OSError:
                    continue
            self.rounds += 1
            time.sleep(0.002)  # leave the CPU to what is being watched; tools live far longer than this

    def __enter__(self) -> ProcScanner:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join()


@pytest.mark.parametrize("source", ["configured", "environment", "generated"])
def test_password_appears_in_no_output_log_bundle_or_command_line(project: Project, source: str) -> None:
    configured = f"Pw-{secrets.token_hex(12)}-zQ"
    if source == "configured":
        (project.root / ".metalab.local.toml").write_text(f'[services.postgres]\npassword = "{configured}"\n')
    elif source == "environment":  # every metalab command of this test gets it
        real_environ = project.environ
        project.environ = lambda extra=None: {**real_environ(extra), "METALAB_POSTGRES_PASSWORD": configured}

    outputs = []
    with ProcScanner(project) as scanner:
        outputs.append(up(project))
        during_up = set(scanner.cmdlines)
    password = project.password()
    if source != "generated":
        assert password == configured
    assert len(password) >= 16
    assert scanner.rounds > 3
    assert any(b"initdb" in c and str(project.root).encode() in c for c in during_up), "scanner missed initdb"
    secret = password.encode()

    # while the services run
    with ProcScanner(project) as scanner:
        outputs.append(project.run("services", "status"))
        outputs.append(project.run("services", "status", "--json"))
        outputs.append(project.run("--dry", "services", "up"))
        outputs.append(project.run("env", "show", "local"))
        time.sleep(0.2)
    for result in outputs:
        assert result.code == 0, str(result)
    running_cmdlines = scanner.cmdlines
    running_environs = scanner.environs
    assert project.postmasters() and project.atlases()
    services_environs = [Path(f"/proc/{p.pid}/environ").read_bytes() for p in project.postmasters() + project.atlases()]
    bundle_text = project.bundle_path.read_bytes()
    outputs.append(ok(project.run("services", "down")))

    for result in outputs:
        assert password not in result.text, f"password printed by: {' '.join(result.argv)}"
    for log in ("postgres.log", "atlas.log"):
        assert secret not in (project.services_dir / log).read_bytes(), f"password in {log}"
    assert secret not in bundle_text, "password in bundle.json"
    leaked = [c.replace(b"\0", b" ").decode(errors="replace") for c in during_up | running_cmdlines if secret in c]
    assert not leaked, f"password on a command line: {leaked}"
    if source != "environment":  # there the user put it in the environment themselves
        assert not [e for e in running_environs | set(services_environs) if secret in e], "password in an environment"
    # at rest, the password lives only in its 0600 file and the 0600 libpq password file beside it
    # (and the user's own .metalab.local.toml)
    pgpass = project.password_file.with_name("postgres.pgpass")
    assert stat.S_IMODE(project.password_file.stat().st_mode) == stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    holders = []
    for directory, _, filenames in os.walk(project.root):
        for name in filenames:
            path = Path(directory, name)
            if path in (project.password_file, pgpass, project.root / ".metalab.local.toml") or path.is_symlink():
                continue
            if secret in path.read_bytes():
                holders.append(str(path))
    assert not holders, f"password written to {holders}"


# ------------------------------------------------------------------------------------ dry run


def test_dry_up_prints_the_plan_and_creates_nothing(project: Project) -> None:
    before = files_under(project.root)
    result = project.run("--dry", "services", "up")
    assert result.code == 0, str(result)
    text = result.text
    data_dir = re.escape(str(project.data_dir))
    assert re.search(r"initdb\S* -D " + data_dir, text), text
    # the server start: through pg_ctl, or the postmaster itself
    assert re.search(r"pg_ctl\S* -D " + data_dir + r".* start|/postgres -D " + data_dir, text), text
    assert "listen_addresses = '127.0.0.1'" in text  # metalab.conf
    assert "pg_hba.conf" in text and "scram-sha-256" in text
    assert "metalab.atlas" in text and str(project.atlas_port) in text
    assert '"schema_version": 1' in text and '"store_locator": "postgresql://' in text  # the bundle
    assert "***" in text  # secrets masked
    assert "SCRAM-SHA-256$" not in text

    assert files_under(project.root) == before, "dry run changed the project folder"
    assert not (project.root / "runs").exists()
    assert not project.socket_dir.exists()
    assert_nothing_running(project)


@pytest.mark.parametrize(
    "step", ["services.resolve-config", "services.provision-postgres", "services.provision-atlas",
             "services.write-bundle", "services.down", "services.status"],
)
def test_every_step_under_dry_creates_nothing(project: Project, step: str) -> None:
    before = files_under(project.root)
    result = project.run("--dry", step, "--env", "local")
    assert result.code in ((0, 3) if step == "services.status" else (0,)), str(result)
    assert "Traceback" not in result.text
    if step not in ("services.resolve-config", "services.status"):
        assert "would" in result.text, f"--dry {step} does not say what it would do:\n{result}"
    assert files_under(project.root) == before, f"--dry {step} changed the project folder"
    assert not project.socket_dir.exists()
    assert_nothing_running(project)


# ------------------------------------------------------------------------ the chain, step by step


def test_steps_run_one_by_one_build_a_healthy_bundle(project: Project) -> None:
    ok(project.run("services.provision-postgres", "--env", "local"))
    [postmaster] = project.postmasters()
    assert project.atlases() == []
    assert not project.bundle_path.exists()

    ok(project.run("services.provision-atlas", "--env", "local"))
    assert [p.pid for p in project.postmasters()] == [postmaster.pid]
    [atlas] = project.atlases()
    assert project.http_get("/api/health")[0] == 200
    assert not project.bundle_path.exists()

    ok(project.run("services.write-bundle", "--env", "local"))
    bundle = project.bundle()
    assert bundle["services"]["postgres"]["pid"] == postmaster.pid
    assert bundle["services"]["atlas"]["pid"] == atlas.pid
    assert ok(project.run("services", "status")).code == 0
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_user_tasks_file_can_chain_services_up(project: Project) -> None:
    (project.root / "tasks.py").write_text(
        'from invoke import task\nfrom metalab.tasks.services import up\n\n\n'
        '@task(pre=[up])\ndef work(c):\n    print("work ran")\n'
    )
    result = ok(project.run("work", program=INV, env={"METALAB_ENV": "local"}))
    assert "work ran" in result.out
    assert project.bundle()["environment"] == "local"
    assert ok(project.run("services", "status")).code == 0
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ------------------------------------------------------------------------------------- output


def run_on_a_terminal(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run metalab with its stderr on a pseudo-terminal; (exit code, stdout, stderr bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(project.argv(project.program, args), cwd=project.root, env=project.environ(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=60), out, b"".join(chunks)


def test_quiet_prints_nothing_on_stderr_and_no_color_turns_off_escapes(project: Project) -> None:
    result = up(project, "--quiet")
    assert result.err == "", str(result)
    assert up(project, "--quiet").err == ""  # the reusing path too

    # On a terminal progress is coloured (the control), unless NO_COLOR is set.
    code, out, err = run_on_a_terminal(project, "services", "up")
    assert code == 0 and b"\x1b[" in err, err
    code, out, err = run_on_a_terminal(project, "services", "up", env={"NO_COLOR": "1"})
    assert code == 0 and b"reusing" in err
    assert b"\x1b" not in err + out, err
    code, out, err = run_on_a_terminal(project, "services", "down", env={"NO_COLOR": "1"})
    assert code == 0 and b"\x1b" not in err + out, err
    code, out, err = run_on_a_terminal(project, "services", "up", env={"NO_COLOR": "1"})
    assert code == 0 and b"ready" in err
    assert b"\x1b" not in err + out, err


# ------------------------------------------------------------------------- as an ordinary user


def _ensure_unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", UNPRIVILEGED_USER], check=True, capture_output=True)
        return pwd.getpwnam(UNPRIVILEGED_USER)


def test_whole_lifecycle_as_an_unprivileged_user(make_project) -> None:
    """Root runs the other tests (PostgreSQL as `postgres`); here metalab itself runs unprivileged.

    The venv must be usable by that user: this one, or the world-readable install named by
    METALAB_UNPRIVILEGED_VENV (scripts/test.sh makes one when the main interpreter is private).
    """
    if os.geteuid() != 0:  # the whole suite is already unprivileged: run the lifecycle as ourselves
        user, project = pwd.getpwuid(os.geteuid()), make_project()
    else:
        user = _ensure_unprivileged_user()
        venv_bin = Path(os.environ["METALAB_UNPRIVILEGED_VENV"]) / "bin" if os.environ.get(
            "METALAB_UNPRIVILEGED_VENV") else METALAB.parent
        probe = subprocess.run(
            ["runuser", "-u", user.pw_name, "--", str(venv_bin / "metalab"), "--version"],
            capture_output=True, text=True, cwd="/", check=False,
        )
        if probe.returncode != 0:
            pytest.fail(
                f"the venv {venv_bin.parent} cannot run `metalab` as the OS user {user.pw_name!r}: "
                f"{(probe.stderr.strip().splitlines() or ['?'])[-1]} (its interpreter is "
                f"{os.path.realpath(venv_bin / 'python')}). Point METALAB_UNPRIVILEGED_VENV at a venv that user "
                "can read (scripts/test.sh creates one), or create this venv outside private directories like /root.",
                pytrace=False,
            )
        project = make_project(run_as=user.pw_name)
        project.program = venv_bin / "metalab"
        project.home = Path(user.pw_dir)
        for directory, dirnames, filenames in os.walk(project.root):
            for name in [directory, *(os.path.join(directory, n) for n in dirnames + filenames)]:
                os.chown(name, user.pw_uid, user.pw_gid)

    result = up(project)
    assert "postgres" in result.err
    [postmaster] = project.postmasters()
    [atlas] = project.atlases()
    assert owner_uid(postmaster.pid) == user.pw_uid
    assert owner_uid(atlas.pid) == user.pw_uid
    assert project.data_dir.stat().st_uid == user.pw_uid
    assert project.bundle_path.stat().st_uid == user.pw_uid
    assert stat.S_IMODE(project.bundle_path.stat().st_mode) == 0o600
    with project.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert project.http_get("/api/health")[0] == 200
    assert ok(project.run("services", "status")).code == 0

    ok(project.run("services", "down"))
    assert not pid_alive(postmaster.pid) and not pid_alive(atlas.pid)
    assert_nothing_running(project)
    assert (project.data_dir / "PG_VERSION").is_file()
    assert project.run("services", "status").code == 3


def test_require_token_puts_atlas_behind_a_token_on_loopback_too(project: Project) -> None:
    project.write_config(extra="")
    config = (project.root / ".metalab.toml").read_text()
    (project.root / ".metalab.toml").write_text(config.replace(f"port = {project.atlas_port}\n",
                                                               f"port = {project.atlas_port}\nrequire_token = true\n"))
    result = up(project)
    token = project.bundle()["services"]["atlas"]["token"]
    assert f"?token={token}" in result.out
    assert project.http_get("/api/health")[0] == 403
    assert project.http_get(f"/api/health?token={token}")[0] == 200
    assert project.run("services", "status").code == 0  # status shows the token to Atlas


def test_psql_connects_to_the_index_with_the_password_file_alone(project: Project) -> None:
    up(project)
    access = json.loads(ok(project.run("services", "url", "--json")).out)
    pgpass = Path(access["pgpass_file"])
    assert pgpass.parent == project.services_dir and stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    assert access["locator"] == project.bundle()["store_locator"] and project.password() not in json.dumps(access)
    env = {k: v for k, v in project.environ().items() if k != "PGPASSWORD"}
    done = subprocess.run(["psql", "-h", access["host"], "-p", str(access["port"]), "-U", access["user"], "-d",
                           access["database"], "-w", "-tA", "-c", "SELECT current_user"],
                          env={**env, "PGPASSFILE": str(pgpass)}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == access["user"], done.stderr
    without = subprocess.run(["psql", "-h", access["host"], "-p", str(access["port"]), "-U", access["user"], "-d",
                              access["database"], "-w", "-c", "SELECT 1"],
                             env={**env, "PGPASSFILE": "/nonexistent"}, capture_output=True, text=True, timeout=30)
    assert without.returncode != 0  # it is the file that logs in
    human = ok(project.run("services", "url")).out
    assert human.splitlines()[0] == access["locator"] and f"PGPASSFILE={pgpass}" in human
    # `metalab services psql`: the same session, the password on no command line or environment
    result = ok(project.run("services", "psql", "-c", "SELECT 40 + 2"))
    assert "42" in result.out and project.password() not in result.text


def test_logs_shows_the_end_of_each_service_log_and_follows_a_live_atlas_log(project: Project) -> None:
    up(project)
    shown = ok(project.run("services", "logs", "postgres", "-n", "5")).out
    assert 0 < len(shown.splitlines()) <= 5 and shown.splitlines() == (project.services_dir / "postgres.log").read_text().splitlines()[-5:]
    both = ok(project.run("services", "logs")).out
    assert "==> postgres:" in both and "==> atlas:" in both
    wrong = project.run("services", "logs", "nosuch")
    assert wrong.code == 2 and "postgres, atlas" in wrong.err
    follower = project.popen("services", "logs", "atlas", "-f", "-n", "0")
    try:
        time.sleep(1.5)
        marker = f"marker-{secrets.token_hex(4)}"
        with (project.services_dir / "atlas.log").open("a") as log:  # as Atlas appends to its own log
            log.write(f"{marker} with the password {project.password()} in it\n")
        deadline = time.monotonic() + 10
        seen = ""
        fd = follower.stdout.fileno()
        os.set_blocking(fd, False)
        while marker not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(fd, 65536).decode()
            except BlockingIOError:
                time.sleep(0.1)
        assert marker in seen and project.password() not in seen and "***" in seen, seen
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
    assert follower.returncode in (0, 130)
