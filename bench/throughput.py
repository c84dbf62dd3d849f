"""Runs per second of metalab.run() on a trivial operation, into FileStore and PostgresStore.

    python bench/throughput.py [--quick]

The workload (issue 4): runs of an operation that records four metrics; 10,000 runs are a
grid of 2,500 points x 4 replicates. PostgreSQL comes from `metalab services up` in a
throwaway project (so this also exercises `store="discover"`), and is stopped afterwards.

Budgets: FileStore in-process >= 1,500 runs/s, 2 workers >= 2,000; PostgresStore in-process
>= 1,000, 2 workers >= 1,500; resuming 10,000 finished runs <= 0.5 s (FileStore), <= 1 s
(PostgresStore); rebuild_index of 10,000 runs <= 1 s; the rate at 100,000 runs no lower than at 1,000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import metalab
from _timing import services_project
from metalab.store import open_store


@metalab.operation
def trivial(params, seeds, capture):
    x = params["x"]
    capture.metric("a", x)
    capture.metric("b", x * 2)
    capture.metric("c", x * 3)
    capture.metric("d", seeds.replicate)


def experiment(runs: int, name: str) -> metalab.Experiment:
    return metalab.Experiment(name=name, version="1", operation=trivial,
                              params=metalab.grid(x=list(range(runs // 4))), seeds=metalab.seeds(base=1, replicates=4))


def timed(store, runs: int, name: str, executor=None) -> float:
    exp = experiment(runs, name)
    start = time.perf_counter()
    handle = metalab.run(exp, store=store, executor=executor, progress=False)
    took = time.perf_counter() - start
    assert handle.ran == runs, (handle.ran, runs)
    return took


def resume_time(store, runs: int, name: str) -> float:
    start = time.perf_counter()
    handle = metalab.run(experiment(runs, name), store=store, progress=False)
    took = time.perf_counter() - start
    assert handle.ran == 0
    return took


def line(label: str, runs: int, seconds: float, budget: str) -> None:
    print(f"  {label:<44} {runs:>7} runs {seconds:7.3f} s {runs / seconds:9.0f} runs/s   {budget}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-run scaling row")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metalab-throughput-", dir="/tmp"))
    metalab_bin = str(Path(sys.executable).with_name("metalab"))
    project = None
    try:
        files = work / "files"
        print("throughput: trivial operation, four metrics per run (one run each, machine noise applies)")
        line("FileStore, in-process", 10_000, timed(files, 10_000, "serial"), ">= 1,500 runs/s")
        line("FileStore, 2 worker processes", 10_000,
             timed(files, 10_000, "two", metalab.ProcessExecutor(2)), ">= 2,000 runs/s")
        took = resume_time(files, 10_000, "serial")
        print(f"  {'FileStore, resume 10,000 finished':<44} {took:19.3f} s {'':>19}<= 0.5 s")
        scales = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
        for runs in scales:
            line(f"FileStore, in-process, scaling {runs:,}", runs, timed(files, runs, f"scale{runs}"), "flat")
        if not args.no_postgres:
            project = services_project(work, "pgproject", "[services.postgres]\n")
            os.chdir(project)
            store = open_store("discover")
            line("PostgresStore (discover), in-process", 10_000, timed("discover", 10_000, "pgserial"), ">= 1,000 runs/s")
            line("PostgresStore (discover), 2 worker processes", 10_000,
                 timed("discover", 10_000, "pgtwo", metalab.ProcessExecutor(2)), ">= 1,500 runs/s")
            took = resume_time("discover", 10_000, "pgserial")
            print(f"  {'PostgresStore, resume 10,000 finished':<44} {took:19.3f} s {'':>19}<= 1 s")
            start = time.perf_counter()
            indexed = store.rebuild_index("pgserial-1")
            took = time.perf_counter() - start
            print(f"  {'PostgresStore, rebuild_index (one experiment)':<44} {indexed:>7} runs {took:7.3f} s {'':>19}<= 1 s")
    finally:
        if project is not None:
            os.chdir(work)
            subprocess.run([metalab_bin, "services", "down", "-q"], cwd=project, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
