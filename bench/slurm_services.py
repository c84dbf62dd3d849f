"""metalab's own overhead for SLURM services on the login node, and `status` there.

    bash scripts/cluster.sh start && python bench/slurm_services.py [--rounds N]

Overhead = wall time of `metalab services up` (to bundle written) minus the time from
submission to RUNNING (the scheduler's) minus the job's own start-up from RUNNING to ready
(PostgreSQL and Atlas on the node). Budgets (issue 5): overhead <= 1 s; status <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METALAB = str(Path(sys.executable).with_name("metalab"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metalab-slurm-bench-", dir="/tmp"))
    os.chmod(work, 0o755)
    (work / ".metalab.toml").write_text(
        '[project]\nname = "bench"\ndefault_env = "slurm"\n[services.postgres]\n[services.atlas]\nport = 18999\n'
        f'[environments.slurm]\ntype = "slurm"\nfile_root = "{work}/runs"\npython = "{sys.executable}"\n'
        '[environments.slurm.services]\npartition = "cpu"\ntime = "0:30:00"\nmemory = "512M"\n'
    )
    overheads, totals, statuses = [], [], []
    try:
        for _ in range(args.rounds):
            start = time.perf_counter()
            done = subprocess.run([METALAB, "services", "up"], cwd=work, capture_output=True, text=True, check=True)
            total = time.perf_counter() - start
            running = float(re.search(r"RUNNING on \S+ \(([\d.]+) s\)", done.stderr).group(1))
            ready = max(float(t) for t in re.findall(r"ready on \S+ \(([\d.]+) s\)", done.stderr))
            # submission->RUNNING is the scheduler's; RUNNING->ready is the job's own start-up
            overheads.append(total - ready)
            totals.append(total)
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run([METALAB, "services", "status"], cwd=work, capture_output=True, check=True)
                statuses.append(time.perf_counter() - start)
            subprocess.run([METALAB, "services", "down", "-q"], cwd=work, check=True)
    finally:
        subprocess.run([METALAB, "services", "down", "-q"], cwd=work, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"slurm services on the login node: medians over {args.rounds} up/down rounds")
    print(f"  services up, wall (to bundle written)   {statistics.median(totals):6.2f} s")
    print(f"  metalab's own overhead                  {statistics.median(overheads):6.2f} s   (budget <= 1 s)")
    print(f"  services status                         {statistics.median(statuses):6.2f} s   (budget <= 0.5 s)")


if __name__ == "__main__":
    main()
