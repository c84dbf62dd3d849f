"""What a request asks of an experiment's runs, checked against its catalogue and turned into SQL.

Pure: no database here. A field named in a sort, filter or plot must be in the experiment's
catalogue (or be one of the run's own columns); it then becomes either ``numbers[slot]`` (the
slot an integer from the catalogue) or a bind parameter. Nothing a request says is ever part of
the SQL text, and every statement only reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..store.index_schema import INDEX_SCHEMA

__all__ = [
    "COLUMNS",
    "RUN_FIELDS",
    "Args",
    "Catalogue",
    "Condition",
    "Cursor",
    "Field",
    "QueryError",
    "RunsQuery",
    "cursor_for",
    "decode_cursor",
    "encode_cursor",
    "histogram_sql",
    "parse_where",
    "plot_sql",
    "summary_sql",
]

RUNS = f"{INDEX_SCHEMA}.runs"
MAX_PAGE = 500
# The run's own columns, and how they compare: a param or metric of the same name is reached as
# ``params.NAME`` / ``metrics.NAME``.
COLUMNS = {"run_id": "string", "status": "string", "started_at": "time", "duration": "number",
           "replicate": "number", "seed": "number"}  # fmt: skip
STATUSES = ("success", "failed")
_NUMERIC_TYPES = ("number", "mixed")
_OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
_CONDITION = re.compile(r"^\s*(?P<field>.+?)\s*(?P<op><=|>=|!=|==|=|<|>|~)\s*(?P<value>.*?)\s*$", re.DOTALL)
_HEAD = re.compile(r"\s*[^;&]+?\s*(?:<=|>=|!=|==|=|<|>|~)\s*", re.DOTALL)  # a condition up to its value
_AND = re.compile(r"\s+and\s+|\s*&&\s*|\s*;\s*", re.IGNORECASE)
_FINITE = "{k} > '-Infinity' AND {k} < 'Infinity'"


class QueryError(ValueError):
    """A request the catalogue cannot answer; the message says what to change."""


class Args(dict):
    """Bind parameters by name: ``add`` returns the placeholder for a value, so a statement can
    use one value several times and in any order."""

    def add(self, value: object) -> str:
        name = f"p{len(self)}"
        self[name] = value
        return f"%({name})s"


@dataclass(frozen=True)
class Field:
    kind: str  # 'param' | 'metric' | 'column'
    name: str
    type: str  # the catalogue's type; for columns 'number' | 'string' | 'time'
    slot: int | None = None

    @property
    def ref(self) -> str:
        """How a request names it unambiguously."""
        return self.name if self.kind == "column" else f"{self.kind}s.{self.name}"

    @property
    def numeric(self) -> bool:
        """Compared and sorted as a number (``numbers[slot]`` or a numeric column)."""
        if self.kind == "column":
            return self.type == "number"
        return self.slot is not None and self.type in _NUMERIC_TYPES

    def expression(self, args: Args) -> str:
        """SQL for this field's value in a runs row; a param or metric name becomes a parameter."""
        if self.kind == "column":
            return f'{self.name} COLLATE "C"' if self.type == "string" else self.name
        if self.numeric:
            return f"numbers[{int(self.slot)}]"  # type: ignore[arg-type]
        return f'({self.kind}s ->> {args.add(self.name)}) COLLATE "C"'

class Catalogue:
    """An experiment's params and metrics, as the index's catalogue lists them."""

    def __init__(self, entries: Iterable[tuple[str, str, str, int | None]]) -> None:
        self.params: dict[str, Field] = {}
        self.metrics: dict[str, Field] = {}
        for kind, name, type_, slot in entries:
            (self.params if kind == "param" else self.metrics)[name] = Field(kind, name, type_, slot)

    @property
    def fields(self) -> list[Field]:
        """Every param, then every metric."""
        return [*self.params.values(), *self.metrics.values()]

    def field(self, ref: str) -> Field:
        """The field ``ref`` names: ``params.X``, ``metrics.X``, a run column, or a bare name
        that is a param or a metric but not both."""
        for candidate in dict.fromkeys((ref, ref.strip())):  # exactly as given first: names may end in spaces
            for prefix, fields in (("params.", self.params), ("metrics.", self.metrics)):
                if candidate.startswith(prefix) and candidate[len(prefix):] in fields:
                    return fields[candidate[len(prefix):]]
        ref = ref if ref in self.params or ref in self.metrics else ref.strip()
        if ref in COLUMNS:
            return Field("column", ref, COLUMNS[ref])
        found = [fields[ref] for fields in (self.params, self.metrics) if ref in fields]
        if len(found) == 1:
            return found[0]
        if found:
            raise QueryError(f"{ref!r} is both a param and a metric: say params.{ref} or metrics.{ref}")
        raise QueryError(f"unknown field {ref!r}: {self.known()}")

    def known(self) -> str:
        params = ", ".join(sorted(self.params)) or "none"
        metrics = ", ".join(sorted(self.metrics)) or "none"
        return f"this experiment has params {params}; metrics {metrics}; and run columns {', '.join(COLUMNS)}"

    def numeric_field(self, ref: str, role: str) -> Field:
        field = self.field(ref)
        if not field.numeric or field.kind == "column" and field.name in ("run_id", "status"):
            raise QueryError(f"{role} needs a numeric field; {field.ref} is {field.type}")
        return field


# -- conditions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    field: Field
    op: str  # one of = != < <= > >= ~
    value: float | str | bool | datetime

    def sql(self, args: Args) -> str:
        op = "<>" if self.op == "!=" else self.op
        if self.field.kind != "column" and isinstance(self.value, bool):  # a JSON true/false
            name, value = args.add(self.field.name), args.add(json.dumps(self.value))
            return f"({self.field.kind}s -> {name}) {op} {value}::jsonb"
        key = self.field.expression(args)
        if op == "~":
            return f"{key} LIKE {args.add(_like_pattern(str(self.value)))}"
        return f"{key} {op} {args.add(self.value)}"


def parse_where(texts: Sequence[str], catalogue: Catalogue) -> list[Condition]:
    """Conditions from ``where`` strings (``loss < 0.2``, ``lr = 0.01 and status = failed``)."""
    conditions = []
    for text in texts:
        for part in _split_and(text):
            if part.strip():
                conditions.append(parse_condition(part, catalogue))
    return conditions


def _split_and(text: str) -> list[str]:
    """``text`` cut at each and, && or ; between conditions; a value that starts with a quote runs
    to its closing quote, so it may hold any of them."""
    parts, position = [], 0
    while True:
        head = _HEAD.match(text, position)
        value = head.end() if head else position
        if head and value < len(text) and text[value] in "'\"":
            close = text.find(text[value], value + 1)
            value = close + 1 if close > 0 else value
        separator = _AND.search(text, value)
        if separator is None:
            return [*parts, text[position:]]
        parts.append(text[position : separator.start()])
        position = separator.end()


def parse_condition(text: str, catalogue: Catalogue) -> Condition:
    match = _CONDITION.match(text)
    if match is None or not match["value"]:
        raise QueryError(f"cannot read the condition {text.strip()!r}: write FIELD OP VALUE, OP one of "
                         f"{' '.join(_OPERATORS)} (for example: loss < 0.2)")  # fmt: skip
    field = catalogue.field(match["field"])
    op = "=" if match["op"] == "==" else match["op"]
    raw = _unquote(match["value"])
    if field.name == "status" and field.kind == "column":
        if raw not in STATUSES or op not in ("=", "!="):
            raise QueryError(f"status can be = or != to {' or '.join(STATUSES)}, not {op} {raw!r}")
        return Condition(field, op, raw)
    if field.type == "time":
        op = _comparison(op, field)
        try:
            return Condition(field, op, datetime.fromisoformat(raw))
        except ValueError:
            raise QueryError(f"{field.ref} compares with a time like 2026-01-31T12:00:00, not {raw!r}") from None
    if field.numeric:
        number = _number(raw)
        if number is not None:
            return Condition(field, _comparison(op, field), number)
        if field.type == "number" or field.kind == "column":
            raise QueryError(f"{field.ref} is a number; {raw!r} is not")
    if field.type == "bool" and raw.lower() in ("true", "false") and op in ("=", "!="):
        return Condition(field, op, raw.lower() == "true")
    return Condition(Field(field.kind, field.name, "string"), op, raw)


def _comparison(op: str, field: Field) -> str:
    if op == "~":
        raise QueryError(f"~ (contains) is for text; {field.ref} is {field.type}")
    return op


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if not math.isnan(value) else None


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where_sql(experiment_id: str, conditions: Sequence[Condition], args: Args) -> str:
    return " AND ".join([f"experiment_id = {args.add(experiment_id)}", *(c.sql(args) for c in conditions)])


# -- a page of runs: keyset pagination --------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: rows with the sort key come first (segment 0), then rows without it."""

    segment: int
    key: float | int | str | datetime | None
    run_id: str


def encode_cursor(cursor: Cursor) -> str:
    key = cursor.key
    if isinstance(key, float):
        key = ["f", repr(key)]  # repr keeps every bit, and NaN and the infinities
    elif isinstance(key, datetime):
        key = key.isoformat()
    text = json.dumps([cursor.segment, key, cursor.run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        segment, key, run_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(key, list):
            key = float(key[1])
        if segment not in (0, 1) or not isinstance(run_id, str) or not isinstance(key, (int, float, str, type(None))):
            raise ValueError(text)
    except (ValueError, TypeError, binascii.Error, IndexError, RecursionError):
        raise QueryError("the page cursor is not one this Atlas gave out: start again from the first page") from None
    return Cursor(segment, key, run_id)


def cursor_for(text: str, sort: Field) -> Cursor:
    """A cursor from a request, checked against the sort it claims to continue."""
    cursor = decode_cursor(text)
    key = cursor.key
    if cursor.segment == 1 or key is None:
        return Cursor(cursor.segment, None, cursor.run_id)
    if sort.type == "time" and isinstance(key, str):
        try:
            return Cursor(0, datetime.fromisoformat(key), cursor.run_id)
        except ValueError:
            pass
    elif sort.numeric and type(key) in (int, float) or not sort.numeric and isinstance(key, str):
        return cursor
    raise QueryError("the page cursor belongs to another sort: start again from the first page")


@dataclass(frozen=True)
class RunsQuery:
    experiment_id: str
    conditions: tuple[Condition, ...]
    sort: Field
    descending: bool = False
    limit: int = 50
    after: Cursor | None = None

    def segments(self) -> list[tuple[int, str, Args]]:
        """The statements that give the page's (run_id, key) rows, in order: first the runs that
        have the sort key, then those without it; each asks for ``limit + 1`` rows, so the caller
        knows whether another page follows. A numeric sort walks the slot's index."""
        after = self.after
        out = []
        if after is None or after.segment == 0:
            out.append((0, *self._keyed(after)))
        if self.sort.kind != "column" or self.sort.type == "time":  # the other columns are never null
            out.append((1, *self._unkeyed(after if after is not None and after.segment == 1 else None)))
        return out

    def _keyed(self, after: Cursor | None) -> tuple[str, Args]:
        args = Args()
        key = self.sort.expression(args)
        where = where_sql(self.experiment_id, self.conditions, args)
        direction, compare = ("DESC", "<") if self.descending else ("ASC", ">")
        statement = f"SELECT run_id AS id, {key} AS sort_key FROM {RUNS} WHERE {where} AND {key} IS NOT NULL"
        if after is not None:
            statement += f" AND ({key}, run_id) {compare} ({args.add(after.key)}, {args.add(after.run_id)})"
        statement += f" ORDER BY {key} {direction}, run_id {direction} LIMIT {args.add(self.limit + 1)}"
        return statement, args

    def _unkeyed(self, after: Cursor | None) -> tuple[str, Args]:
        args = Args()
        key = self.sort.expression(args)
        where = where_sql(self.experiment_id, self.conditions, args)
        statement = f"SELECT run_id AS id, NULL AS sort_key FROM {RUNS} WHERE {where} AND {key} IS NULL"
        if after is not None:
            statement += f" AND run_id > {args.add(after.run_id)}"
        statement += f" ORDER BY run_id LIMIT {args.add(self.limit + 1)}"
        return statement, args

    def export(self) -> tuple[str, Args]:
        """Every matching run, in the page order, for a streamed export."""
        args = Args()
        key = self.sort.expression(args)
        where = where_sql(self.experiment_id, self.conditions, args)
        direction = "DESC" if self.descending else "ASC"
        return ((f"SELECT {RUN_FIELDS} FROM {RUNS} WHERE {where} "
                f"ORDER BY {key} IS NULL, {key} {direction}, run_id {direction}"), args)  # fmt: skip


# What a page shows of a run (the row Atlas hands out: never ``numbers``, which is derived).
RUN_FIELDS = "run_id, status, started_at, finished_at, duration, replicate, seed, params, metrics, error"


# -- plots and summaries ----------------------------------------------------------------------


def plot_sql(experiment_id: str, x: Field, y: Field, group: Field | None,
             conditions: Sequence[Condition]) -> tuple[str, Args]:  # fmt: skip
    """y's mean, standard deviation and count for each (group, x): replicates and any other
    parameter aggregated. Non-finite values of y are left out."""
    args = Args()
    x_key, y_key = x.expression(args), y.expression(args)
    g_key = group.expression(args) if group is not None else "NULL"
    where = where_sql(experiment_id, conditions, args)
    return (
        (f"SELECT {g_key} AS g, {x_key} AS x, avg({y_key}), coalesce(stddev_samp({y_key}), 0), count(*) "
        f"FROM {RUNS} WHERE {where} AND {x_key} IS NOT NULL AND {_FINITE.format(k=y_key)} "
        f"GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 20000"),
        args,
    )


def histogram_sql(experiment_id: str, field: Field, bins: int, conditions: Sequence[Condition]) -> tuple[str, Args]:
    """``bins`` equal-width bins over the finite values of ``field``: (bin, lo, hi, count)."""
    args = Args()
    key = field.expression(args)
    where = where_sql(experiment_id, conditions, args)
    n = args.add(bins)
    return (
        (f"WITH v AS (SELECT {key} AS v FROM {RUNS} WHERE {where} AND {_FINITE.format(k=key)}), "
        f"r AS MATERIALIZED (SELECT min(v) AS lo, max(v) AS hi FROM v) "  # once, not once per value
        f"SELECT least(width_bucket(v.v, r.lo, CASE WHEN r.hi > r.lo THEN r.hi ELSE r.lo + 1 END, {n}), {n}) AS b, "
        f"min(r.lo), min(r.hi), count(*) FROM v, r GROUP BY 1 ORDER BY 1"),
        args,
    )


def summary_sql(experiment_id: str, fields: Sequence[Field]) -> tuple[str, Args]:
    """count, min, median and max of each numeric field's finite values, in one pass."""
    args = Args()
    parts = []
    for field in fields:
        key = field.expression(args)
        finite = f"FILTER (WHERE {_FINITE.format(k=key)})"
        parts.append(f"count({key}) {finite}, min({key}) {finite}, "
                     f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {key}) {finite}, max({key}) {finite}")  # fmt: skip
    where = where_sql(experiment_id, (), args)
    return f"SELECT {', '.join(parts) or 'NULL'} FROM {RUNS} WHERE {where}", args
