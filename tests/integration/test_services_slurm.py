"""``metalab services`` on SLURM, against the real single-node cluster and the loopback gateway.

Two ways in, as researchers have them: on the login node itself (sbatch runs here) and from a
workstation through the gateway over SSH (the loopback sshd of scripts/cluster.sh).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import gateway_file_root, gateway_python, services_job, slurm_config, squeue, stop_services

from metalab.procs import process_start

pytestmark = pytest.mark.integration



@pytest.fixture
def login_node(project, slurm_cluster):
    """A project whose cluster commands run on this machine (the login node)."""
    (project.root / ".metalab.toml").write_text(slurm_config(project, gateway=None, python=sys.executable))
    project.slurm_job = services_job(project)
    yield project
    stop_services(project)


@pytest.fixture
def workstation(project, ssh_gateway):
    """A project that reaches the cluster through the SSH gateway; jobs run as the gateway's user."""
    python = gateway_python()
    gateway_file_root(project, ssh_gateway)
    (project.root / ".metalab.toml").write_text(slurm_config(project, gateway=ssh_gateway.host, python=python))
    project.slurm_job = services_job(project)
    project.extra_env = {"METALAB_SSH_CONFIG": str(ssh_gateway.ssh_config)}
    yield project
    stop_services(project, env=project.extra_env)


def local_bundle(project) -> dict:
    return json.loads((project.home / ".metalab" / "services" / "slurm" / "bundle.json").read_text())


def test_up_status_down_on_the_login_node_keeps_the_data(login_node):
    project = login_node
    up = project.run("services", "up")
    assert up.code == 0, up.err
    assert re.search(r"slurm: submitted job \d+", up.err) and "RUNNING" in up.err
    bundle = project.bundle()
    pg, atlas = bundle["services"]["postgres"], bundle["services"]["atlas"]
    assert pg["job_id"] == atlas["job_id"] and pg["node"] and atlas["token"] and bundle["tunnel"] is None
    assert [line.split("|")[1] for line in squeue(project.slurm_job)] == ["RUNNING"]
    status = project.run("services", "status", "--json")
    assert status.code == 0 and {s["state"] for s in json.loads(status.out)["services"]} == {"running"}
    # Atlas on a node demands its token
    assert project.http_get("/api/health", port=atlas["port"])[0] == 403
    assert project.http_get(f"/api/health?token={atlas['token']}", port=atlas["port"])[0] == 200
    with project.connect() as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    down = project.run("services", "down")
    assert down.code == 0 and not project.bundle_path.exists()
    assert squeue(project.slurm_job) == []  # down waits until the job has left the queue
    assert project.run("services", "up").code == 0
    with project.connect() as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]


def test_reuse_and_a_job_cancelled_behind_metalabs_back(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    first = project.bundle()["services"]["postgres"]["job_id"]
    again = project.run("services", "up")
    assert "reusing" in again.err and project.bundle()["services"]["postgres"]["job_id"] == first
    subprocess.run(["scancel", first], check=True)
    deadline = time.monotonic() + 30
    while squeue(project.slurm_job) and time.monotonic() < deadline:
        time.sleep(0.2)
    status = project.run("services", "status")
    assert status.code == 1 and "stopped" in status.out
    replaced = project.run("services", "up")
    assert replaced.code == 0 and "stale" in replaced.err
    assert project.bundle()["services"]["postgres"]["job_id"] != first


def test_a_job_that_cannot_start_is_a_clear_error_and_leaves_nothing(project, slurm_cluster):
    (project.root / ".metalab.toml").write_text(
        slurm_config(project, gateway=None, python=sys.executable, partition="no-such-partition"))
    result = project.run("services", "up")
    assert result.code == 1 and "sbatch failed" in result.err and "partition" in result.err.lower()
    assert len(result.err.strip().splitlines()) <= 2
    assert not project.bundle_path.exists()
    assert squeue(services_job(project)) == []


def test_ctrl_c_while_waiting_cancels_the_job(login_node):
    project = login_node
    proc = project.popen("services", "up", start_new_session=True)
    deadline = time.monotonic() + 30
    while not squeue(project.slurm_job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert squeue(project.slurm_job), "the job was never submitted"
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert squeue(project.slurm_job) == [] and not project.bundle_path.exists()


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
    assert result.code == 0, result.err
    assert "#SBATCH --job-name=" in result.err and "-m metalab.services.node" in result.err
    assert "would run on this machine: sbatch --parsable" in result.err
    assert squeue(project.slurm_job) == [] and not (project.root / "runs").exists()


def test_through_the_gateway_with_a_tunnel(workstation):
    project = workstation
    env = project.extra_env
    up = project.run("services", "up", env=env)
    assert up.code == 0, up.err
    assert "on slurmgw@testgw" in up.err or "@" in up.err
    bundle = local_bundle(project)
    tunnel = bundle["tunnel"]
    assert tunnel["gateway"] == "testgw" and {f["service"] for f in tunnel["forwards"]} == {"postgres", "atlas"}
    # the cluster has its own copy, with the node's address, for jobs that discover it
    cluster_copy = json.loads((project.root / "runs" / "services" / "bundle.json").read_text())
    assert cluster_copy["services"]["postgres"]["password_file"].startswith(str(project.root / "runs"))
    assert project.run("services", "status", env=env).code == 0
    printed = project.run("tunnel", "--print", env=env)
    assert printed.out.startswith("ssh -N") and "testgw" in printed.out
    proc = project.popen("tunnel", env=env, start_new_session=True)
    try:
        token = bundle["services"]["atlas"]["token"]
        deadline = time.monotonic() + 20
        code = None
        while time.monotonic() < deadline:
            try:
                code = project.http_get(f"/api/health?token={token}")[0]
            except OSError:  # the forward is not listening yet
                code = None
            if code == 200:
                break
            time.sleep(0.2)
        assert code == 200  # Atlas on localhost at the configured port, through ssh -L
        store = json.loads((project.home / ".metalab" / "services" / "slurm" / "bundle.json").read_text())["store_locator"]
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", store).group(1))
        password = (project.home / ".metalab" / "services" / "slurm" / "postgres.password").read_text().strip()
        with psycopg.connect(host="127.0.0.1", port=port, user="metalab", dbname="metalab", password=password) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    down = project.run("services", "down", env=env)
    assert down.code == 0 and squeue(project.slurm_job) == []
    assert not (project.root / "runs" / "services" / "bundle.json").exists()


def test_no_secret_in_the_script_the_log_the_output_or_a_command_line(login_node):
    project = login_node
    secret = "slurm-Sekr1t-" + os.urandom(4).hex()
    (project.root / ".metalab.local.toml").write_text(f'[services.postgres]\npassword = "{secret}"\n')
    seen: list[str] = []
    proc = project.popen("services", "up")
    while proc.poll() is None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                seen.append(cmdline.read_bytes().decode(errors="replace"))
            except OSError:
                pass
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    status = project.run("services", "status", "--json")
    services_dir = project.root / "runs" / "services"
    texts = [out, err, status.out, (services_dir / "services.sbatch").read_text(), *seen]
    texts += [p.read_text(errors="replace") for p in services_dir.glob("slurm-*.log")]
    texts.append(subprocess.run(["scontrol", "show", "job", "-d", project.bundle()["services"]["postgres"]["job_id"]],
                                capture_output=True, text=True).stdout)
    assert not [t for t in texts if secret in t]
    assert oct((services_dir / "postgres.password").stat().st_mode & 0o777) == "0o600"


def test_status_checks_each_service_for_real_not_just_the_job(login_node):
    project = login_node
    assert project.run("services", "up").code == 0
    job = project.bundle()["services"]["atlas"]["job_id"]
    ready = json.loads((project.root / "runs" / "services" / f"ready-{job}.json").read_text())
    os.kill(ready["atlas_pid"], signal.SIGKILL)  # the job still runs; its Atlas does not answer
    deadline = time.monotonic() + 10
    while process_start(ready["atlas_pid"]) is not None and time.monotonic() < deadline:  # gone or a zombie
        time.sleep(0.1)
    status = project.run("services", "status", "--json")
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


def test_discover_from_under_file_root_reaches_the_node(login_node):
    project = login_node
    up = project.run("services", "up")
    assert up.code == 0 and "postgres ready on" in up.err and "atlas ready on" in up.err
    work = project.root / "runs" / "array-task"
    work.mkdir()
    (work / "sweep.py").write_text(SWEEP)
    done = subprocess.run([sys.executable, "sweep.py"], cwd=work, env=project.environ(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.split() == ["3"], done.stderr
    with project.connect() as conn:
        assert conn.execute("SELECT count(*) FROM metalab.runs WHERE experiment_id = 'onnode-1'").fetchone() == (3,)
