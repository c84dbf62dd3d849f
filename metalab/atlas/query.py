"""What a request asks of an experiment's runs, checked against its catalogue and turned into SQL.

Pure: no database here. A field named in a sort, filter or plot must be in the experiment's
catalogue (or be one of the run's own columns); it then becomes either ``numbers[slot]`` (the
slot an integer from the catalogue) or a bind parameter. Nothing a request says is ever part of
the SQL text, and every statement only reads.

A filter (``where``) is a small language: conditions ``FIELD OP VALUE`` and ``FIELD [not] in (V, ...)``
joined by ``and`` (``&&``, ``;``) and ``or`` (``||``), ``and`` binding tighter, with ``not`` and
parentheses. It parses to a tree of frozen dataclasses (:class:`Condition`, :class:`In`,
:class:`And`, :class:`Or`, :class:`Not`) whose ``sql`` emits parenthesised SQL. ``not`` is the
complement: a run that lacks the field matches ``not loss < 1`` (and ``lr not in (...)``), while
``loss >= 1`` and ``lr != 0.1`` want a value.
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

from ..errors import QueryError
from ..store.index_schema import INDEX_SCHEMA
from ..store.records import STALE_AFTER

__all__ = [
    "COLUMNS",
    "RUN_FIELDS",
    "SHOWN_STATUS",
    "And",
    "Args",
    "Catalogue",
    "Condition",
    "Cursor",
    "Field",
    "Filter",
    "In",
    "Not",
    "Or",
    "RunsQuery",
    "cursor_for",
    "decode_cursor",
    "encode_cursor",
    "histogram_sql",
    "parse_condition",
    "parse_filter",
    "parse_where",
    "plot_sql",
    "summary_sql",
    "where_text",
]

RUNS = f"{INDEX_SCHEMA}.runs"
MAX_PAGE = 500
# The run's own columns, and how they compare: a param or metric of the same name is reached as
# ``params.NAME`` / ``metrics.NAME``.
COLUMNS = {"run_id": "string", "status": "string", "started_at": "time", "duration": "number",
           "replicate": "number", "seed": "number"}
STATUSES = ("success", "failed", "running", "interrupted")
# The status Atlas shows: a running record whose heartbeat (its row's finished_at) is older than
# STALE_AFTER is interrupted (its process was killed, or its node lost); a newer line changes it
# back. now() is the transaction's start, so the statements of one snapshot (Index.snapshot)
# agree on every run's status, and the counts with them.
SHOWN_STATUS = (f"CASE WHEN status = 'running' AND finished_at < now() - interval '{STALE_AFTER:g} seconds' "
                "THEN 'interrupted' ELSE status END")
_NUMERIC_TYPES = ("number", "mixed")
_OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
_CONDITION = re.compile(r"^\s*(?P<field>.+?)\s*(?P<op><=|>=|!=|==|=|<|>|~)\s*(?P<value>.*?)\s*$", re.DOTALL)
# The filter language's stops. A keyword is a whole word: followed by a space, a parenthesis or the end.
_KEYWORD_END = r"(?=[\s()]|\Z)"
# A run of spaces is tried once, from its start ((?<!\s)): a search is then linear, not quadratic.
_SEPARATOR = rf"&&|\|\||;|(?<!\s)\s+(?:and|or){_KEYWORD_END}"
_FIELD_END = re.compile(rf"<=|>=|!=|==|=|<|>|~|(?P<in>(?<!\s)\s+(?P<not>not\s+)?in\s*\()|[()]|{_SEPARATOR}|\Z", re.I)
_VALUE_END = re.compile(rf"[()]|{_SEPARATOR}|\Z", re.I)
_ITEM_END = re.compile(r"[(),]|\Z")
_AFTER_VALUE = re.compile(rf"\s*(?:\)|&&|\|\||;|(?:and|or){_KEYWORD_END}|\Z)", re.I)  # what may follow a quoted value
_AFTER_ITEM = re.compile(r"\s*([,)])")
_JOIN = re.compile(rf"\s*(&&|\|\||;|(?:and|or){_KEYWORD_END})\s*", re.I)
_TERM_END = re.compile(rf"\s*(?:\)|\|\||or{_KEYWORD_END}|\Z)", re.I)
_NOT = re.compile(rf"not{_KEYWORD_END}(?!\s*(?:[<>=!~]))\s*", re.I)  # not a field called 'not'
_OR_WORD = re.compile(r"\|\||\bor\b", re.I)
_SPACE = re.compile(r"\s*")
MAX_DEPTH = 32  # parentheses and nots inside each other
_FINITE = "{k} > '-Infinity' AND {k} < 'Infinity'"


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
        params = ", ".join(map(_shown, sorted(self.params))) or "none"  # a name with a newline: repr, so one line
        metrics = ", ".join(map(_shown, sorted(self.metrics))) or "none"
        return f"this experiment has params {params}; metrics {metrics}; and run columns {', '.join(COLUMNS)}"

    def numeric_field(self, ref: str, role: str) -> Field:
        field = self.field(ref)
        if not field.numeric or field.kind == "column" and field.name in ("run_id", "status"):
            raise QueryError(f"{role} needs a numeric field; {field.ref} is {field.type}")
        return field


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


# -- conditions and filters ------------------------------------------------------------------


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
        key = _key(self.field, (self.value,), args)
        if op == "~":
            return f"{key} LIKE {args.add(_like_pattern(str(self.value)))}"
        return f"{key} {op} {args.add(self.value)}"


def _key(field: Field, values: Sequence[object], args: Args) -> str:
    """The field's SQL; the status column as Atlas shows it (SHOWN_STATUS) when a value asked for
    is one that a stale heartbeat changes (running, interrupted), else the stored one (the same
    for success and failed, and plainer)."""
    if field.kind == "column" and field.name == "status" and any(v in ("running", "interrupted") for v in values):
        return f'({SHOWN_STATUS}) COLLATE "C"'
    return field.expression(args)


@dataclass(frozen=True)
class In:
    """``FIELD in (V, ...)``: the field equals one of the values, all of one kind (as a Condition's
    with ``=`` would be: numbers for a numeric field, text for a text one, true/false for a bool)."""

    field: Field
    values: tuple[float | str | bool | datetime, ...]

    def sql(self, args: Args) -> str:
        if self.field.kind != "column" and isinstance(self.values[0], bool):
            name, items = args.add(self.field.name), ", ".join(f"{args.add(json.dumps(v))}::jsonb" for v in self.values)
            return f"({self.field.kind}s -> {name}) IN ({items})"
        key = _key(self.field, self.values, args)
        return f"{key} IN ({', '.join(args.add(value) for value in self.values)})"


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]

    def sql(self, args: Args) -> str:
        return "(" + " AND ".join(part.sql(args) for part in self.parts) + ")"


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]

    def sql(self, args: Args) -> str:
        return "(" + " OR ".join(part.sql(args) for part in self.parts) + ")"


@dataclass(frozen=True)
class Not:
    """The complement: also the runs for which ``part`` is unknown (they lack its field)."""

    part: Filter

    def sql(self, args: Args) -> str:
        return f"(NOT coalesce({self.part.sql(args)}, false))"


Filter = Condition | In | And | Or | Not


def parse_where(texts: Sequence[str], catalogue: Catalogue) -> list[Filter]:
    """The filters ``where`` strings ask for, to be ANDed: each text's top-level and-ed parts, in
    order (``loss < 0.2``, ``lr = 0.01 and status = failed``, ``opt in (adam, sgd) or not lr > 1``)."""
    filters: list[Filter] = []
    for text in texts:
        node = parse_filter(text, catalogue)
        filters.extend(() if node is None else node.parts if isinstance(node, And) else (node,))
    return filters


def parse_filter(text: str, catalogue: Catalogue) -> Filter | None:
    """One ``where`` text as a tree; None when it says nothing (blank, or only ``;``)."""
    return _Parser(text, catalogue).parse()


def where_text(texts: Sequence[str]) -> str:
    """Several ``where`` texts as one that means the same (for a filter box): joined by ``;``,
    a text with an ``or`` in parentheses."""
    texts = [text for text in texts if text.strip()]
    return "; ".join(f"({text})" if len(texts) > 1 and _OR_WORD.search(text) else text for text in texts)


# Hand-written recursive descent rather than lark: importing lark and building its grammar cost
# ~85 ms (measured) of Atlas's 0.5 s start, and a lexer cannot keep names and values with spaces.
class _Parser:
    """expr := term (or term)*; term := factor (and factor)*; factor := '(' expr ')' | not factor
    | FIELD [not] in '(' value, ... ')' | FIELD OP value. ``;`` is an and that may repeat or trail."""

    def __init__(self, text: str, catalogue: Catalogue) -> None:
        self.text, self.catalogue, self.at, self.depth = text, catalogue, 0, 0

    def fail(self, problem: str, at: int, fix: str) -> QueryError:
        shown = repr(self.text) if len(self.text) <= 120 else f"...{self.text[max(0, at - 40) : at + 40]!r}..."
        return QueryError(f"{problem} at character {at + 1} of {shown}: {fix}")

    def skip(self) -> int:
        self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]
        return self.at

    def parse(self) -> Filter | None:
        node = self.expr()
        if self.skip() < len(self.text):  # only a ')' ends an expression early
            raise self.fail("unbalanced parenthesis: the ')'", self.at,
                            "it closes no '('; remove it or quote the value")
        return node

    def expr(self) -> Filter | None:
        terms = [self.term()]
        while join := self.join("or", "||"):
            terms.append(self.term())
            if terms[-2] is None or terms[-1] is None:
                raise self.fail(f"a dangling {join[1]!r}", join.start(1), "put a condition on each side of it")
        return terms[0] if len(terms) == 1 else Or(tuple(terms))  # type: ignore[arg-type]

    def term(self) -> Filter | None:
        factors: list[Filter] = []
        while True:
            while self.join(";"):
                pass
            if _TERM_END.match(self.text, self.at):
                break
            factors.append(self.factor())
            join = self.join("and", "&&", ";")
            if join is None:
                if not _TERM_END.match(self.text, self.at):
                    raise self.fail(f"{self.text[self.skip() :][:30]!r} follows a condition", self.at,
                                    "join conditions with and, or, ;")
                break
            if join[1] != ";" and _TERM_END.match(self.text, self.at):
                raise self.fail(f"a dangling {join[1]!r}", join.start(1), "put a condition on each side of it")
        return None if not factors else factors[0] if len(factors) == 1 else And(tuple(factors))

    def join(self, *words: str) -> re.Match[str] | None:
        found = _JOIN.match(self.text, self.at)
        if found is None or found[1].lower() not in words:
            return None
        self.at = found.end()
        return found

    def factor(self) -> Filter:
        start = self.skip()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("too deep a filter", start, f"nest at most {MAX_DEPTH} parentheses and nots")
        join = _JOIN.match(self.text, start)
        if join and join[1] != ";":
            raise self.fail(f"a dangling {join[1]!r}", start, "put a condition on each side of it")
        if self.text.startswith("(", start):
            self.at = start + 1
            node = self.expr()
            if not self.text.startswith(")", self.skip()):
                raise self.fail("unbalanced parenthesis: the '('", start, "it is never closed; add a ')'")
            if node is None:
                raise self.fail("empty parentheses", start, "put a condition inside them")
            self.at += 1
        elif negation := _NOT.match(self.text, start):
            self.at = negation.end()
            if _TERM_END.match(self.text, self.at):
                raise self.fail("a dangling 'not'", start, "put a condition after it")
            node = Not(self.factor())
        else:
            node = self.condition(start)
        self.depth -= 1
        return node

    def condition(self, start: int) -> Filter:
        head = _scan(self.text, start, _FIELD_END)
        if head["in"]:
            return self.any_of(start, head)
        if head[0] not in _OPERATORS:
            raise _unreadable(self.text[start : head.start()])
        value = _SPACE.match(self.text, head.end()).end()  # type: ignore[union-attr]
        end = self.quoted(value, _AFTER_VALUE) or _scan(self.text, value, _VALUE_END).start()
        self.at = end
        if not self.text[start : head.start()].strip() or not self.text[value:end].strip():
            raise _unreadable(self.text[start:end])
        return _condition(self.catalogue.field(self.text[start : head.start()]), head[0], self.text[value:end].strip())

    def any_of(self, start: int, head: re.Match[str]) -> Filter:
        field, opened, raws = self.catalogue.field(self.text[start : head.start()]), head.end() - 1, []
        self.at = head.end()
        while True:
            at = self.skip()
            end = self.quoted(at, _AFTER_ITEM) or _scan(self.text, at, _ITEM_END).start()
            close = _AFTER_ITEM.match(self.text, end)
            if close is None:
                raise self.fail("unbalanced parenthesis: the '('", opened, "it is never closed; add a ')'")
            if not self.text[at:end].strip():
                if close[1] == ")" and not raws:
                    raise self.fail("an empty in ()", opened, "list at least one value, as in lr in (0.1, 0.01)")
                raise self.fail("an empty value", at, "write a value between the commas ('' for empty text)")
            raws.append(self.text[at:end].strip())
            self.at = close.end()
            if close[1] == ")":
                break
        groups: dict[tuple[Field, bool], list] = {}  # a mixed field's numbers and texts compare apart
        for raw in raws:
            condition = _condition(field, "=", raw)
            groups.setdefault((condition.field, isinstance(condition.value, bool)), []).append(condition.value)
        parts = [In(key[0], tuple(values)) for key, values in groups.items()]
        node: Filter = parts[0] if len(parts) == 1 else Or(tuple(parts))
        return Not(node) if head["not"] else node

    def quoted(self, at: int, after: re.Pattern[str]) -> int | None:
        """The end of a value that starts with a quote and closes before what may follow it."""
        if self.text[at : at + 1] in ("'", '"'):
            close = self.text.find(self.text[at], at + 1)
            if close > 0 and after.match(self.text, close + 1):
                return close + 1
        return None


def _scan(text: str, at: int, ends: re.Pattern[str]) -> re.Match[str]:
    """The first of ``ends`` from ``at`` on, past any parentheses a name or value holds, as f(x)."""
    depth = 0
    while True:
        found = ends.search(text, at)
        assert found is not None  # every pattern ends with \Z
        if found[0] == "(":
            depth += 1
        elif found[0] == ")" and depth:
            depth -= 1
        else:
            return found
        at = found.end()


def _unreadable(text: str) -> QueryError:
    return QueryError(f"cannot read the condition {text.strip()!r}: write FIELD OP VALUE, OP one of "
                      f"{' '.join(_OPERATORS)} (for example: loss < 0.2), or FIELD in (VALUE, ...)")


def parse_condition(text: str, catalogue: Catalogue) -> Condition:
    """One condition ``FIELD OP VALUE`` (no and, or, parentheses)."""
    match = _CONDITION.match(text)
    if match is None or not match["value"]:
        raise _unreadable(text)
    return _condition(catalogue.field(match["field"]), match["op"], match["value"])


def _condition(field: Field, op: str, value: str) -> Condition:
    op = "=" if op == "==" else op
    raw = _unquote(value)
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


def _tested_param(part: Filter) -> Field | None:
    """The numeric param ``part`` tests, when it tests only that one, by number, and a run
    without it never passes (no ``not``): the field a sort index can merge over."""
    if isinstance(part, Condition):
        numeric = part.op != "~" and isinstance(part.value, float)
        return part.field if numeric and part.field.kind == "param" and part.field.numeric else None
    if isinstance(part, In):
        numeric = all(isinstance(value, float) for value in part.values)
        return part.field if numeric and part.field.kind == "param" and part.field.numeric else None
    if isinstance(part, (And, Or)):
        fields = {_tested_param(inner) for inner in part.parts}
        return fields.pop() if len(fields) == 1 and None not in fields else None
    return None


def where_sql(experiment_id: str, conditions: Sequence[Filter], args: Args) -> str:
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
    conditions: tuple[Filter, ...]
    sort: Field
    descending: bool = False
    limit: int = 50
    after: Cursor | None = None
    # (filter slot, sort slot) pairs with a sort index (metalab.store.sort_indexes): the index's
    # to say, set by Index.page when merge_candidates() names any
    sort_indexes: frozenset[tuple[int, int]] = frozenset()

    def segments(self) -> list[tuple[int, str, Args]]:
        """The statements that give the page's (run_id, key) rows, in order: first the runs that
        have the sort key, then those without it; each asks for ``limit + 1`` rows, so the caller
        knows whether another page follows. A numeric sort walks the slot's index, or merges
        over a sort index (see _merged)."""
        after = self.after
        out = []
        if after is None or after.segment == 0:
            merge = self._merge_part()
            out.append((0, *(self._merged(after, merge) if merge is not None else self._keyed(after))))
        if self.sort.kind != "column" or self.sort.type == "time":  # the other columns are never null
            out.append((1, *self._unkeyed(after if after is not None and after.segment == 1 else None)))
        return out

    def merge_candidates(self) -> list[tuple[int, int]]:
        """The (filter slot, sort slot) pairs a sort index could serve this page with: a metric
        sort, and each top-level condition that tests one numeric param only."""
        if self.sort.kind != "metric" or not self.sort.numeric:
            return []
        fields = (_tested_param(part) for part in self.conditions)
        return list(dict.fromkeys((field.slot, self.sort.slot) for field in fields if field is not None))  # type: ignore[misc]

    def _merge_part(self) -> int | None:
        """Which condition to merge over: the first whose pair has a sort index."""
        if not self.sort_indexes:
            return None
        for number, part in enumerate(self.conditions):
            field = _tested_param(part)
            if field is not None and (field.slot, self.sort.slot) in self.sort_indexes:
                return number
        return None

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

    def _merged(self, after: Cursor | None, part: int) -> tuple[str, Args]:
        """The rows _keyed gives, read over the sort index of condition ``part``'s param: its
        distinct values (a skip scan, one index descent each: a sort index is made for a param of
        few values), those that pass ``part``, and for each of them the first rows in sort order
        that pass the other conditions, merged. The same rows, because ``part`` tests the param
        alone and a run without the param never passes it."""
        args = Args()
        key = self.sort.expression(args)
        tested = self.conditions[part]
        value = _tested_param(tested).expression(args)  # type: ignore[union-attr]
        experiment = args.add(self.experiment_id)
        of_experiment = f"FROM {RUNS} WHERE experiment_id = {experiment}"
        values = (f"v(x) AS ((SELECT min({value}) {of_experiment}) UNION ALL "
                  f"SELECT (SELECT min({value}) {of_experiment} AND {value} > v.x) FROM v WHERE v.x IS NOT NULL)")
        # ``part`` tested on one run of each value (it reads the param alone): on every run of a
        # value that fails it, EXISTS would read them all
        kept = (f"kept AS (SELECT x FROM v CROSS JOIN LATERAL (SELECT numbers {of_experiment} AND {value} = v.x "
                f"LIMIT 1) one WHERE {tested.sql(args)})")
        rest = [c for number, c in enumerate(self.conditions) if number != part]
        where = where_sql(self.experiment_id, rest, args)
        direction, compare = ("DESC", "<") if self.descending else ("ASC", ">")
        limit = args.add(self.limit + 1)
        inner = f"SELECT run_id, {key} AS sort_key FROM {RUNS} WHERE {where} AND {value} = kept.x AND {key} IS NOT NULL"
        if after is not None:
            inner += f" AND ({key}, run_id) {compare} ({args.add(after.key)}, {args.add(after.run_id)})"
        inner += f" ORDER BY {key} {direction}, run_id {direction} LIMIT {limit}"
        statement = (f"WITH RECURSIVE {values}, {kept} SELECT r.run_id AS id, r.sort_key FROM kept "
                     f"CROSS JOIN LATERAL ({inner}) r ORDER BY r.sort_key {direction}, r.run_id {direction} LIMIT {limit}")
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
                f"ORDER BY {key} IS NULL, {key} {direction}, run_id {direction}"), args)


# What a page shows of a run (the row Atlas hands out: never ``numbers``, which is derived).
RUN_FIELDS = (f"run_id, {SHOWN_STATUS} AS status, started_at, finished_at, duration, replicate, seed, params, "
              "metrics, error")


# -- plots and summaries ----------------------------------------------------------------------


def plot_sql(experiment_id: str, x: Field, y: Field, group: Field | None,
             conditions: Sequence[Filter]) -> tuple[str, Args]:
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


def histogram_sql(experiment_id: str, field: Field, bins: int, conditions: Sequence[Filter]) -> tuple[str, Args]:
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
    """count, min, median and max of each numeric field's finite values, in one pass, over the
    finished runs (a run in progress has only its values so far)."""
    args = Args()
    parts = []
    for field in fields:
        key = field.expression(args)
        finite = f"FILTER (WHERE {_FINITE.format(k=key)})"
        parts.append(f"count({key}) {finite}, min({key}) {finite}, "
                     f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {key}) {finite}, max({key}) {finite}")
    where = where_sql(experiment_id, (), args)
    return f"SELECT {', '.join(parts) or 'NULL'} FROM {RUNS} WHERE {where} AND status NOT IN ('running', 'interrupted')", args
