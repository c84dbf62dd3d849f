"""The documented workstation workflow, run on the workstation host ``ws``: it reaches only the
gateway's sshd on ``login`` (its ~/.ssh/config names it) and cannot see the cluster's file_root.

    metalab services up --env slurm; metalab tunnel; Atlas on localhost; experiments as job
    arrays with store="discover"; results read back here; metalab services down
"""

from __future__ import annotations

import json
import queue
import re
import signal
import threading
import time

import pytest

from cluster_support import wait_until
from metalab.procs import is_alive

pytestmark = pytest.mark.integration

SWEEP = '''
import json, sys
import metalab
from metalab.errors import MetalabError

@metalab.operation
def square(params, seeds, capture):
    capture.metric("y", params["x"] ** 2)
    for step in range(3):
        capture.metric("curve", params["x"] + step, step=step)

exp = metalab.Experiment(name="wsweep", version="1", operation=square, params=metalab.grid(x=list(range(12))))

if __name__ == "__main__":
    action = sys.argv[1]
    executor = metalab.resolve_executor("slurm", {"max_concurrent": 4})
    try:
        if action == "submit":
            handle = metalab.run(exp, executor=executor, store="discover", progress=False)
            print(json.dumps({"jobs": handle.job_ids, "ran": handle.ran}))
        elif action == "reconnect":
            results = metalab.reconnect(exp, store="discover", executor=executor, progress=False).result()
            print(json.dumps([[r.params["x"], r.status, r.metrics["y"]] for r in results]))
        elif action == "load":
            results = metalab.load_results("discover", exp)
            print(json.dumps([[r.params["x"], r.status, r.metrics["y"], r.steps["curve"]] for r in results]))
        elif action == "connect":
            from metalab.store import open_store
            with open_store("discover").connect() as conn:
                print(json.dumps(list(conn.execute("SELECT host(inet_server_addr()), current_database()").fetchone())))
        elif action == "run-here":
            metalab.run(exp, store="discover", progress=False)
    except MetalabError as error:
        print("error: " + str(error), file=sys.stderr)
        sys.exit(error.exit_code)
'''


EXECUTOR = 'partition = "cpu"\ntime = "0:10:00"\nmemory = "200M"\n'


@pytest.fixture
def workstation(make_cluster_project):
    """A project on the workstation whose profile names the gateway `login`."""
    project = make_cluster_project("ws")
    project.write_config(executor=EXECUTOR)
    (project.root / "sweep.py").write_text(SWEEP)
    return project


class Lines:
    """A process's stdout lines as they come (read by a thread, so waiting has a timeout)."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def rest(self, timeout: float = 30) -> list[str]:
        """Every line left, once the process has closed its stdout."""
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                return self.seen
            self.seen.append(line)

    def until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"the process ended before {text!r}; saw {self.seen}; stderr {self.proc.stderr.read()}")
            self.seen.append(line)
            if text in line:
                return line


def tunnel_record(project) -> dict:
    return json.loads((project.local_services_dir / "tunnel.json").read_text())


def test_the_documented_workstation_workflow(workstation):
    project, cluster, ws = workstation, workstation.cluster, workstation.cluster.ws
    up = project.run("services", "up", "--env", "slurm")
    assert up.code == 0, up
    assert re.search(r"submitted job \d+ \(metalab-services-" + project.name + r"-slurm\) on slurmgw@login", up.err)
    bundle = project.bundle()  # the workstation's own copy: ~/.metalab/clusters/{project}/slurm/bundle.json
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    assert bundle["project"] == project.name and pg["host"] == cluster.info.address(pg["node"])
    forwards = {f["service"]: f for f in bundle["tunnel"]["forwards"]}
    assert bundle["tunnel"]["gateway"] == "login" and forwards["atlas"]["local_port"] == project.atlas_port
    # the cluster's copy, for jobs that discover it, has the node's address; the workstation cannot see it
    assert project.cluster_bundle()["store_locator"].startswith(f"postgresql://metalab@{pg['host']}:{pg['port']}/")
    assert ws.run(["test", "-e", str(project.cluster_bundle_path)]).code == 1
    cluster_copy = project.cluster_bundle_path.read_bytes()
    status = project.run("services", "status", "--json")
    assert status.code == 0 and json.loads(status.out)["healthy"], status
    printed = project.run("tunnel", "--print")
    assert printed.code == 0 and printed.out.startswith("ssh -N") and printed.out.split()[-1] == "login"
    assert f"-L 127.0.0.1:{project.atlas_port}:{atlas['host']}:{atlas['port']}" in printed.out

    # no forward yet: store="discover" here says what to run
    refused = project.python_script("sweep.py", "load")
    assert refused.code == 3 and "no tunnel to them is open here" in refused.err, refused
    assert "run `metalab tunnel --env slurm`" in refused.err and len(refused.err.strip().splitlines()) == 1

    tunnel = project.popen("tunnel")
    lines = Lines(tunnel)
    try:
        url = lines.until("Atlas: http://127.0.0.1:")
        assert url == f"Atlas: http://127.0.0.1:{project.atlas_port}/?token={atlas['token']}"
        lines.until("tunnel open")
        health = f"http://127.0.0.1:{project.atlas_port}/api/health"
        assert ws.http_get(health)[0] == 403  # Atlas on the node wants its token, through the tunnel too
        assert ws.http_get(health, headers={"Authorization": f"token {atlas['token']}"})[0] == 200
        assert ws.http_get(f"http://127.0.0.1:{project.atlas_port}/?token={atlas['token']}")[0] == 200
        # the tunnel changed nothing on the cluster, and status still sees healthy services
        assert project.cluster_bundle_path.read_bytes() == cluster_copy
        assert project.run("services", "status").code == 0

        # the researcher's own tools: the forwarded locator and the password file, psql with it alone
        access = json.loads(project.run("services", "url", "--json").out)
        assert access["host"] == "127.0.0.1"
        assert access["locator"].startswith(f"postgresql://metalab@127.0.0.1:{access['port']}/metalab")
        psql = ws.run(["psql", "-h", "127.0.0.1", "-p", str(access["port"]), "-U", "metalab", "-d", "metalab", "-w",
                       "-tA", "-c", "SELECT current_database()"], env={"PGPASSFILE": access["pgpass_file"]})
        assert psql.code == 0 and psql.out.strip() == "metalab", psql
        # and the services' logs, read on the cluster through the gateway
        job_log = project.run("services", "logs", "job", "-n", "50")
        assert job_log.code == 0 and "postgres ready on" in job_log.out, job_log
        assert project.run("services", "logs", "postgres", "-n", "3").out.strip(), "the node's PostgreSQL log"

        connected = project.python_script("sweep.py", "connect")  # through the forward
        assert connected.code == 0 and json.loads(connected.out) == [pg["host"], "metalab"], connected
        here = project.python_script("sweep.py", "run-here")  # the files are on the cluster: refused, one line
        assert here.code == 2 and "the runs' files live on the cluster" in here.err, here

        # an experiment submitted as job arrays from the workstation; its runs land in the index
        submitted = project.python_script("sweep.py", "submit")
        assert submitted.code == 0 and json.loads(submitted.out)["ran"] == 12, submitted
        reconnected = project.python_script("sweep.py", "reconnect")  # waits for the arrays
        assert reconnected.code == 0, reconnected
        assert json.loads(reconnected.out) == [[x, "success", x * x] for x in range(12)]
        loaded = project.python_script("sweep.py", "load")  # the whole records, read through the gateway
        assert loaded.code == 0, loaded
        assert json.loads(loaded.out) == [[x, "success", x * x, [[s, x + s] for s in range(3)]] for x in range(12)]
        assert project.sql("SELECT count(*) FROM metalab.runs WHERE experiment_id = 'wsweep-1' "
                           "AND status = 'success'") == [[12]]
    finally:
        tunnel.send_signal(signal.SIGINT)
        tunnel.wait(timeout=30)
    assert tunnel.returncode == 0 and lines.rest()[-1] == "tunnel closed", lines.seen
    assert ws.port_is_free(project.atlas_port) and not (project.local_services_dir / "tunnel.json").exists()

    down = project.run("services", "down", "--env", "slurm")
    assert down.code == 0, down
    assert project.services_jobs() == [] and not project.bundle_path.exists() and not project.cluster_bundle_path.exists()
    again = project.run("services", "down", "--env", "slurm")
    assert again.code == 0 and "nothing was running" in again.out, again


def test_sigterm_and_sighup_close_the_tunnel_and_its_ssh(workstation):
    project, ws = workstation, workstation.cluster.ws
    up = project.popen("services", "up", "--tunnel")
    Lines(up).until("tunnel open", timeout=180)
    ssh = tunnel_record(project)
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=30)
    assert up.returncode == 0
    assert not is_alive(ssh["ssh_pid"], ssh["ssh_start"]) and ws.port_is_free(project.atlas_port)
    assert not (project.local_services_dir / "tunnel.json").exists()

    tunnel = project.popen("tunnel")
    Lines(tunnel).until("tunnel open")
    ssh = tunnel_record(project)
    tunnel.send_signal(signal.SIGHUP)
    tunnel.wait(timeout=30)
    assert tunnel.returncode == 0 and not is_alive(ssh["ssh_pid"], ssh["ssh_start"])

    tunnel = project.popen("tunnel")  # killed outright: its ssh goes with it
    Lines(tunnel).until("tunnel open")
    ssh = tunnel_record(project)
    tunnel.kill()
    tunnel.wait()
    wait_until(lambda: not is_alive(ssh["ssh_pid"], ssh["ssh_start"]), 10, "ssh to end with its metalab")

    tunnel = project.popen("tunnel")  # and `services down` closes a running tunnel
    lines = Lines(tunnel)
    lines.until("tunnel open")
    assert project.run("services", "down").code == 0
    tunnel.wait(timeout=30)
    assert tunnel.returncode == 0 and ws.port_is_free(project.atlas_port)


def test_two_projects_with_a_slurm_profile_never_touch_each_others_services(make_cluster_project):
    first, second = make_cluster_project("ws"), make_cluster_project("ws")
    for project in (first, second):
        project.write_config()
        up = project.run("services", "up")
        assert up.code == 0 and "reusing" not in up.err, up
    assert first.bundle_path != second.bundle_path
    jobs = {p.name: p.bundle()["services"]["postgres"]["job_id"] for p in (first, second)}
    assert len(set(jobs.values())) == 2
    assert first.run("services", "down").code == 0
    assert second.services_jobs() == [f"{jobs[second.name]}|RUNNING|{second.bundle()['services']['postgres']['node']}"]
    assert second.run("services", "status").code == 0
    again = second.run("services", "up")
    assert again.code == 0 and "reusing" in again.err and second.bundle()["services"]["postgres"]["job_id"] == jobs[second.name]


def test_each_forward_gets_its_own_local_port_chosen_before_anything_is_printed(workstation):
    project, ws = workstation, workstation.cluster.ws
    # PostgreSQL asks for the port Atlas is pinned to locally: on the node Atlas falls back, and the
    # workstation must not forward both services from that one local port
    project.write_config(postgres=f"port = {project.atlas_port}\n", executor=EXECUTOR)
    assert project.run("services", "up").code == 0
    bundle = project.bundle()
    assert bundle["services"]["postgres"]["port"] == project.atlas_port != bundle["services"]["atlas"]["port"]
    printed = project.run("tunnel", "--print")
    local_ports = re.findall(r"-L 127\.0\.0\.1:(\d+):", printed.out)
    assert len(local_ports) == 2 and len(set(local_ports)) == 2 and str(project.atlas_port) in local_ports, printed
    tunnel = project.popen("tunnel")
    try:
        lines = Lines(tunnel)
        lines.until("tunnel open")
        pg_line = next(line for line in lines.seen if line.startswith("PostgreSQL: 127.0.0.1:"))
        assert f"(port {project.atlas_port} was taken)" in pg_line
        token = bundle["services"]["atlas"]["token"]
        assert ws.http_get(f"http://127.0.0.1:{project.atlas_port}/api/health?token={token}")[0] == 200
        assert project.python_script("sweep.py", "connect").code == 0  # PostgreSQL on the other local port
    finally:
        tunnel.send_signal(signal.SIGINT)
        tunnel.wait(timeout=30)
    holder = ws.listen(project.atlas_port, host="127.0.0.1")  # Atlas's configured local port is taken
    try:
        taken = project.run("tunnel")
    finally:
        holder.kill()
        holder.wait()
    assert taken.code == 2 and taken.out == "" and f"local port {project.atlas_port} for atlas is already in use" in taken.err
