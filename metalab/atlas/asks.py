"""What a URL asks for (query parameters), read the same way by the pages and the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from .query import (
    MAX_PAGE,
    Catalogue,
    Field,
    Filter,
    QueryError,
    RunsQuery,
    cursor_for,
    parse_condition,
    parse_where,
)

__all__ = ["Params", "bounded_int", "default_sort", "differing", "run_columns", "runs_query", "value_of"]

DEFAULT_COLUMNS = 12


class Params(Protocol):
    """Starlette's QueryParams, or anything with the same two methods."""

    def get(self, key: str, default: str | None = None) -> str | None: ...
    def getlist(self, key: str) -> list[str]: ...


def bounded_int(params: Params, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number from {low} to {high}, not {text!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be from {low} to {high}, not {value}")
    return value


def default_sort(catalogue: Catalogue) -> Field:
    """The first numeric metric (what a researcher ranks by), else the run id."""
    for field in catalogue.metrics.values():
        if field.numeric:
            return field
    return catalogue.field("run_id")


def conditions_from(params: Params, catalogue: Catalogue) -> tuple[Filter, ...]:
    """The ``where`` filters and the ``status`` param (one condition: its value is never parsed
    as a filter), all ANDed."""
    texts = [text for text in params.getlist("where") if text.strip()]
    status = params.get("status") or ""
    extra = (parse_condition(f"status = {status}", catalogue),) if status else ()
    return (*parse_where(texts, catalogue), *extra)


def runs_query(experiment_id: str, catalogue: Catalogue, params: Params) -> RunsQuery:
    sort_ref = params.get("sort") or ""
    sort = catalogue.field(sort_ref) if sort_ref else default_sort(catalogue)
    order = params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise QueryError(f"order is asc or desc, not {order!r}")
    cursor_text = params.get("cursor")
    return RunsQuery(
        experiment_id=experiment_id,
        conditions=conditions_from(params, catalogue),
        sort=sort,
        descending=order == "desc",
        limit=bounded_int(params, "limit", 50, 1, MAX_PAGE),
        after=cursor_for(cursor_text, sort) if cursor_text else None,
    )


def run_columns(catalogue: Catalogue, params: Params) -> list[Field]:
    """The param and metric columns to show: those asked for (``columns=a,b`` or repeated), else
    every param then every metric, up to a dozen."""
    asked = [name for text in params.getlist("columns") for name in text.split(",") if name.strip()]
    if asked:
        return [catalogue.field(name) for name in asked]
    fields = catalogue.fields
    return fields[:DEFAULT_COLUMNS]


def value_of(run: Mapping, field: Field) -> object:
    """A run's value of a field, from the row the index gave."""
    if field.kind == "column":
        return run.get(field.name)
    values = run.get("params" if field.kind == "param" else "metrics") or {}
    return values.get(field.name)


def differing(runs: Sequence[Mapping], fields: Sequence[Field]) -> set[str]:
    """The refs of the fields whose values are not all the same across ``runs``."""
    return {field.ref for field in fields if len({repr(value_of(run, field)) for run in runs}) > 1}
