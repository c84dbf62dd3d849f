"""metalab's own cost for SLURM services on the multi-host test cluster, from the login node and
from the workstation (which reaches the cluster only through the gateway).

    bash scripts/cluster.sh start && python bench/slurm_services.py [--rounds N]

Overhead = wall time of `metalab services up` (to bundle written) minus the time from submission
to the job's services answering (the scheduler's start of the job, then PostgreSQL's and Atlas's
own start on the node, as the job reports them). `status` is one whole `metalab services status`.
`tunnel ready` is from starting `metalab tunnel` to its "tunnel open" line, which it prints once
both forwards answer (a PostgreSQL login and Atlas's health, through ssh).
Budgets (issue 12, medians): overhead <= 1 s; status from the workstation <= 1 s; tunnel ready <= 1 s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from _cluster import cluster
from cluster_support import new_project


def up_round(project) -> tuple[float, float]:
    """(wall, metalab's overhead) of one `services up`."""
    start = time.perf_counter()
    done = project.run("services", "up")
    wall = time.perf_counter() - start
    assert done.code == 0, done
    ready = max(float(t) for t in re.findall(r"ready on \S+ \(([\d.]+) s\)", done.err))
    return wall, wall - ready


def status_once(project) -> float:
    start = time.perf_counter()
    done = project.run("services", "status")
    assert done.code == 0, done
    return time.perf_counter() - start


def tunnel_ready(project) -> float:
    start = time.perf_counter()
    proc = project.popen("tunnel")
    try:
        for line in proc.stdout:
            if line.startswith("tunnel open"):
                return time.perf_counter() - start
        raise AssertionError(f"tunnel ended: {proc.stderr.read()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    found = cluster()
    for side in ("login", "ws"):
        project = new_project(found, side, name=f"bench-{side}")
        project.write_config()
        walls, overheads, statuses, tunnels = [], [], [], []
        try:
            for _ in range(args.rounds):
                wall, overhead = up_round(project)
                walls.append(wall)
                overheads.append(overhead)
                statuses += [status_once(project) for _ in range(3)]
                if side == "ws":
                    tunnels += [tunnel_ready(project) for _ in range(2)]
                assert project.run("services", "down", "-q").code == 0
        finally:
            project.teardown()
        where = "the login node" if side == "login" else "the workstation (through the gateway)"
        print(f"slurm services from {where}: medians over {args.rounds} up/down rounds")
        print(f"  services up, wall (to bundle written)   {statistics.median(walls):6.2f} s")
        print(f"  metalab's own overhead                  {statistics.median(overheads):6.2f} s   (budget <= 1 s)")
        print(f"  services status                         {statistics.median(statuses):6.2f} s   (budget <= 1 s)")
        if tunnels:
            print(f"  tunnel ready (both forwards answering)  {statistics.median(tunnels):6.2f} s   (budget <= 1 s)")


if __name__ == "__main__":
    main()
