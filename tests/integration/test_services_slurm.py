"""``metalab services`` on the login node of the multi-host cluster: the services job runs on a
compute node at that node's own address; sbatch, squeue and scancel run on the login node."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from cluster_support import wait_until
from metalab.procs import process_start

pytestmark = pytest.mark.integration


@pytest.fixture
def login_node(make_cluster_project):
    """A project on the login node (gateway absent: the cluster's commands run here, as root)."""
    project = make_cluster_project("login")
    project.write_config()
    return project


def ended(project, job: str) -> str:
    """The job's final state once it has left the running states (squeue -t all keeps it)."""
    def final():
        lines = project.cluster.squeue("-t", "all", "-j", job, "-o", "%T")
        return lines[0] if lines and lines[0] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") else None

    return wait_until(final, 60, f"job {job} to end")


def test_up_status_down_on_a_compute_node_at_its_own_address_keeps_the_data(login_node):
    project, cluster = login_node, login_node.cluster
    up = project.run("services", "up")
    assert up.code == 0, up
    assert re.search(r"slurm: submitted job \d+", up.err) and "RUNNING" in up.err
    bundle = project.bundle()
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    node = pg["node"]
    assert node in cluster.info.nodes and pg["host"] == atlas["host"] == cluster.info.address(node)
    assert pg["job_id"] == atlas["job_id"] and atlas["token"] and bundle["tunnel"] is None
    assert bundle["store_locator"].startswith(f"postgresql://metalab@{pg['host']}:{pg['port']}/metalab?")
    assert project.services_jobs() == [f"{pg['job_id']}|RUNNING|{node}"]
    assert atlas["port"] == project.atlas_port  # the configured port, honoured on the node
    status = project.run("services", "status", "--json")
    assert status.code == 0 and {s["state"] for s in json.loads(status.out)["services"]} == {"running"}
    # Atlas on a node demands its token; the login node reaches it at the node's address
    assert cluster.login.http_get(f"http://{atlas['host']}:{atlas['port']}/api/health")[0] == 403
    assert cluster.login.http_get(f"http://{atlas['host']}:{atlas['port']}/api/health?token={atlas['token']}")[0] == 200
    assert project.sql("SELECT host(inet_server_addr())") == [[pg["host"]]]  # PostgreSQL on the node's address
    project.sql("CREATE TABLE kept (x int)")
    project.sql("INSERT INTO kept VALUES (42)")
    again = project.run("services", "up")
    assert again.code == 0 and "reusing" in again.err and "config changed" not in again.err, again
    down = project.run("services", "down")
    assert down.code == 0 and not project.bundle_path.exists()
    assert project.services_jobs() == []  # down waits until the job has left the queue
    assert project.run("services", "up").code == 0
    assert project.sql("SELECT x FROM kept") == [[42]]


def test_a_job_cancelled_behind_metalabs_back_is_reported_as_ended_and_replaced(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    first = project.bundle()["services"]["postgres"]["job_id"]
    project.cluster.scancel(first)
    assert ended(project, first) == "CANCELLED"
    status = project.run("services", "status")
    assert status.code == 1 and "stopped" in status.out, status
    assert "job ended CANCELLED" in status.out and " left" not in status.out  # how it ended, not time left
    states = {s["name"]: s for s in json.loads(project.run("services", "status", "--json").out)["services"]}
    assert {s["state"] for s in states.values()} == {"stopped"} and states["postgres"]["detail"].startswith("job ended CANCELLED")
    replaced = project.run("services", "up")
    assert replaced.code == 0 and "stale" in replaced.err
    assert project.bundle()["services"]["postgres"]["job_id"] != first


def test_when_postgres_dies_the_job_fails_and_its_log_says_why(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    job = project.bundle()["services"]["postgres"]["job_id"]
    ready = json.loads((project.cluster_services_dir / f"ready-{job}.json").read_text())
    os.kill(ready["postgres_pid"], signal.SIGKILL)  # one pid space: the node's processes are visible here
    assert ended(project, job) == "FAILED"
    log = (project.cluster_services_dir / f"slurm-{job}.log").read_text()
    assert f"metalab: postgres (pid {ready['postgres_pid']}) was killed by SIGKILL; stopping the services job" in log
    assert process_start(ready["atlas_pid"]) is None  # the other service was stopped with it
    status = project.run("services", "status")
    assert status.code == 1 and "job ended FAILED" in status.out and " left" not in status.out, status


def test_the_configured_atlas_port_taken_on_the_node_falls_back_and_says_so(login_node):
    project, cluster = login_node, login_node.cluster
    holders = [node.listen(project.atlas_port) for node in cluster.nodes.values()]
    try:
        up = project.run("services", "up")
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert up.code == 0, up
    atlas = project.bundle()["services"]["atlas"]
    assert atlas["port"] != project.atlas_port
    assert f"atlas: port {project.atlas_port} is taken on {project.bundle()['services']['postgres']['node']}; " \
           f"using {atlas['port']}" in up.err
    assert cluster.login.http_get(f"http://{atlas['host']}:{atlas['port']}/api/health?token={atlas['token']}")[0] == 200


def test_a_job_that_cannot_start_is_a_clear_error_and_leaves_nothing(make_cluster_project):
    project = make_cluster_project("login")
    project.write_config(partition="no-such-partition")
    result = project.run("services", "up")
    assert result.code == 1 and "sbatch failed" in result.err and "partition" in result.err.lower()
    assert len(result.err.strip().splitlines()) <= 2
    assert not project.bundle_path.exists()
    assert project.services_jobs() == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_waiting_cancels_the_job(login_node, signum):
    project = login_node
    proc = project.popen("services", "up", start_new_session=True)
    wait_until(project.services_jobs, 30, "the job to be submitted", interval=0.05)
    os.killpg(proc.pid, signum)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert project.services_jobs() == [] and not project.bundle_path.exists()


def test_an_orphaned_job_is_reported_then_adopted(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    job = project.bundle()["services"]["postgres"]["job_id"]
    project.bundle_path.unlink()
    status = project.run("services", "status")
    assert status.code == 1 and f"services job {job}" in status.out
    adopted = project.run("services", "up")
    assert adopted.code == 0 and f"adopted running services job {job}" in adopted.err
    assert project.bundle()["services"]["postgres"]["job_id"] == job


def test_dry_run_prints_the_script_and_submits_nothing(login_node):
    project = login_node
    result = project.run("--dry", "services", "up")
    assert result.code == 0, result
    assert "#SBATCH --job-name=" in result.err and "-m metalab.services.node" in result.err
    assert "would run on this machine: sbatch --parsable" in result.err
    assert project.services_jobs() == [] and not project.file_root.exists()


def test_no_secret_in_the_script_the_log_the_output_or_a_command_line(login_node):
    project = login_node
    secret = "slurm-Sekr1t-" + os.urandom(4).hex()
    (project.root / ".metalab.local.toml").write_text(f'[services.postgres]\npassword = "{secret}"\n')
    seen: list[str] = []
    proc = project.popen("services", "up")
    while proc.poll() is None:  # every process on every host: one pid space
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                seen.append(cmdline.read_bytes().decode(errors="replace"))
            except OSError:
                pass
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    status = project.run("services", "status", "--json")
    services_dir = project.cluster_services_dir
    texts = [out, err, status.out, (services_dir / "services.sbatch").read_text(), *seen]
    texts += [p.read_text(errors="replace") for p in services_dir.glob("slurm-*.log")]
    job = project.bundle()["services"]["postgres"]["job_id"]
    texts.append(project.cluster.login.run(["scontrol", "show", "job", "-d", job]).out)
    assert not [t for t in texts if secret in t]
    assert oct((services_dir / "postgres.password").stat().st_mode & 0o777) == "0o600"


def test_status_checks_each_service_for_real_not_just_the_job(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    job = project.bundle()["services"]["atlas"]["job_id"]
    ready = json.loads((project.cluster_services_dir / f"ready-{job}.json").read_text())
    os.kill(ready["atlas_pid"], signal.SIGSTOP)  # the job still runs; its Atlas does not answer
    try:
        status = project.run("services", "status", "--json")
    finally:
        os.kill(ready["atlas_pid"], signal.SIGCONT)
    states = {s["name"]: s["state"] for s in json.loads(status.out)["services"]}
    assert status.code == 1 and states == {"postgres": "running", "atlas": "unhealthy"}


SWEEP = """
import metalab

@metalab.operation
def op(params, seeds, capture):
    capture.metric("y", params["x"] * 2)

exp = metalab.Experiment(name="onnode", version="1", operation=op, params=metalab.grid(x=[1, 2, 3]))
print(metalab.run(exp, store="discover", progress=False).result().succeeded)
"""


def test_discover_from_under_file_root_on_another_node_reaches_the_services(login_node):
    project, cluster = login_node, login_node.cluster
    up = project.run("services", "up")
    assert up.code == 0 and "postgres ready on" in up.err and "atlas ready on" in up.err
    services_node = project.bundle()["services"]["postgres"]["node"]
    other = next(name for name in cluster.info.nodes if name != services_node)
    work = project.file_root / "array-task"
    work.mkdir()
    (work / "sweep.py").write_text(SWEEP)
    done = cluster.host(other).run([project.python, "sweep.py"], cwd=work, home=project.home)  # no config at hand there
    assert done.code == 0 and done.out.split() == ["3"], done
    # the sweep only wrote files; the services job's Atlas follows them into the index
    def indexed() -> bool:
        try:
            return project.sql("SELECT count(*) FROM metalab.runs WHERE experiment_id = 'onnode-1'") == [[3]]
        except AssertionError:  # the indexer has not made the schema yet
            return False

    wait_until(indexed, 15, "the 3 runs in the services' index")
