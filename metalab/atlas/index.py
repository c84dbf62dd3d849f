"""Atlas's reads of the PostgreSQL index: experiments, catalogues, pages of runs, plot data.

Every statement comes from ``query`` (names checked against the catalogue, values bound); the
connections are read-only sessions (``AtlasSettings.conninfo``), so Atlas cannot write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..errors import DatabaseUnavailable, PgWireError
from ..services.pgwire import check_login
from ..store.index_schema import INDEX_SCHEMA, SORT_INDEXES_READ
from ..store.records import STALE_AFTER
from .query import (
    RUN_FIELDS,
    Catalogue,
    Cursor,
    Field,
    Filter,
    RunsQuery,
    encode_cursor,
    histogram_sql,
    plot_sql,
    summary_sql,
)
from .settings import AtlasSettings

__all__ = ["ACTIVE_GRACE", "Index", "experiment_active"]

ACTIVE_GRACE = timedelta(seconds=10)  # see experiment_active

# Counts by status from run_counts (kept by the index's trigger: no count of rows), and how many
# of the 'running' rows are live (a heartbeat within STALE_AFTER, as query.SHOWN_STATUS says; the
# rest are shown as interrupted). Only that split counts rows, and only while some run's
# heartbeat is recent.
_FRESH = f"now() - interval '{STALE_AFTER:g} seconds'"
_EXPERIMENTS = f"""
SELECT x.*, CASE WHEN x.running > 0 AND x.heartbeat >= {_FRESH} THEN
           (SELECT count(*) FROM {INDEX_SCHEMA}.runs r
            WHERE r.experiment_id = x.experiment_id AND r.status = 'running' AND r.finished_at >= {_FRESH})
       ELSE 0 END AS live, now()
FROM (SELECT e.experiment_id, e.name, e.version, e.created_at,
             coalesce(sum(c.runs), 0)::bigint AS runs,
             coalesce(sum(c.runs) FILTER (WHERE c.status = 'success'), 0)::bigint AS succeeded,
             coalesce(sum(c.runs) FILTER (WHERE c.status = 'failed'), 0)::bigint AS failed,
             coalesce(sum(c.runs) FILTER (WHERE c.status = 'running'), 0)::bigint AS running,
             coalesce(sum(c.runs) FILTER (WHERE c.status = 'interrupted'), 0)::bigint AS interrupted,
             max(c.last_finished) FILTER (WHERE c.status = 'running') AS heartbeat,
             greatest(e.updated_at, max(c.last_finished)) AS last_activity,
             e.description
      FROM {INDEX_SCHEMA}.experiments e
      LEFT JOIN {INDEX_SCHEMA}.run_counts c USING (experiment_id)
      WHERE {{which}}
      GROUP BY e.experiment_id) x
ORDER BY x.last_activity DESC NULLS LAST, x.experiment_id
"""
_SEARCH = "%(all)s OR e.name ILIKE %(pattern)s OR e.experiment_id ILIKE %(pattern)s"
_ONE = "e.experiment_id = %(experiment)s"
# One row with NULLs for an experiment with no runs yet; no row for an unknown experiment.
_CATALOGUE = f"""
SELECT c.kind, c.name, c.type, c.slot FROM {INDEX_SCHEMA}.experiments e
LEFT JOIN {INDEX_SCHEMA}.catalogue c USING (experiment_id) WHERE e.experiment_id = %s ORDER BY c.kind, c.name
"""
SUMMARY_CACHE = 64  # experiments whose metric summaries are kept, until their runs change
_RUNS_BY_ID = f"SELECT {RUN_FIELDS} FROM {INDEX_SCHEMA}.runs WHERE experiment_id = %s AND run_id = ANY(%s)"
_RUN_KEYS = tuple(name.split()[-1] for name in RUN_FIELDS.split(","))  # "EXPR AS status" -> status


class Index:
    """The queries behind every page and API answer.

    The connection pool (and psycopg with it, a quarter of a second to import) is made in a
    thread once Atlas is up; /api/health logs in with metalab's own wire client instead, so Atlas
    answers it as soon as it listens."""

    def __init__(self, settings: AtlasSettings) -> None:
        self.settings = settings
        self._pool: Any = None
        self._opening = threading.Thread(target=self._open_pool, name="atlas-pool", daemon=True)
        self._schema_seen = False
        self._summaries: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._local = threading.local()  # .snapshot: this thread's snapshot connection (see snapshot)

    def open(self) -> None:
        self._opening.start()

    def _open_pool(self) -> None:
        from psycopg_pool import ConnectionPool

        # autocommit: a read is one round trip, with no BEGIN before it or ROLLBACK when the pool takes it back
        pool = ConnectionPool(self.settings.conninfo(), min_size=1, max_size=4, open=False, name="atlas",
                              kwargs={"autocommit": True})
        pool.open(wait=False)
        self._pool = pool

    def close(self) -> None:
        if self._opening.is_alive() or self._pool is not None:
            self._opening.join(10)
        if self._pool is not None:
            self._pool.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection; DatabaseUnavailable when the index does not answer."""
        self._opening.join(10)
        import psycopg

        try:
            if self._pool is None:
                raise DatabaseUnavailable("Atlas is still starting; try again shortly")
            held = getattr(self._local, "snapshot", None)
            if held is None:
                with self._pool.connection(timeout=5) as conn:
                    yield conn
                return
            if not held:  # the snapshot's first read: its connection and transaction start now
                held.append(self._pool.getconn(timeout=5))
                held[0].execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield held[0]
        except psycopg.OperationalError:  # (psycopg's message may name the server)
            raise DatabaseUnavailable("the database does not answer; try again shortly") from None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read of this thread inside sees the index at one moment: one connection, one
        REPEATABLE READ read-only transaction (opened by the first read), while the indexer commits
        around it. A page's header counts, its table, each run's status and the running badge
        therefore agree (``now()`` too is the transaction's start: see query.SHOWN_STATUS).
        Every request runs in one (``api.bind``); nested, the outer snapshot holds. A read
        repeats inside one, so the experiment and its catalogue are read once per snapshot."""
        if getattr(self._local, "snapshot", None) is not None:
            yield
            return
        held: list[Any] = []
        self._local.snapshot = held
        self._local.read = {}  # (what, experiment id) -> what the snapshot's read of it gave
        try:
            yield
        finally:
            self._local.snapshot = self._local.read = None
            for conn in held:
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    pass  # a broken connection: the pool discards it
                self._pool.putconn(conn)

    def rows(self, statement: str, args: Any = None, *, binary: bool = False) -> list[tuple[Any, ...]]:
        """A read's rows (in the request's snapshot, if one is held); ``binary``: arrays and
        bytea as the server sends them, without text conversion."""
        with self.connection() as conn, conn.cursor(binary=binary) as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall()

    def healthy(self) -> bool:
        """The database takes Atlas's login and answers ``SELECT 1``."""
        s = self.settings
        try:
            check_login(host=s.db_host, port=s.db_port, user=s.db_user, password=s.db_password.reveal(),
                        database=s.db_name, timeout=2.0)
        except (OSError, PgWireError):
            return False
        return True

    def has_schema(self) -> bool:
        """The index exists (at a version with run counts); once seen, it stays."""
        if not self._schema_seen:
            found = self.rows("SELECT to_regclass(%s)", (f"{INDEX_SCHEMA}.run_counts",))[0][0] is not None
            self._schema_seen = found
        return self._schema_seen

    # -- experiments --------------------------------------------------------------------------

    def experiments(self, search: str = "") -> list[dict[str, Any]]:
        """Every experiment (or those whose name or id contains ``search``), latest activity first."""
        if not self.has_schema():
            return []
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.rows(_EXPERIMENTS.format(which=_SEARCH), {"all": not search, "pattern": pattern})
        return [_experiment(row) for row in rows]

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        """One experiment as ``experiments`` lists it; LookupError if the index has no such experiment."""
        return dict(self._once("experiment", experiment_id, self._read_experiment))

    def _read_experiment(self, experiment_id: str) -> dict[str, Any]:
        rows = self.rows(_EXPERIMENTS.format(which=_ONE), {"experiment": experiment_id}) if self.has_schema() else []
        if not rows:
            raise LookupError(f"no experiment {experiment_id!r} in the index")
        return _experiment(rows[0])

    def catalogue(self, experiment_id: str) -> Catalogue:
        """The experiment's params and metrics; LookupError if the index has no such experiment."""
        return self._once("catalogue", experiment_id, self._read_catalogue)

    def _read_catalogue(self, experiment_id: str) -> Catalogue:
        rows = self.rows(_CATALOGUE, (experiment_id,)) if self.has_schema() else []
        if not rows:
            raise LookupError(f"no experiment {experiment_id!r} in the index")
        return Catalogue(row for row in rows if row[0] is not None)

    def _once(self, what: str, experiment_id: str, read: Callable[[str], Any]) -> Any:
        """``read(experiment_id)``, once per snapshot (every time outside one)."""
        memo = getattr(self._local, "read", None)
        if memo is None:
            return read(experiment_id)
        if (what, experiment_id) not in memo:
            memo[what, experiment_id] = read(experiment_id)
        return memo[what, experiment_id]

    def summaries(self, experiment: dict[str, Any], catalogue: Catalogue) -> list[dict[str, Any]]:
        """count, min, median and max of every numeric metric; one pass over the runs, kept until
        the experiment's run counts or last activity change."""
        experiment_id = experiment["experiment_id"]
        signature = (experiment["runs"], experiment["succeeded"], experiment["last_activity"], len(catalogue.metrics))
        cached = self._summaries.get(experiment_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        fields = [field for field in catalogue.metrics.values() if field.numeric]
        summaries = []
        if fields:
            statement, args = summary_sql(experiment_id, fields)
            values = self.rows(statement, args)[0]
            summaries = [
                {"name": field.name, "count": values[4 * i], "min": _finite(values[4 * i + 1]),
                 "median": _finite(values[4 * i + 2]), "max": _finite(values[4 * i + 3])}
                for i, field in enumerate(fields)
            ]
        if len(self._summaries) >= SUMMARY_CACHE:
            self._summaries.pop(next(iter(self._summaries)))
        self._summaries[experiment_id] = (signature, summaries)
        return summaries

    # -- runs ---------------------------------------------------------------------------------

    def page(self, query: RunsQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs and the cursor of the next page (None on the last)."""
        keys: list[tuple[int, Any, str]] = []
        with self.connection() as conn:
            if query.merge_candidates():
                pairs = conn.execute(SORT_INDEXES_READ, (query.experiment_id,)).fetchall()
                query = dataclasses.replace(query, sort_indexes=frozenset(pairs))
            # A sort index is partial (one experiment's runs): only a plan made for the bound
            # experiment id can use it, so these statements are never prepared (psycopg prepares
            # a statement run five times, and PostgreSQL may then keep one plan for any id).
            prepare = False if query.sort_indexes else None
            for segment, statement, args in query.segments():
                for run_id, key in conn.execute(statement, args, prepare=prepare).fetchall():
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
        with self.connection() as conn, conn.transaction(), conn.cursor(name="atlas_export") as cursor:
            cursor.itersize = 2000
            cursor.execute(statement, args)
            for row in cursor:
                yield _run(row)

    def runs(self, experiment_id: str, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """These runs, in the order asked (ids the index lacks are left out)."""
        rows = self.rows(_RUNS_BY_ID, (experiment_id, list(run_ids)))
        by_id = {row[0]: _run(row) for row in rows}
        return [by_id[run_id] for run_id in run_ids if run_id in by_id]

    # -- plots --------------------------------------------------------------------------------

    def plot(self, experiment_id: str, x: Field, y: Field, group: Field | None,
             conditions: Sequence[Filter]) -> dict[str, list[dict[str, Any]]]:
        """{group: [{x, mean, spread, n}, ...]} (one group, "", when ungrouped)."""
        statement, args = plot_sql(experiment_id, x, y, group, conditions)
        groups: dict[str, list[dict[str, Any]]] = {}
        for g, x_value, mean, spread, n in self.rows(statement, args):
            label = "" if g is None else str(g)
            groups.setdefault(label, []).append({"x": x_value, "mean": mean, "spread": spread, "n": n})
        return groups

    def histogram(self, experiment_id: str, field: Field, bins: int,
                  conditions: Sequence[Filter]) -> list[dict[str, Any]]:
        statement, args = histogram_sql(experiment_id, field, bins, conditions)
        rows = self.rows(statement, args)
        if not rows:
            return []
        lo, hi = rows[0][1], rows[0][2]
        width = (hi - lo) / bins if hi > lo else 1.0
        counts = {bucket: count for bucket, _, _, count in rows}
        return [{"lo": lo + (b - 1) * width, "hi": lo + b * width, "count": counts.get(b, 0)}
                for b in range(1, (bins if hi > lo else 1) + 1)]


def _experiment(row: tuple[Any, ...]) -> dict[str, Any]:
    (experiment_id, name, version, created, runs, succeeded, failed, running, interrupted, _, last, description,
     live, now) = row
    expected = (description or {}).get("runs")
    expected = expected if type(expected) is int else None
    interrupted += running - live  # running rows without a recent heartbeat
    active = experiment_active(live=live, finished=runs - live - interrupted, expected=expected,
                               last_activity=last, now=now)
    last_text = last.isoformat() if last else None
    return {
        "experiment_id": experiment_id, "name": name, "version": version,
        "created_at": created.isoformat() if created else None,
        "runs": runs, "succeeded": succeeded, "failed": failed, "running": live, "interrupted": interrupted,
        "expected": expected, "last_activity": last_text, "active": active,
        # what a live page compares to know the index changed (atlas.js)
        "signature": f"{runs}/{succeeded}/{failed}/{live}/{interrupted}/{int(active)}/{last_text}",
        "description": _public_description(description),
    }


def experiment_active(*, live: int, finished: int, expected: int | None, last_activity: datetime | None,
                      now: datetime) -> bool:
    """Whether an experiment shows as running: while a run of it is in progress (a running record
    with a recent heartbeat), and, for the moment between one run's end and the next one's
    start, while fewer of its runs have finished than it has (experiment.json's ``runs``) and
    something landed within ACTIVE_GRACE. So the badge ends when the last run ends, and soon
    after a sweep that stopped short."""
    if live > 0:
        return True
    if expected is None or finished >= expected or last_activity is None:
        return False
    return now - last_activity < ACTIVE_GRACE


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
