"""The SLURM executor's speed on the test cluster: submitting a sweep, and a task's per-run cost.

    bash scripts/cluster.sh start && python bench/slurm_executor.py [--rounds N] [--runs N]

It runs itself on the test cluster's login node (the tasks on cn1 and cn2), in a folder on the
cluster's shared filesystem.

1. Submit: wall time of ``metalab.run(exp, executor=SlurmExecutor(...))`` for 10,000 runs on
   the login node, from the call to the handle: the experiment written, finished runs read,
   the spec and job script written, the import checked (``job.sh --check``), MaxArraySize read
   and every chunk queued with sbatch. The arrays are cancelled right after. Budget <= 2 s.
2. Per-run overhead: one array task that runs 2,000 runs of an operation that does nothing;
   the task's own log says how long its runs took from the first to the last record (store
   opened, records written and flushed one by one). Budget <= 5 ms per run beyond the operation.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

OPERATION = '''
import metalab

@metalab.operation
def nothing(params, seeds, capture):
    capture.metric("x", params["x"])
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    from _cluster import cluster, run_on

    run_on("login")
    work = Path(tempfile.mkdtemp(prefix="metalab-executor-bench-", dir=cluster().info.shared))
    try:
        os.chmod(work, 0o755)
        (work / "bench_ops.py").write_text(OPERATION)
        sys.path.insert(0, str(work))
        os.chdir(work)
        import bench_ops

        import metalab
        from metalab.executor.slurm import SlurmExecutor

        executor = SlurmExecutor(partition="cpu", time="0:10:00", memory="200M", max_concurrent=4, python=sys.executable)
        submits, chunks = [], 0
        for round_ in range(args.rounds):
            exp = metalab.Experiment(name=f"submit{round_}", version="1", operation=bench_ops.nothing,
                                     params=metalab.grid(x=list(range(args.runs))))
            start = time.perf_counter()
            handle = metalab.run(exp, executor=executor, store=work / "store", progress=False)
            submits.append(time.perf_counter() - start)
            chunks = len(handle.job_ids)
            handle.cancel()
        print(f"submit {args.runs} runs ({chunks} arrays): median {statistics.median(submits):.3f} s "
              f"(all: {', '.join(f'{s:.3f}' for s in submits)}); budget 2 s")

        per_run = []
        for round_ in range(args.rounds):
            exp = metalab.Experiment(name=f"overhead{round_}", version="1", operation=bench_ops.nothing,
                                     params=metalab.grid(x=list(range(2000))))
            one_task = SlurmExecutor(partition="cpu", time="0:10:00", memory="500M", runs_per_task=2000, python=sys.executable)
            handle = metalab.run(exp, executor=one_task, store=work / "store", progress=False)
            results = handle.result()
            assert results.succeeded == 2000, results
            log = next(Path(handle.experiment_dir).glob("slurm/*/logs/*.log")).read_text()
            seconds = float(re.search(r"2000 runs recorded in ([\d.]+) s", log).group(1))
            per_run.append(seconds / 2000 * 1000)
        print(f"per-run overhead in a task: median {statistics.median(per_run):.3f} ms "
              f"(all: {', '.join(f'{p:.3f}' for p in per_run)}); budget 5 ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
