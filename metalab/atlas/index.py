"""Atlas's reads of the PostgreSQL index: experiments, catalogues, pages of runs, plot data.

Every statement comes from ``query`` (names checked against the catalogue, values bound); the
connections are read-only sessions (``AtlasSettings.conninfo``), so Atlas cannot write.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg_pool import ConnectionPool

from ..store.index_schema import INDEX_SCHEMA
from .query import (
    RUN_FIELDS,
    Catalogue,
    Condition,
    Cursor,
    Field,
    RunsQuery,
    encode_cursor,
    histogram_sql,
    plot_sql,
    summary_sql,
)

__all__ = ["ACTIVE_FOR", "Index"]

ACTIVE_FOR = timedelta(minutes=2)  # an experiment with a run finished this recently is "running"

_EXPERIMENTS = f"""
SELECT e.experiment_id, e.name, e.version, e.created_at,
       coalesce(sum(c.runs), 0)::bigint AS runs,
       coalesce(sum(c.runs) FILTER (WHERE c.status = 'success'), 0)::bigint AS succeeded,
       coalesce(sum(c.runs) FILTER (WHERE c.status = 'failed'), 0)::bigint AS failed,
       greatest(e.updated_at, max(c.last_finished)) AS last_activity,
       e.description
FROM {INDEX_SCHEMA}.experiments e
LEFT JOIN {INDEX_SCHEMA}.run_counts c USING (experiment_id)
WHERE %(all)s OR e.name ILIKE %(pattern)s OR e.experiment_id ILIKE %(pattern)s
GROUP BY e.experiment_id
ORDER BY last_activity DESC NULLS LAST, e.experiment_id
"""
_ONE_EXPERIMENT = _EXPERIMENTS.replace("WHERE %(all)s OR e.name ILIKE %(pattern)s OR e.experiment_id ILIKE %(pattern)s",
                                       "WHERE e.experiment_id = %(experiment)s")  # fmt: skip
_CATALOGUE = f"SELECT kind, name, type, slot FROM {INDEX_SCHEMA}.catalogue WHERE experiment_id = %s ORDER BY kind, name"
_RUNS_BY_ID = f"SELECT {RUN_FIELDS} FROM {INDEX_SCHEMA}.runs WHERE experiment_id = %s AND run_id = ANY(%s)"
_RUN_KEYS = tuple(name.strip() for name in RUN_FIELDS.split(","))


class Index:
    """The queries behind every page and API answer."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def _rows(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.pool.connection(timeout=5) as conn:
            return conn.execute(statement, args).fetchall()

    def healthy(self) -> bool:
        try:
            with self.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure to reach the database means "not healthy"
            return False
        return True

    def has_schema(self) -> bool:
        return self._rows("SELECT to_regclass(%s)", (f"{INDEX_SCHEMA}.run_counts",))[0][0] is not None

    # -- experiments --------------------------------------------------------------------------

    def experiments(self, search: str = "") -> list[dict[str, Any]]:
        """Every experiment (or those whose name or id contains ``search``), latest activity first."""
        if not self.has_schema():
            return []
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._rows(_EXPERIMENTS, {"all": not search, "pattern": pattern})
        return [_experiment(row) for row in rows]

    def experiment(self, experiment_id: str) -> dict[str, Any] | None:
        if not self.has_schema():
            return None
        rows = self._rows(_ONE_EXPERIMENT, {"experiment": experiment_id})
        return _experiment(rows[0]) if rows else None

    def catalogue(self, experiment_id: str) -> Catalogue:
        return Catalogue(self._rows(_CATALOGUE, (experiment_id,)))

    def summaries(self, experiment_id: str, catalogue: Catalogue) -> list[dict[str, Any]]:
        """count, min, median and max of every numeric metric."""
        fields = [field for field in catalogue.metrics.values() if field.numeric]
        if not fields:
            return []
        statement, args = summary_sql(experiment_id, fields)
        values = self._rows(statement, args)[0]
        return [
            {"name": field.name, "count": values[4 * i], "min": _finite(values[4 * i + 1]),
             "median": _finite(values[4 * i + 2]), "max": _finite(values[4 * i + 3])}
            for i, field in enumerate(fields)
        ]  # fmt: skip

    # -- runs ---------------------------------------------------------------------------------

    def page(self, query: RunsQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs and the cursor of the next page (None on the last)."""
        keys: list[tuple[int, Any, str]] = []
        with self.pool.connection(timeout=5) as conn:
            for segment, statement, args in query.segments():
                for run_id, key in conn.execute(statement, args).fetchall():
                    keys.append((segment, key, run_id))
                if len(keys) > query.limit:
                    break
            more = len(keys) > query.limit
            keys = keys[: query.limit]
            rows = conn.execute(_RUNS_BY_ID, (query.experiment_id, [run_id for _, _, run_id in keys])).fetchall()
        by_id = {row[0]: _run(row) for row in rows}
        runs = [by_id[run_id] for _, _, run_id in keys if run_id in by_id]
        cursor = encode_cursor(Cursor(*keys[-1])) if more and keys else None
        return runs, cursor

    def export(self, query: RunsQuery) -> Iterator[dict[str, Any]]:
        """Every matching run in page order, read through a server-side cursor (no cap, flat memory)."""
        statement, args = query.export()
        with self.pool.connection(timeout=5) as conn, conn.transaction(), conn.cursor(name="atlas_export") as cursor:
            cursor.itersize = 2000
            cursor.execute(statement, args)
            for row in cursor:
                yield _run(row)

    def runs(self, experiment_id: str, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """These runs, in the order asked (ids the index lacks are left out)."""
        rows = self._rows(_RUNS_BY_ID, (experiment_id, list(run_ids)))
        by_id = {row[0]: _run(row) for row in rows}
        return [by_id[run_id] for run_id in run_ids if run_id in by_id]

    # -- plots --------------------------------------------------------------------------------

    def plot(self, experiment_id: str, x: Field, y: Field, group: Field | None,
             conditions: Sequence[Condition]) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
        """{group: [{x, mean, spread, n}, ...]} (one group, "", when ungrouped)."""
        statement, args = plot_sql(experiment_id, x, y, group, conditions)
        groups: dict[str, list[dict[str, Any]]] = {}
        for g, x_value, mean, spread, n in self._rows(statement, args):
            label = "" if g is None else str(g)
            groups.setdefault(label, []).append({"x": x_value, "mean": mean, "spread": spread, "n": n})
        return groups

    def histogram(self, experiment_id: str, field: Field, bins: int,
                  conditions: Sequence[Condition]) -> list[dict[str, Any]]:  # fmt: skip
        statement, args = histogram_sql(experiment_id, field, bins, conditions)
        rows = self._rows(statement, args)
        if not rows:
            return []
        lo, hi = rows[0][1], rows[0][2]
        width = (hi - lo) / bins if hi > lo else 1.0
        counts = {bucket: count for bucket, _, _, count in rows}
        return [{"lo": lo + (b - 1) * width, "hi": lo + b * width, "count": counts.get(b, 0)}
                for b in range(1, (bins if hi > lo else 1) + 1)]  # fmt: skip


def _experiment(row: tuple[Any, ...]) -> dict[str, Any]:
    experiment_id, name, version, created, runs, succeeded, failed, last, description = row
    active = last is not None and datetime.now(timezone.utc) - last < ACTIVE_FOR
    return {
        "experiment_id": experiment_id, "name": name, "version": version,
        "created_at": created.isoformat() if created else None,
        "runs": runs, "succeeded": succeeded, "failed": failed,
        "last_activity": last.isoformat() if last else None, "active": active,
        "description": _public_description(description),
    }  # fmt: skip


def _public_description(description: dict[str, Any] | None) -> dict[str, Any]:
    """What experiment.json says about the experiment, minus where its store lives."""
    if not description:
        return {}
    return {key: value for key, value in description.items() if key not in ("store", "locator")}


def _run(row: tuple[Any, ...]) -> dict[str, Any]:
    run = dict(zip(_RUN_KEYS, row))
    for key in ("started_at", "finished_at"):
        if run[key] is not None:
            run[key] = run[key].isoformat()
    return run


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
