"""examples/experiment-file run for real: local.yaml into ``store: discover`` after ``services up``,
and slurm.yaml as job arrays on the multi-host cluster from the workstation (run, status,
results, --detach then cancel, Ctrl+C that cancels)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from cluster_support import wait_until
from metalab.experiment_file import load_experiment_file

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "experiment-file"
EXECUTOR = 'partition = "cpu"\ntime = "0:10:00"\nmemory = "200M"\n'
SLOW = '''
import time
import metalab

@metalab.operation
def train(params, seeds, capture):
    time.sleep(120)
    capture.metric("final_loss", 0.0)
'''


def test_the_local_example_runs_into_the_services_store_from_anywhere(project, tmp_path):
    for name in ("train.py", "local.yaml"):
        shutil.copy(EXAMPLE / name, project.root / name)
    up = project.run("services", "up")
    assert up.code == 0, up
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = project.run("run", str(project.root / "local.yaml"), cwd=elsewhere)
    assert done.code == 0, done
    assert "store: PostgresStore postgresql://metalab@127.0.0.1:" in done.err and "executor: 2 worker processes" in done.err
    assert done.out.strip().startswith("experiment-file-demo-1: 18 runs recorded, 18 succeeded, 0 failed")
    assert (project.root / "runs" / "experiment-file-demo-1").is_dir()  # under the profile's file_root
    expected = {s.run_id for s in load_experiment_file(project.root / "local.yaml").experiment.runs()}

    def indexed() -> set[str]:
        import psycopg

        with project.connect() as conn:
            try:
                return {row[0] for row in conn.execute(
                    "SELECT run_id FROM metalab.runs WHERE experiment_id = 'experiment-file-demo-1' AND status = 'success'")}
            except psycopg.errors.UndefinedTable:  # Atlas's indexer has not made its first pass yet
                return set()

    wait_until(lambda: indexed() == expected, 30, "the sweep's 18 runs in the index")
    rows = json.loads(project.run("results", "local.yaml", "--json").out)
    assert {r["run_id"] for r in rows} == expected and all(r["status"] == "success" for r in rows)
    dry = project.run("run", "local.yaml", "--dry")
    assert "runs: 18 total, 18 already done, 0 to run" in dry.out, dry


@pytest.fixture
def slurm_project(make_cluster_project):
    """The example's files in a workstation project whose slurm profile names the gateway."""
    project = make_cluster_project("ws")
    project.write_config(executor=EXECUTOR)
    for name in ("train.py", "slurm.yaml"):
        shutil.copy(EXAMPLE / name, project.root / name)
    (project.root / "slow_train.py").write_text(SLOW)
    return project


def live_jobs(cluster, experiment_id: str) -> list[str]:
    return [line for line in cluster.squeue("-o", "%i|%j") if f"metalab-{experiment_id}-" in line]


def test_the_slurm_example_runs_as_job_arrays_from_the_workstation(slurm_project):
    project = slurm_project
    store = f"store={project.file_root}/exps"  # on the cluster; the workstation cannot see it
    dry = project.run("run", "slurm.yaml", store, "--dry")
    assert dry.code == 0, dry
    assert "  partition       cpu " in dry.out and ".metalab.toml [environments.slurm.executor]" in dry.out
    assert "  max_concurrent  8 " in dry.out and "slurm.yaml:27" in dry.out and "  gateway         login " in dry.out

    done = project.run("run", "slurm.yaml", store, timeout=300)
    assert done.code == 0, done
    assert "queued 1 array job(s) on " in done.err and "runs: 16/16" in done.err and "\r" not in done.err
    assert done.out.strip().startswith("experiment-file-demo-slurm-1: 16 runs recorded, 16 succeeded, 0 failed")
    python_ids = [s.run_id for s in load_experiment_file(project.root / "slurm.yaml").experiment.runs()]
    rows = json.loads(project.run("results", "slurm.yaml", store, "--json").out)
    assert sorted(r["run_id"] for r in rows) == sorted(python_ids) and {r["status"] for r in rows} == {"success"}
    status = json.loads(project.run("status", "slurm.yaml", store, "--json").out)
    assert (status["recorded"], status["failed"], status["live_tasks"]) == (16, 0, 0) and status["tasks"], status
    again = project.run("run", "slurm.yaml", store, timeout=300)
    assert again.code == 0 and "16 already done" in again.err, again


def test_detach_then_status_and_cancel_from_the_workstation(slurm_project):
    project, cluster = slurm_project, slurm_project.cluster
    slow = (f"store={project.file_root}/exps", "operation=slow_train:train", "name=slow-sweep")
    submitted = project.run("run", "slurm.yaml", *slow, "--detach")
    assert submitted.code == 0, submitted
    assert "follow with `metalab status slurm.yaml`, stop with `metalab cancel slurm.yaml`" in submitted.out
    assert live_jobs(cluster, "slow-sweep-1")
    status = json.loads(project.run("status", "slurm.yaml", *slow, "--json").out)
    assert status["live_tasks"] == 16 and status["recorded"] == 0, status
    cancelled = project.run("cancel", "slurm.yaml", *slow)
    assert cancelled.code == 0 and cancelled.out.startswith("cancelled array jobs "), cancelled
    assert live_jobs(cluster, "slow-sweep-1") == []
    after = json.loads(project.run("status", "slurm.yaml", *slow, "--json").out)
    assert after["live_tasks"] == 0 and after["recorded"] == 0


def test_ctrl_c_while_following_cancels_the_submission(slurm_project):
    project, cluster = slurm_project, slurm_project.cluster
    follow = project.popen("run", "slurm.yaml", f"store={project.file_root}/exps", "operation=slow_train:train",
                           "name=interrupted-sweep")
    try:
        wait_until(lambda: live_jobs(cluster, "interrupted-sweep-1"), 120, "the arrays queued")
        time.sleep(1)  # past submission, into following
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode != 0 and "interrupted: cancelled array jobs " in err, err
    assert live_jobs(cluster, "interrupted-sweep-1") == []
