"""The files under a cluster's ``file_root``, read from a workstation through the gateway.

On a workstation, ``store="discover"`` finds the workstation's copy of the bundle: PostgreSQL is
reached through the tunnel, but the run records (the truth) live in files this machine cannot
see. :class:`GatewayFiles` answers the reading half of FileStore's interface by asking the
gateway (``python -m metalab.executor.slurm_cluster read``), so results come back whole (params,
metrics, steps, data, artifacts), never as a silently empty answer. Writing from here is refused:
runs are written on the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .records import SUCCESS, RunRecord

__all__ = ["GatewayFiles"]


class GatewayFiles:
    """FileStore's reads for a ``file_root`` on the cluster behind ``plan["gateway"]``."""

    def __init__(self, root: Path, plan: Mapping[str, Any]) -> None:
        self.root = root
        self._plan = dict(plan)
        self._side: Any = None

    def __repr__(self) -> str:
        return f"GatewayFiles({str(self.root)!r} via {self._plan['gateway']})"

    def describe(self) -> str:
        return f"files under {self.root} on the cluster (read through {self._plan['gateway']})"

    def _read(self, what: str, experiment_id: str | None = None) -> dict[str, Any]:
        if self._side is None:
            from ..executor.slurm import ClusterSide

            plan = self._plan
            self._side = ClusterSide(gateway=plan["gateway"], user=plan.get("user"), ssh_key=plan.get("ssh_key"),
                                     python=plan.get("python"))
        return self._side.call("read", {"file_root": str(self.root), "what": what, "experiment_id": experiment_id})

    def load(self, experiment_id: str) -> dict[str, RunRecord]:
        records = (RunRecord.from_dict(data) for data in self._read("records", experiment_id)["records"])
        return {record.run_id: record for record in records}

    def iter_records(self, experiment_id: str) -> Iterator[RunRecord]:
        return iter(self.load(experiment_id).values())

    def finished_run_ids(self, experiment_id: str) -> set[str]:
        return {run_id for run_id, record in self.load(experiment_id).items() if record.status == SUCCESS}

    def experiment_ids(self) -> list[str]:
        return self._read("experiments")["experiments"]

    def read_experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._read("experiment", experiment_id)["experiment"]

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise UsageError(
            f"the runs' files live on the cluster ({self.root}), which this machine cannot see: run the experiment "
            "there, with executor=metalab.resolve_executor('slurm') (or on the login node); reading results works from here"
        )

    files = write_experiment = sink = _refuse
