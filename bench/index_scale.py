"""The index keeps up with the files: many concurrent writers, a database that went away.

    python bench/index_scale.py [--writers 1000] [--down 60] [--down-writers 100]

Local services (PostgreSQL and Atlas, whose indexer follows file_root) in a throwaway project.
Writers are processes forked from this one once everything is imported (as SLURM array tasks
each run their share of an experiment: ``run_serially`` into the store's sink), released together.

Budgets (issue 13):
- 1,000 concurrent writers, 10 runs each: the index equals the files <= 5 s after the last
  record lands; peak PostgreSQL client connections <= 20; 0 runs missing.
- one writer, ``metalab.run(store="discover")`` in-process: >= 4,000 runs/s.
- PostgreSQL down for 60 s while 100 writers ran: the index equals the files <= 10 s after it
  is back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import metalab
from _timing import services_project
from metalab.net import free_port
from metalab.runner import run_serially
from metalab.store import open_store

METALAB = str(Path(sys.executable).with_name("metalab"))


@metalab.operation
def train(params, seeds, capture):
    capture.metric("loss", 1.0 / (1 + params["i"]))
    capture.metric("acc", params["i"] % 7 / 7)
    if params.get("pause"):
        time.sleep(params["pause"])


def grid(name: str, runs: int, pause: float = 0.0) -> metalab.Experiment:
    values = {"i": list(range(runs))}
    if pause:
        values["pause"] = [pause]
    return metalab.Experiment(name=name, version="1", operation=train, params=metalab.grid(**values))


def fork_writers(exp: metalab.Experiment, store, count: int) -> tuple[list[int], int]:
    """``count`` processes, each with an equal share of the runs, blocked until the returned
    pipe end is closed. Returns their pids and that end."""
    specs = list(exp.runs())
    share = -(-len(specs) // count)
    files = store.files(exp.experiment_id)
    release_r, release_w = os.pipe()
    pids = []
    for k in range(count):
        mine = specs[k * share : (k + 1) * share]
        pid = os.fork()
        if pid == 0:  # the writer: wait for the start, run its share, leave without cleanup
            os.close(release_w)
            os.read(release_r, 1)
            code = 0
            try:
                run_serially(exp, mine, files, store.sink(exp.experiment_id, f"writer-{k:04d}"))
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    os.close(release_r)
    return pids, release_w


def wait_all(pids: list[int]) -> int:
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return failed


class ConnectionPeak:
    """The most client backends PostgreSQL had at once, sampled every 20 ms (this probe excluded)."""

    def __init__(self, store) -> None:
        self.conn = store.connect(autocommit=True)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.conn.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0]
                self.peak = max(self.peak, n)
            except Exception:
                pass
            time.sleep(0.02)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def indexed(store, experiment_id: str) -> int:
    try:
        with store.connect(connect_timeout=2) as conn:
            return conn.execute("SELECT count(*) FROM metalab.runs WHERE experiment_id = %s", (experiment_id,)).fetchone()[0]
    except Exception:
        return -1


def last_landing(store, experiment_id: str) -> float:
    """Wall time at which the experiment's last record line landed (its newest file's mtime)."""
    return max(p.stat().st_mtime for p in store.files(experiment_id).runs_dir.glob("*.jsonl"))


def until_indexed(store, experiment_id: str, want: int, timeout: float = 120.0) -> float:
    """Wall time at which the index first held ``want`` runs of the experiment."""
    deadline = time.monotonic() + timeout
    while indexed(store, experiment_id) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"the index held {indexed(store, experiment_id)} of {want} runs after {timeout:.0f} s")
        time.sleep(0.02)
    return time.time()


def many_writers(store, writers: int, runs_each: int) -> None:
    exp = grid("scale", writers * runs_each)
    store.write_experiment(exp.describe())
    pids, release = fork_writers(exp, store, writers)
    with ConnectionPeak(store) as peak:
        began = time.time()
        os.close(release)
        failed = wait_all(pids)
        total = writers * runs_each
        done = until_indexed(store, exp.experiment_id, total)
        landed = last_landing(store, exp.experiment_id)
    on_disk = len(store.load(exp.experiment_id))
    missing = on_disk - indexed(store, exp.experiment_id)
    print(f"  {writers} writers x {runs_each} runs: {on_disk} runs in the files in {landed - began:.1f} s, "
          f"{failed} writers failed")
    print(f"    index equal to the files {max(done - landed, 0.0):5.2f} s after the last record landed   <= 5 s")
    print(f"    peak PostgreSQL client connections {peak.peak:>3}                               <= 20")
    print(f"    runs missing from the index {missing:>3}                                      0")


def one_writer(store, runs: int) -> None:
    exp = grid("serial", runs)
    began = time.perf_counter()
    handle = metalab.run(exp, store="discover", progress=False)
    took = time.perf_counter() - began
    assert handle.ran == runs
    wall = time.time()
    done = until_indexed(store, exp.experiment_id, runs)
    print(f"  one writer, metalab.run(store='discover'): {runs} runs in {took:.3f} s = {runs / took:,.0f} runs/s"
          f"   >= 4,000 runs/s (indexed {max(done - wall, 0):.2f} s after run() returned)")


def database_away(store, project: Path, writers: int, down: float) -> None:
    bundle = json.loads((project / "runs" / "services" / "bundle.json").read_text())
    postmaster = bundle["services"]["postgres"]["pid"]
    runs_each = max(int(down) - 5, 1)
    exp = grid("away", writers * runs_each, pause=1.0)  # each writer: a run per second, while the database is away
    store.write_experiment(exp.describe())
    pids, release = fork_writers(exp, store, writers)
    os.kill(postmaster, signal.SIGINT)  # fast shutdown: PostgreSQL goes away
    while _alive(postmaster):
        time.sleep(0.05)
    stopped = time.monotonic()
    os.close(release)
    failed = wait_all(pids)
    time.sleep(max(down - (time.monotonic() - stopped), 0))
    subprocess.run([METALAB, "services", "up", "-q"], cwd=project, check=True)
    back = time.time()
    total = writers * runs_each
    done = until_indexed(store, exp.experiment_id, total)
    print(f"  PostgreSQL down {time.monotonic() - stopped:.0f} s while {writers} writers wrote {total} runs "
          f"({failed} writers failed)")
    print(f"    index equal to the files {done - back:5.2f} s after it was back                   <= 10 s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=1000)
    parser.add_argument("--runs-each", type=int, default=10)
    parser.add_argument("--serial-runs", type=int, default=20_000)
    parser.add_argument("--down", type=float, default=60.0, help="seconds PostgreSQL stays away")
    parser.add_argument("--down-writers", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metalab-index-scale-", dir="/tmp"))
    project = None
    try:
        atlas = f"[services.atlas]\nport = {free_port('127.0.0.1')}\n"
        project = services_project(work, "scale", f"[services.postgres]\n{atlas}")
        os.chdir(project)
        store = open_store("discover")
        print("index_scale: writers never connect; Atlas's indexer follows the files (medians need repeated runs)")
        many_writers(store, args.writers, args.runs_each)
        one_writer(store, args.serial_runs)
        database_away(store, project, args.down_writers, args.down)
    finally:
        if project is not None:
            os.chdir(work)
            subprocess.run([METALAB, "services", "down", "-q"], cwd=project, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
