"""Record lines as index rows: pure functions, no database.

The indexer COPYs each run's current record line verbatim and the server unpacks it
(``index_schema.LINE_UPSERT``); what the server cannot do well is done here: picking each run's
current line (as ``records.pick_latest`` does), making the line acceptable to jsonb and to COPY's
text format, listing the catalogue's names and types, and placing numbers at their slots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .records import _jsonable, status_rank

__all__ = [
    "Catalogue",
    "LineBatch",
    "as_number",
    "copy_array",
    "experiment_values",
    "numbers_row",
    "to_jsonb",
    "value_type",
]

INT64 = (-(2**63), 2**63 - 1)

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable).encode


def _non_finite_as_text(value: Any) -> Any:
    """NaN and infinities as the strings PostgreSQL's float8 input reads ("NaN", "Infinity")."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(key): _non_finite_as_text(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_non_finite_as_text(item) for item in value]
    return value


def to_jsonb(value: Any) -> str:
    """JSON text that jsonb accepts: no NaN/Infinity literals, no \\u0000."""
    try:
        text = _encode(value)
    except ValueError:
        text = _encode(_non_finite_as_text(value))
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def as_number(value: Any) -> float | None:
    """A param or metric value as the float Atlas sorts and plots by; None for anything else
    (bools, strings, lists, ints beyond float range)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return None
    import numbers

    return float(value) if isinstance(value, numbers.Real) else None


Slots = Mapping[tuple[str, str], int]


def numbers_row(slots: Slots, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[float | None] | None:
    """``runs.numbers`` for a run: its numeric values placed at their catalogue slots."""
    cells: dict[int, float] = {}
    for kind, values in (("param", params), ("metric", metrics)):
        for name, value in values.items():
            slot = slots.get((kind, name))
            if slot is not None:
                number = as_number(value)
                if number is not None:
                    cells[slot] = number
    if not cells:
        return None
    row: list[float | None] = [None] * max(cells)
    for slot, number in cells.items():
        row[slot - 1] = number
    return row


def copy_array(values: list[float | None] | None) -> str:
    """A float8[] as one field of COPY's text format."""
    if values is None:
        return "\\N"
    return "{" + ",".join("NULL" if v is None else _float_text(v) for v in values) + "}"


def _float_text(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def value_type(value: Any) -> str:
    """The catalogue type of a param or metric value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    import numbers

    if isinstance(value, numbers.Real):  # numpy integers and floats
        return "number"
    if type(value).__name__ == "bool_":  # numpy.bool_
        return "bool"
    return "json"


Entries = tuple[list[str], list[str], list[str]]  # kinds, names, types (Catalogue.take)


class Catalogue:
    """The (kind, name, type) entries seen so far; hands out only the new ones."""

    __slots__ = ("_seen", "pending")

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, type]] = set()
        self.pending: dict[tuple[str, str], str] = {}

    def add(self, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        seen = self._seen
        for kind, values in (("param", params), ("metric", metrics)):
            for name, value in values.items():
                key = (kind, name, type(value))
                if key in seen:
                    continue
                seen.add(key)
                new = value_type(value)
                old = self.pending.get((kind, name))
                self.pending[(kind, name)] = new if old in (None, "null", new) else old if new == "null" else "mixed"

    def take(self) -> Entries | None:
        """The pending entries as three arrays (sorted: concurrent writers lock rows in one order)."""
        if not self.pending:
            return None
        entries = sorted(self.pending.items())
        self.pending = {}
        return [k for (k, _), _ in entries], [n for (_, n), _ in entries], [t for _, t in entries]


class LineBatch:
    """Record lines read for the index: the current line of each run (a success beats a failure,
    which beats a running or interrupted line, ``records.status_rank``; then the later start;
    among equals the line read last: a run's latest provisional line), escaped for COPY's text format and
    made acceptable to jsonb, and the catalogue of every line's names. Lines ``FileStore`` would
    skip (not JSON, not a record) are skipped."""

    __slots__ = ("_best", "catalogue")

    def __init__(self) -> None:
        self._best: dict[str, tuple[tuple[int, float], str, dict[str, Any], dict[str, Any], str]] = {}
        self.catalogue = Catalogue()

    def __len__(self) -> int:
        return len(self._best)

    def add(self, line: str) -> None:
        """One complete line (ending in a newline)."""
        try:
            data = json.loads(line)
            run_id, status, params, seed, replicate = (
                data["run_id"], data["status"], data["params"], data["seed"], data["replicate"]
            )
            rank = (status_rank(status), float(data.get("started_at", 0.0)))
        except (ValueError, KeyError, TypeError):
            return
        metrics = data.get("metrics") or {}
        if (type(replicate) is not int or not isinstance(run_id, str) or not isinstance(status, str)
                or not isinstance(params, dict) or not isinstance(metrics, dict)):
            return
        self.catalogue.add(params, metrics)  # every record's names, not only the winners'
        current = self._best.get(run_id)
        if current is not None and rank < current[0]:
            return
        if type(seed) is not int or not INT64[0] <= seed <= INT64[1]:
            data["seed"] = None
            line = to_jsonb(data) + "\n"
        elif "NaN" in line or "Infinity" in line:
            line = to_jsonb(data) + "\n"  # NaN literals are not JSON to PostgreSQL
        if "\\" in line:
            line = line.replace("\\u0000", "\\ufffd").replace("\\", "\\\\")  # COPY text escapes
        self._best[run_id] = (rank, _copy_text(run_id), params, metrics, line)

    def copy_lines(self, slots: Slots) -> list[str]:
        """``run_id \\t numbers \\t line`` for ``index_schema.LINE_COPY``, one per run."""
        return [f"{run_id}\t{copy_array(numbers_row(slots, params, metrics))}\t{line}"
                for _, run_id, params, metrics, line in self._best.values()]


def _copy_text(value: str) -> str:
    """``value`` as one field of COPY's text format."""
    if value.isalnum():  # run ids are hex
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def experiment_values(experiment_id: str, description: Mapping[str, Any], stamp: str | None) -> tuple[Any, ...]:
    """``index_schema.EXPERIMENT_UPSERT``'s values: what ``experiment.json`` says, and which
    version of it (``stamp``) that was."""
    return (experiment_id, str(description.get("name", experiment_id)), str(description.get("version", "")),
            to_jsonb(dict(description)), stamp)
