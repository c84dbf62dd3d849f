"""The run record: one JSON line per finished run, the unit every store writes and reads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAILED", "SUCCESS", "RunRecord", "peek_status", "pick_latest"]

SUCCESS = "success"
FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One finished run: its inputs, its outcome and what it captured."""

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
    duration: float = 0.0  # seconds

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    def to_json(self) -> str:
        """One line; empty collections and absent values are left out to keep lines short."""
        # run_id and status lead every line, so resuming can read them without parsing JSON.
        data = {"run_id": self.run_id, "status": self.status, "params": self.params, "seed": self.seed,
                "replicate": self.replicate}  # fmt: skip
        for key in ("metrics", "steps", "data", "artifacts", "log", "error"):
            value = getattr(self, key)
            if value:
                data[key] = value
        data["started_at"] = round(self.started_at, 6)
        data["duration"] = round(self.duration, 6)
        return json.dumps(data, separators=(",", ":"), default=_jsonable)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(
            run_id=data["run_id"], params=data["params"], seed=data["seed"], replicate=data["replicate"],
            status=data["status"], metrics=data.get("metrics", {}), steps=data.get("steps", {}),
            data=data.get("data", {}), artifacts=data.get("artifacts", []), log=data.get("log"),
            error=data.get("error"), started_at=data.get("started_at", 0.0), duration=data.get("duration", 0.0),
        )  # fmt: skip


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
    """One record per run id: a success beats a failure, then the later start wins."""
    best: dict[str, RunRecord] = {}
    for record in records:
        current = best.get(record.run_id)
        if current is None or (record.succeeded, record.started_at) >= (current.succeeded, current.started_at):
            best[record.run_id] = record
    return best
