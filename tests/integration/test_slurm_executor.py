"""``metalab.run(exp, executor=SlurmExecutor)`` on the multi-host cluster: arrays spread over both
compute nodes, submitted on the login node or from the workstation through the gateway.

The sweeps are researchers' scripts run as their own processes on their host (the operation
lives in the script, ``__main__``); the cluster runs with a small ``MaxArraySize`` (64) for this
module, so arrays really are split into chunks the site accepts. From the workstation the tasks
run as the gateway's user, and the store must be one the cluster can reach.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster_support import CLUSTER_ENV, ClusterInfo, gateway_python, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MAX_ARRAY_SIZE = 64
EXECUTOR = 'partition = "cpu"\ntime = "0:10:00"\nmemory = "200M"\n'

SWEEP = '''
import json, os, socket, sys, time
from pathlib import Path
import metalab
from metalab.errors import MetalabError

@metalab.operation
def square(params, seeds, capture):
    if Path("hold-{x}".format(x=params["x"])).exists():
        time.sleep(300)  # a run the test cancels behind metalab's back
    time.sleep(params.get("sleep", 0))
    capture.metric("y", params["x"] ** 2)
    capture.data("secret_env", sorted(set(os.environ) & {"METALAB_POSTGRES_PASSWORD", "PGPASSWORD"}))
    capture.data("node", socket.gethostname())
    capture.log("x is {}".format(params["x"]))

exp = metalab.Experiment(name=os.environ.get("EXP", "sweep"), version="1", operation=square,
                         params=metalab.grid(x=list(range(int(os.environ.get("RUNS", 1)))), sleep=[float(os.environ.get("SLEEP", 0))]))

def report(handle):
    return {"jobs": handle.job_ids, "ran": handle.ran, "skipped": handle.skipped, "in_flight": handle.in_flight,
            "submission": handle.submission, "experiment_dir": handle.experiment_dir}

if __name__ == "__main__":
    action, store = sys.argv[1], sys.argv[2]
    executor = metalab.resolve_executor("slurm", json.loads(os.environ.get("OVERRIDES", "{}")))
    try:
        if action == "submit":
            handle = metalab.run(exp, executor=executor, store=store, progress=False)
            print(json.dumps(report(handle)), flush=True)
            if "--wait" in sys.argv:
                results = handle.result()
                print(json.dumps({"results": [[r.params["x"], r.status, r.metrics.get("y"), r.started_at, r.duration]
                                              for r in results],
                                  "secret_env": sorted({name for r in results for name in r.data.get("secret_env", [])}),
                                  "nodes": sorted({r.data.get("node") for r in results})}))
        else:
            handle = metalab.reconnect(exp, store=store, executor=executor, progress=False)
            if action == "status":
                print(json.dumps({"status": handle.status, **handle.poll()}))
            elif action == "cancel":
                print(json.dumps({"cancelled": handle.cancel(), "status": handle.status}))
            else:
                try:
                    results = handle.result()
                    print(json.dumps({"results": [[r.params["x"], r.status, r.metrics.get("y")] for r in results]}))
                except metalab.TasksFailed as failed:
                    print(json.dumps({"failures": failed.failures, "recorded": len(failed.results), "error": str(failed)}))
    except MetalabError as error:
        print("error: " + str(error), file=sys.stderr)
        sys.exit(error.exit_code)
'''


UNGUARDED = '''
import metalab

@metalab.operation
def one(params, seeds, capture):
    capture.metric("y", 1)

exp = metalab.Experiment(name="noimport", version="2", operation=one, params=metalab.grid(x=[1, 2]))
metalab.run(exp, executor=metalab.resolve_executor("slurm"), store="{store}").result()
'''


def restart_cluster(cluster, max_array_size: int | None) -> None:
    env = {**os.environ}
    env.pop("METALAB_CLUSTER_MAX_ARRAY_SIZE", None)
    if max_array_size is not None:
        env["METALAB_CLUSTER_MAX_ARRAY_SIZE"] = str(max_array_size)
    subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "start"], env=env, check=True, capture_output=True, timeout=120)
    assert ClusterInfo.load(Path(os.environ[CLUSTER_ENV])).hosts == cluster.info.hosts  # the same hosts, restarted daemons


@pytest.fixture(scope="module", autouse=True)
def small_max_array_size(cluster):
    """The cluster with MaxArraySize = 64 for this module (slurmctld reads it at start), then as it was."""
    restart_cluster(cluster, MAX_ARRAY_SIZE)
    out = cluster.login.run(["scontrol", "show", "config"]).out
    assert f"MaxArraySize            = {MAX_ARRAY_SIZE}" in out
    yield MAX_ARRAY_SIZE
    restart_cluster(cluster, None)


def tasks_of(cluster, experiment: str, *, finished_too: bool = False) -> list[str]:
    """``job_task|state|name`` of ``experiment``'s array tasks in the queue (or ever known to SLURM)."""
    lines = cluster.squeue("-r", "-o", "%i|%T|%j", *(["-t", "all"] if finished_too else []))
    return [line for line in lines if f"|metalab-{experiment}-" in line]


class Sweep:
    """The researcher's script in a project, run as its own process on the project's host."""

    def __init__(self, project, *, store: str, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.store = store
        self.env = env or {}
        (project.root / "sweep.py").write_text(SWEEP)

    def run(self, action: str, *extra: str, timeout: float = 300, **env: str) -> tuple[int, dict, str]:
        done = self.project.python_script("sweep.py", action, self.store, *extra, env={**self.env, **env}, timeout=timeout)
        lines = [json.loads(line) for line in done.out.splitlines() if line.startswith("{")]
        merged = {key: value for line in lines for key, value in line.items()}
        return done.code, merged, done.err

    def popen(self, action: str, **env: str) -> subprocess.Popen:
        return self.project.host.popen([sys.executable, "sweep.py", action, self.store], cwd=self.project.root,
                                       env={**self.env, **env}, home=self.project.home)


@pytest.fixture(autouse=True)
def no_array_left_behind(cluster):
    """Whatever a test leaves queued (it fails an assertion first) is cancelled after it."""
    yield
    jobs = {line.split("|")[0] for line in cluster.squeue("-o", "%A|%j")
            if line.split("|")[1].startswith("metalab-") and not line.split("|")[1].startswith("metalab-services-")}
    if jobs:
        cluster.scancel(*sorted(jobs))


@pytest.fixture
def login_node(make_cluster_project):
    """A project on the login node: sbatch runs there, tasks run as root."""
    project = make_cluster_project("login")
    project.write_config(services=False, executor=EXECUTOR)
    return project


@pytest.fixture
def workstation(make_cluster_project):
    """A project on the workstation: everything goes through the gateway, tasks run as its user."""
    project = make_cluster_project("ws")
    project.write_config(services=False, executor=EXECUTOR)
    return project


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def test_200_runs_in_chunks_over_both_nodes_never_more_than_four_at_once(login_node):
    cluster = login_node.cluster
    store = str(login_node.file_root / "store")
    sweep = Sweep(login_node, store=store, env={"EXP": "capped", "RUNS": "200", "SLEEP": "0.2",
                                                "OVERRIDES": json.dumps({"max_concurrent": 4})})
    running: list[int] = []
    nodes: set[str] = set()
    waits_for: dict[str, str] = {}  # array job id -> its dependency, as squeue shows it while pending
    stop = threading.Event()

    def sample() -> None:  # the cap as SLURM reports it, across every chunk, while the sweep runs
        while not stop.is_set():
            lines = cluster.squeue("-r", "-t", "running", "-o", "%j|%N")
            mine = [line.split("|")[1] for line in lines if line.startswith("metalab-capped-")]
            running.append(len(mine))
            nodes.update(mine)
            for line in cluster.squeue("-t", "pending", "-o", "%F|%E|%j"):
                job, dependency, name = line.split("|")
                if name.startswith("metalab-capped-") and dependency != "(null)":
                    waits_for[job] = dependency
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code, out, err = sweep.run("submit", "--wait", timeout=600)
    finally:
        stop.set()
        sampler.join()
    assert code == 0, err
    chunks = out["submission"]["chunks"]
    assert [count for _, _, count in chunks] == [64, 64, 64, 8] and out["submission"]["max_array_size"] == MAX_ARRAY_SIZE
    assert [offset for _, offset, _ in chunks] == [0, 64, 128, 192] and len(set(out["jobs"])) == 4
    results = out["results"]
    assert len(results) == 200 and {status for _, status, *_ in results} == {"success"}
    assert [(x, y) for x, _, y, *_ in results] == [(x, x * x) for x in range(200)]
    assert max(running) <= 4 and max(running) >= 3, running
    overlap = max_overlap([(start, start + duration) for *_, start, duration in results])
    assert 2 <= overlap <= 4
    assert out["nodes"] == ["cn1", "cn2"] and nodes == {"cn1", "cn2"}  # the tasks ran on both compute nodes
    # each chunk after the first waited for the one before it (one cap across all of them)
    for (job, _, _), (previous, _, _) in zip(chunks[1:], chunks):
        assert waits_for[job].startswith(f"afterany:{previous}"), waits_for
    assert chunks[0][0] not in waits_for
    # a second run finds everything done and queues nothing
    code, again, err = sweep.run("submit")
    assert code == 0 and again["ran"] == 0 and again["skipped"] == 200 and again["jobs"] == []


def test_a_task_cancelled_behind_metalabs_back_is_reported_then_resubmitted_alone(login_node):
    cluster, root = login_node.cluster, login_node.root
    store = str(login_node.file_root / "store")
    sweep = Sweep(login_node, store=store, env={"EXP": "lost", "RUNS": "6"})
    (root / "hold-3").write_text("")
    code, out, err = sweep.run("submit")  # the submitting process exits at once
    assert code == 0 and out["ran"] == 6, err
    job = out["jobs"][0]
    wait_until(lambda: f"{job}_3|RUNNING" in "\n".join(tasks_of(cluster, "lost")), 120, "task 3 to run")
    code, status, err = sweep.run("status")
    assert code == 0 and status["status"] == "running", err
    cluster.scancel(f"{job}_3")
    code, out, err = sweep.run("result")  # reconnect from another process
    assert code == 0, err
    [failure] = out["failures"]
    assert failure["task"] == f"{job}_3" and len(failure["runs"]) == 1 and failure["state"] == "CANCELLED"
    assert Path(failure["log"]).is_file() and out["recorded"] == 5
    assert failure["runs"][0] in out["error"] and "metalab.run() again" in out["error"]
    code, status, err = sweep.run("status")
    assert status["status"] == "incomplete"
    (root / "hold-3").unlink()
    code, again, err = sweep.run("submit", "--wait")
    assert code == 0, err
    assert again["ran"] == 1 and again["skipped"] == 5 and again["submission"]["chunks"][0][2] == 1
    assert sorted(x for x, status, *_ in again["results"] if status == "success") == list(range(6))


def test_cancel_and_no_double_submission_while_in_flight(login_node):
    cluster, root = login_node.cluster, login_node.root
    # on the login node a relative store is the submitting directory's, as for a local run
    sweep = Sweep(login_node, store="experiments", env={"EXP": "held", "RUNS": "3"})
    for x in range(3):
        (root / f"hold-{x}").write_text("")
    code, first, err = sweep.run("submit")
    assert code == 0 and first["ran"] == 3, err
    assert first["experiment_dir"] == str(root / "experiments" / "held-1")
    code, second, err = sweep.run("submit")
    assert code == 0 and second["ran"] == 0 and second["in_flight"] == 3 and second["jobs"] == []
    code, out, err = sweep.run("cancel")
    assert code == 0 and out["cancelled"] == first["jobs"] and out["status"] == "incomplete", err
    assert tasks_of(cluster, "held") == []


@pytest.mark.parametrize("side", ["login", "ws"])
def test_ctrl_c_while_queueing_leaves_no_job_and_no_submission(side, make_cluster_project):
    """10,000 runs under MaxArraySize 64 are 157 sbatch calls: interrupted after the first few."""
    project = make_cluster_project(side)
    project.write_config(services=False, executor=EXECUTOR)
    cluster = project.cluster
    store = project.file_root / "store"
    sweep = Sweep(project, store=str(store), env={"EXP": "interrupted", "RUNS": "10000"})
    proc = sweep.popen("submit")
    deadline = time.monotonic() + 120
    while len({line.split("_")[0] for line in tasks_of(cluster, "interrupted")}) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, (out, err)
    wait_until(lambda: tasks_of(cluster, "interrupted") == [], 10, "the queued chunks to be cancelled")
    assert not list((store / "interrupted-1" / "slurm").glob("*/submission.json"))


def test_scripts_whose_operation_cannot_be_imported_are_refused_before_anything_is_queued(login_node):
    cluster, root = login_node.cluster, login_node.root
    python_without_pandas = gateway_python()  # metalab without its test extras
    store = login_node.file_root / "store"
    # 1. a module-level import the cluster's python does not have
    (root / "sweep_np.py").write_text(SWEEP.replace("import metalab\n", "import metalab\nimport pandas\n", 1))
    done = login_node.python_script("sweep_np.py", "submit", str(store), env={
        "EXP": "noimport", "RUNS": "3", "OVERRIDES": json.dumps({"python": python_without_pandas})})
    assert done.code == 2, done
    assert done.err.startswith("error: cannot import operation from") and "nothing was queued" in done.err
    assert "No module named 'pandas'" in done.err and "\n" not in done.err.strip()
    # 2. an unguarded metalab.run() at module level: each task would submit the sweep again
    (root / "sweep_unguarded.py").write_text(UNGUARDED.format(store=store))
    done = login_node.python_script("sweep_unguarded.py")
    last = done.err.strip().splitlines()[-1]
    assert done.code == 1 and last.startswith("metalab.executor.slurm_cluster.SpecError: metalab.run() was called "
                                               "while a SLURM task imported"), done
    assert 'if __name__ == "__main__"' in last and "nothing was queued" in last
    assert tasks_of(cluster, "noimport") == [] and tasks_of(cluster, "noimport", finished_too=True) == []
    for version in (1, 2):
        assert not list((store / f"noimport-{version}" / "slurm").glob("*"))  # no submission left behind


def test_postgres_store_discovered_from_inside_the_tasks_on_both_nodes(make_cluster_project):
    project = make_cluster_project("login")
    project.write_config(atlas=False, executor=EXECUTOR)
    up = project.run("services", "up")
    assert up.code == 0, up
    # a password kept in the environment does not travel into the jobs (sbatch would copy it)
    sweep = Sweep(project, store="discover", env={"EXP": "indexed", "RUNS": "12", "PGPASSWORD": "not-for-jobs",
                                                  "METALAB_POSTGRES_PASSWORD": project.password()})
    code, out, err = sweep.run("submit", "--wait")
    assert code == 0, err
    assert out["secret_env"] == [] and out["nodes"] == ["cn1", "cn2"]
    assert sorted(x for x, status, *_ in out["results"] if status == "success") == list(range(12))
    rows = project.sql("SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM metalab.runs "
                       "WHERE experiment_id = 'indexed-1'")
    assert rows == [[12, 12]]
    password = project.password()
    submission = Path(out["experiment_dir"]) / "slurm" / out["submission"]["submission_id"]
    spec = json.loads((submission / "spec.json").read_text())
    assert spec["store"] == "discover"
    for path in submission.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path
    assert password not in out["experiment_dir"] + err


def test_from_the_workstation_through_the_gateway(workstation):
    project = workstation
    user = pwd.getpwnam(project.cluster.info.gateway_user)
    project.write_config(services=False, executor=EXECUTOR + "max_concurrent = 2\n")
    store = project.file_root / "store"
    sweep = Sweep(project, store=str(store), env={"EXP": "remote", "RUNS": "10"})
    code, out, err = sweep.run("submit")
    assert code == 0 and out["ran"] == 10, err
    submission = Path(out["experiment_dir"]) / "slurm" / out["submission"]["submission_id"]
    assert (submission / "operation.py").read_text() == SWEEP  # the script travelled with the submission
    assert submission.stat().st_uid == user.pw_uid  # written on the cluster, as the gateway's user
    code, result, err = sweep.run("result")  # another process, after the submitting one has exited
    assert code == 0, err
    assert [(x, status, y) for x, status, y in result["results"]] == [(x, "success", x * x) for x in range(10)]
    log = submission / "logs" / f"{out['jobs'][0]}_0.log"
    assert "metalab task 0" in log.read_text()
    records = list((store / "remote-1" / "runs").glob("*.jsonl"))
    assert records and all(path.stat().st_uid == user.pw_uid for path in records)  # the tasks ran as the gateway user
    code, status, err = sweep.run("status")
    assert code == 0 and status["status"] == "done" and status["recorded"] == 10
    # a relative store would mean the gateway user's home: refused
    bad = Sweep(project, store="experiments", env=sweep.env)
    code, out, err = bad.run("submit")
    assert code == 2 and "not a place the cluster can reach" in err


def test_runs_of_tasks_killed_mid_way_reach_the_services_index_with_no_rerun(make_cluster_project):
    """The services job's Atlas follows the records of array tasks killed with SIGKILL (nothing
    flushed, nothing said) into the index; no rerun, load_results or rebuild_index. (scancel
    would not do: SLURM sends the task's Python SIGTERM, and it unwinds.)"""
    project = make_cluster_project("login")
    project.write_config(executor=EXECUTOR + "runs_per_task = 8\n")  # two tasks, one on each node
    up = project.run("services", "up")
    assert up.code == 0, up
    sweep = Sweep(project, store="discover", env={"EXP": "killed", "RUNS": "16", "SLEEP": "0.4"})
    code, out, err = sweep.run("submit")
    assert code == 0 and out["ran"] == 16, err
    runs_dir = Path(out["experiment_dir"]) / "runs"

    def recorded() -> list[int]:
        return [path.read_bytes().count(b"\n") for path in runs_dir.glob("*.jsonl")]

    wait_until(lambda: len([n for n in recorded() if n >= 2]) == 2, 120, "both tasks half-way")
    # as the kernel's OOM killer would: SIGKILL to each task's worker process, mid-way
    killed = subprocess.run(["pkill", "-KILL", "-f", f"metalab.executor.worker {runs_dir.parent}/slurm/"], check=False)
    assert killed.returncode == 0
    wait_until(lambda: tasks_of(project.cluster, "killed") == [], 60, "the killed tasks to leave the queue")
    on_disk = len(metalab_files(runs_dir.parent))
    assert 4 <= on_disk < 16
    wait_until(lambda: project.sql("SELECT count(*) FROM metalab.runs WHERE experiment_id = 'killed-1'") == [[on_disk]],
               15, f"the index to hold the {on_disk} runs in the files")


def metalab_files(experiment_dir: Path) -> dict:
    from metalab.store import FileStore

    return FileStore(experiment_dir.parent).load(experiment_dir.name)


CATCHING = '''
import sys
import metalab
from metalab.errors import ConfigError

@metalab.operation
def one(params, seeds, capture):
    capture.metric("y", 1)

exp = metalab.Experiment(name="caught", version="1", operation=one, params=metalab.grid(x=[1]))
if __name__ == "__main__":
    try:
        metalab.run(exp, executor=metalab.resolve_executor("slurm"), store=sys.argv[1], progress=False)
    except ConfigError as error:  # raised on the gateway, caught here as the very class
        print("caught", type(error).__module__, type(error).__name__, error.exit_code)
'''


def test_an_error_raised_on_the_gateway_is_the_same_class_on_the_workstation(workstation):
    (workstation.root / "catching.py").write_text(CATCHING)
    bad_store = "postgresql://metalab@10.97.0.11:5432/metalab"  # no ?file_root: the gateway refuses it
    done = workstation.python_script("catching.py", bad_store)
    assert done.code == 0 and done.out.split() == ["caught", "metalab.errors", "ConfigError", "2"], done
