"""The run record: one JSON line per run, the unit every store writes and reads.

A run's process appends its final line when the run ends (``success`` or ``failed``). While a
run lasts longer than a moment it also appends provisional lines (``running``: the metrics and
steps so far, and a ``heartbeat``), and an ``interrupted`` line if Ctrl+C or a SIGTERM stops it
(``metalab.runner``). Those two are *unfinished*: a run's current record is picked by
:func:`status_rank` (success > failed > unfinished, then the later start, then the later line),
so an unfinished line never beats a finished one, and readers of finished runs (resuming,
``load_results``) leave unfinished records out. A run killed outright stays ``running`` in the
files until it runs again; readers treat a ``running`` record whose heartbeat is older than
:data:`STALE_AFTER` as interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FAILED",
    "HEARTBEAT_EVERY",
    "INTERRUPTED",
    "RUNNING",
    "STALE_AFTER",
    "SUCCESS",
    "UNFINISHED",
    "RunRecord",
    "peek_status",
    "pick_latest",
    "status_rank",
]

SUCCESS = "success"
FAILED = "failed"
RUNNING = "running"  # a provisional line: the run was still going when it was written
INTERRUPTED = "interrupted"  # the run was stopped (Ctrl+C, SIGTERM) before it ended
UNFINISHED = frozenset({RUNNING, INTERRUPTED})
HEARTBEAT_EVERY = 10.0  # seconds: a running run writes a provisional line at least this often
STALE_AFTER = 60.0  # seconds without a heartbeat after which a running record counts as interrupted


def status_rank(status: str) -> int:
    """How a record's status ranks when a run has several: a success beats a failure (or any
    other finished status), which beats an unfinished record."""
    if status == SUCCESS:
        return 2
    return 0 if status in UNFINISHED else 1


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run: its inputs, its outcome (or that it is still running) and what it captured."""

    run_id: str
    params: dict[str, Any]
    seed: int
    replicate: int
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, list[list[Any]]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    log: str | None = None  # relative to the experiment folder
    error: str | None = None  # the traceback of a failed run
    started_at: float = 0.0  # Unix time
    duration: float = 0.0  # seconds (of an unfinished record: so far)
    heartbeat: float | None = None  # Unix time an unfinished record was written; None on a finished one

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    def to_json(self) -> str:
        """One line; empty collections and absent values are left out to keep lines short."""
        # run_id and status lead every line, so resuming can read them without parsing JSON.
        data = {"run_id": self.run_id, "status": self.status, "params": self.params, "seed": self.seed,
                "replicate": self.replicate}
        for key in ("metrics", "steps", "data", "artifacts", "log", "error"):
            value = getattr(self, key)
            if value:
                data[key] = value
        data["started_at"] = round(self.started_at, 6)
        data["duration"] = round(self.duration, 6)
        if self.heartbeat is not None:
            data["heartbeat"] = round(self.heartbeat, 6)
        return json.dumps(data, separators=(",", ":"), default=_jsonable)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(
            run_id=data["run_id"], params=data["params"], seed=data["seed"], replicate=data["replicate"],
            status=data["status"], metrics=data.get("metrics", {}), steps=data.get("steps", {}),
            data=data.get("data", {}), artifacts=data.get("artifacts", []), log=data.get("log"),
            error=data.get("error"), started_at=data.get("started_at", 0.0), duration=data.get("duration", 0.0),
            heartbeat=data.get("heartbeat"),
        )


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, sets and other containers as plain JSON values."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return item()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_PREFIX = '{"run_id":"'
_STATUS = '","status":"'


def peek_status(line: str) -> tuple[str, str] | None:
    """``(run_id, status)`` from the front of a record line, or None if it is not laid out so."""
    if not line.startswith(_PREFIX):
        return None
    end = line.find('"', len(_PREFIX))
    if end < 0 or not line.startswith(_STATUS, end):
        return None
    start = end + len(_STATUS)
    stop = line.find('"', start)
    return (line[len(_PREFIX):end], line[start:stop]) if stop > 0 else None


def pick_latest(records: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """One record per run id: a success beats a failure, which beats an unfinished record
    (:func:`status_rank`); then the later start wins; among equals, the later record."""
    best: dict[str, RunRecord] = {}
    for record in records:
        current = best.get(record.run_id)
        if current is None or (status_rank(record.status), record.started_at) >= (
                status_rank(current.status), current.started_at):
            best[record.run_id] = record
    return best
