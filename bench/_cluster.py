"""The multi-host test cluster for the SLURM benchmarks (``bash scripts/cluster.sh start`` first).

The benchmarks use the tests' own description of the cluster (tests/integration/cluster_support.py):
one definition of its hosts, and nothing is ever sent to them from the root namespace.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from cluster_support import CLUSTER_ENV, Cluster, ClusterInfo  # noqa: E402 -- found on the path set just above

__all__ = ["cluster", "run_on"]


def cluster() -> Cluster:
    path = os.environ.get(CLUSTER_ENV) or "/var/tmp/metalab-cluster/cluster.json"
    if not Path(path).is_file():
        sys.exit(f"no test cluster ({path}): run `bash scripts/cluster.sh start` first")
    return Cluster(ClusterInfo.load(Path(path)))


def run_on(host: str) -> None:
    """Go on in this very script, but on ``host`` (re-executed there), unless already on it."""
    if socket.gethostname() == host:
        return
    found = cluster()
    argv = found.host(host).command([sys.executable, *sys.argv], cwd=os.getcwd())
    os.execvpe(argv[0], argv, {**os.environ, CLUSTER_ENV: str(found.info.state_dir / "cluster.json")})
