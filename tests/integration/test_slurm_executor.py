"""``metalab.run(exp, executor=SlurmExecutor)`` against the real single-node cluster.

The sweeps are researchers' scripts run as their own processes (the operation lives in the
script, ``__main__``); the cluster runs with a small ``MaxArraySize`` (64) for this module, so
arrays really are split into chunks the site accepts. From a workstation, everything goes
through the loopback SSH gateway and the tasks run as the gateway's user.
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
from conftest import gateway_file_root, gateway_python, slurm_config, stop_services

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MAX_ARRAY_SIZE = 64
EXECUTOR = 'partition = "cpu"\ntime = "0:10:00"\nmemory = "200M"\n'

SWEEP = '''
import json, os, sys, time
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
                                  "secret_env": sorted({name for r in results for name in r.data.get("secret_env", [])})}))
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


def restart_cluster(max_array_size: int | None) -> None:
    env = {**os.environ}
    env.pop("METALAB_CLUSTER_MAX_ARRAY_SIZE", None)
    if max_array_size is not None:
        env["METALAB_CLUSTER_MAX_ARRAY_SIZE"] = str(max_array_size)
    subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "start"], env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module", autouse=True)
def small_max_array_size(slurm_cluster):
    """The cluster with MaxArraySize = 64 for this module (slurmctld reads it at start), then as it was."""
    restart_cluster(MAX_ARRAY_SIZE)
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert f"MaxArraySize            = {MAX_ARRAY_SIZE}" in out
    yield MAX_ARRAY_SIZE
    restart_cluster(None)


def tasks_of(experiment: str, *, finished_too: bool = False) -> list[str]:
    """``job_task|state|name`` of ``experiment``'s array tasks in the queue (or ever known to SLURM)."""
    argv = ["squeue", "-h", "-r", "-o", "%i|%T|%j", *(["-t", "all"] if finished_too else [])]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line for line in out.split() if f"|metalab-{experiment}-" in line]


class Sweep:
    """The researcher's script in a project, run as its own process."""

    def __init__(self, project, *, store: str, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.store = store
        self.env = env or {}
        (project.root / "sweep.py").write_text(SWEEP)

    def run(self, action: str, *extra: str, timeout: float = 300, **env: str) -> tuple[int, dict, str]:
        done = subprocess.run(
            [sys.executable, "sweep.py", action, self.store, *extra], cwd=self.project.root,
            env=self.project.environ({**self.env, **env}), capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        merged = {key: value for line in lines for key, value in line.items()}
        return done.returncode, merged, done.stderr


@pytest.fixture(autouse=True)
def no_array_left_behind(slurm_cluster):
    """Whatever a test leaves queued (it fails an assertion first) is cancelled after it."""
    yield
    out = subprocess.run(["squeue", "-h", "-o", "%A|%j"], capture_output=True, text=True, check=True).stdout
    jobs = {line.split("|")[0] for line in out.split() if line.split("|")[1].startswith("metalab-")
            and not line.split("|")[1].startswith("metalab-services-")}  # fmt: skip
    if jobs:
        subprocess.run(["scancel", *sorted(jobs)], check=False)


@pytest.fixture
def login_node(project, slurm_cluster):
    """A project on the login node: sbatch runs here, tasks run as us."""
    (project.root / ".metalab.toml").write_text(
        slurm_config(project, gateway=None, python=sys.executable, services=False, executor=EXECUTOR))
    return project


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def test_200_runs_in_chunks_never_more_than_four_at_once(login_node):
    store = str(login_node.root / "runs" / "store")
    sweep = Sweep(login_node, store=store, env={"EXP": "capped", "RUNS": "200", "SLEEP": "0.3",
                                                "OVERRIDES": json.dumps({"max_concurrent": 4})})  # fmt: skip
    running: list[int] = []
    waits_for: dict[str, str] = {}  # array job id -> its dependency, as squeue shows it while pending
    stop = threading.Event()

    def sample() -> None:  # the cap as SLURM reports it, across every chunk, while the sweep runs
        while not stop.is_set():
            out = subprocess.run(["squeue", "-h", "-r", "-t", "running", "-o", "%j"], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
            running.append(sum(1 for name in out.split() if name.startswith("metalab-capped-")))
            out = subprocess.run(["squeue", "-h", "-t", "pending", "-o", "%F|%E|%j"], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
            for line in out.split():
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
    # each chunk after the first waited for the one before it (one cap across all of them)
    for (job, _, _), (previous, _, _) in zip(chunks[1:], chunks):
        assert waits_for[job].startswith(f"afterany:{previous}"), waits_for
    assert chunks[0][0] not in waits_for
    # a second run finds everything done and queues nothing
    code, again, err = sweep.run("submit")
    assert code == 0 and again["ran"] == 0 and again["skipped"] == 200 and again["jobs"] == []


def test_a_task_cancelled_behind_metalabs_back_is_reported_then_resubmitted_alone(login_node):
    root = login_node.root
    store = str(root / "runs" / "store")
    sweep = Sweep(login_node, store=store, env={"EXP": "lost", "RUNS": "6"})
    (root / "hold-3").write_text("")
    code, out, err = sweep.run("submit")  # the submitting process exits at once
    assert code == 0 and out["ran"] == 6, err
    job = out["jobs"][0]
    deadline = time.monotonic() + 120
    while f"{job}_3|RUNNING" not in "\n".join(tasks_of("lost")):
        assert time.monotonic() < deadline, tasks_of("lost")
        time.sleep(0.2)
    code, status, err = sweep.run("status")
    assert code == 0 and status["status"] == "running", err
    subprocess.run(["scancel", f"{job}_3"], check=True)
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
    root = login_node.root
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
    assert tasks_of("held") == []


@pytest.mark.parametrize("side", ["login node", "workstation"])
def test_ctrl_c_while_queueing_leaves_no_job_and_no_submission(side, project, ssh_gateway):
    """10,000 runs under MaxArraySize 64 are 157 sbatch calls: interrupted after the first few."""
    env = {"EXP": "interrupted", "RUNS": "10000"}
    if side == "login node":
        config = slurm_config(project, gateway=None, python=sys.executable, services=False, executor=EXECUTOR)
    else:
        gateway_file_root(project, ssh_gateway)
        config = slurm_config(project, gateway=ssh_gateway.host, python=gateway_python(), services=False, executor=EXECUTOR)
        env["METALAB_SSH_CONFIG"] = str(ssh_gateway.ssh_config)
    (project.root / ".metalab.toml").write_text(config)
    (project.root / "sweep.py").write_text(SWEEP)
    store = project.root / "runs" / "store"
    proc = subprocess.Popen([sys.executable, "sweep.py", "submit", str(store)], cwd=project.root,
                            env=project.environ(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while len({line.split("_")[0] for line in tasks_of("interrupted")}) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, (out, err)
    time.sleep(1)  # the gateway side stops at its next chunk
    assert tasks_of("interrupted") == []
    assert not list((store / "interrupted-1" / "slurm").glob("*/submission.json"))


def test_scripts_whose_operation_cannot_be_imported_are_refused_before_anything_is_queued(login_node):
    root = login_node.root
    python_without_numpy = gateway_python()
    store = root / "runs" / "store"
    # 1. a module-level import the cluster's python does not have
    (root / "sweep_np.py").write_text(SWEEP.replace("import metalab\n", "import metalab\nimport numpy\n", 1))
    env = login_node.environ({"EXP": "noimport", "RUNS": "3",
                              "OVERRIDES": json.dumps({"python": python_without_numpy})})  # fmt: skip
    done = subprocess.run([sys.executable, "sweep_np.py", "submit", str(store)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot import operation from") and "nothing was queued" in done.stderr and "No module named 'numpy'" in done.stderr
    assert "\n" not in done.stderr.strip()
    # 2. an unguarded metalab.run() at module level: each task would submit the sweep again
    (root / "sweep_unguarded.py").write_text(UNGUARDED.format(store=store))
    done = subprocess.run([sys.executable, "sweep_unguarded.py"], cwd=root, env=login_node.environ(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("metalab.executor.slurm_cluster.SpecError: metalab.run() was called "
                                                     "while a SLURM task imported"), done.stderr
    assert 'if __name__ == "__main__"' in last and "nothing was queued" in last
    assert tasks_of("noimport") == [] and tasks_of("noimport", finished_too=True) == []
    for version in (1, 2):
        assert not list((store / f"noimport-{version}" / "slurm").glob("*"))  # no submission left behind


def test_postgres_store_discovered_from_inside_the_tasks(project, slurm_cluster):
    (project.root / ".metalab.toml").write_text(
        slurm_config(project, gateway=None, python=sys.executable, atlas=False, executor=EXECUTOR))
    try:
        up = project.run("services", "up")
        assert up.code == 0, up.err
        # a password kept in the environment does not travel into the jobs (sbatch would copy it)
        sweep = Sweep(project, store="discover", env={"EXP": "indexed", "RUNS": "12", "PGPASSWORD": "not-for-jobs",
                                                       "METALAB_POSTGRES_PASSWORD": project.password()})  # fmt: skip
        code, out, err = sweep.run("submit", "--wait")
        assert code == 0, err
        assert out["secret_env"] == []
        assert sorted(x for x, status, *_ in out["results"] if status == "success") == list(range(12))
        with project.connect() as conn:
            rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM metalab.runs "
                                "WHERE experiment_id = 'indexed-1'").fetchone()  # fmt: skip
        assert rows == (12, 12)
        password = project.password()
        submission = Path(out["experiment_dir"]) / "slurm" / out["submission"]["submission_id"]
        spec = json.loads((submission / "spec.json").read_text())
        assert spec["store"] == "discover"
        for path in submission.rglob("*"):
            if path.is_file():
                assert password not in path.read_text(errors="replace"), path
        assert password not in out["experiment_dir"] + err
    finally:
        stop_services(project)


def test_from_a_workstation_through_the_gateway(project, ssh_gateway):
    runs = gateway_file_root(project, ssh_gateway)
    user = pwd.getpwnam(ssh_gateway.user)
    (project.root / ".metalab.toml").write_text(slurm_config(
        project, gateway=ssh_gateway.host, python=gateway_python(), services=False,
        executor=EXECUTOR + "max_concurrent = 2\n"))  # fmt: skip
    sweep = Sweep(project, store=str(runs / "store"), env={"EXP": "remote", "RUNS": "10",
                                                           "METALAB_SSH_CONFIG": str(ssh_gateway.ssh_config)})  # fmt: skip
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
    records = list((runs / "store" / "remote-1" / "runs").glob("*.jsonl"))
    assert records and all(path.stat().st_uid == user.pw_uid for path in records)  # the tasks ran as the gateway user
    code, status, err = sweep.run("status")
    assert code == 0 and status["status"] == "done" and status["recorded"] == 10
    # a relative store would mean the gateway user's home: refused
    bad = Sweep(project, store="experiments", env=sweep.env)
    code, out, err = bad.run("submit")
    assert code == 2 and "not a place the cluster can reach" in err
