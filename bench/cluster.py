"""The test cluster's own speed: `scripts/cluster.sh start` from nothing, and `stop`.

    python bench/cluster.py [--rounds N]      # as root, with no test cluster running

Each round starts the cluster from nothing (namespaces, daemons, both nodes idle, ssh from the
workstation to the gateway answering), stops it idle, starts it again, puts a services job on a
node and stops it with that job running (cancelled, its servers stopped, everything removed).
Budgets (issue 12, medians): start <= 5 s, stop <= 15 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ["bash", str(REPO / "scripts" / "cluster.sh")]


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*SCRIPT, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if subprocess.run([*SCRIPT, "status"], capture_output=True, check=False).returncode == 0:
        print("bench/cluster.py: a test cluster is running; stop it (bash scripts/cluster.sh stop) to measure this")
        return
    from _cluster import cluster
    from cluster_support import new_project

    starts, idle_stops, busy_stops = [], [], []
    try:
        for _ in range(args.rounds):
            starts.append(timed("start"))
            idle_stops.append(timed("stop"))
            starts.append(timed("start"))
            project = new_project(cluster(), "login", name="bench-stop")
            project.write_config()
            assert project.run("services", "up", "-q").code == 0
            busy_stops.append(timed("stop"))
    finally:
        subprocess.run([*SCRIPT, "stop"], capture_output=True, check=False)
    print(f"test cluster: medians over {args.rounds} rounds")
    print(f"  start from nothing                      {statistics.median(starts):6.2f} s   (budget <= 5 s)")
    print(f"  stop, idle                              {statistics.median(idle_stops):6.2f} s   (budget <= 15 s)")
    print(f"  stop, a services job running            {statistics.median(busy_stops):6.2f} s   (budget <= 15 s)")


if __name__ == "__main__":
    main()
