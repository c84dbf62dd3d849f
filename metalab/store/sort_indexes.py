"""Sort indexes: for a large experiment, one partial index per (param, metric) pair on
``(numbers[param], numbers[metric], run_id)``, carrying ``numbers`` as the slot indexes do, so
that a runs page filtered on the param and sorted by the metric reads only the runs it shows,
from the index alone. (Without ``numbers`` in it, the planner's estimate, which assumes the
param's values are spread evenly along the metric's order, prefers the walk below.)

Why: a page sorted by a metric walks that metric's slot index and skips the runs the filter
drops. When the filter keeps the runs at the far end of the order (small widths have the largest
losses), the walk reads most of the experiment: 27,000 of 100,000 runs for ``width <= 16`` sorted
by loss, 6 ms of the page's 10 ms budget (measured). Over a (width, loss) index, Atlas's page
merges the first runs of each width value the filter keeps (``RunsQuery`` in
``metalab.atlas.query``): 0.5 ms.

Which pairs: every numeric param with 2 to MAX_VALUES distinct values (a sweep's grid axes; a merge
over thousands of values would cost more than the walk) with every numeric metric, at most
MAX_INDEXES, since each one costs every new run of the experiment an index entry. When: once,
when the experiment first holds SORTED_FROM_RUNS runs (below that, the longest walk is a fifth
of the one above). Who: the services' indexer (Atlas's follower) hands the experiment to a
``SortIndexBuilder``, whose own thread and connection build them with CREATE INDEX CONCURRENTLY:
neither the follower's indexing nor anyone's writes wait for a build. An index is listed in
``sort_indexes`` once it is built, and Atlas uses only the ones PostgreSQL says are valid; a build
that fails (or waits LOCK_TIMEOUT for a transaction left open) is logged and not tried again until
Atlas restarts, and its pages walk as before.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from . import index_schema as sql

__all__ = ["MAX_INDEXES", "MAX_VALUES", "SORTED_FROM_RUNS", "SortIndexBuilder", "choose_pairs", "close_quietly", "ensure_sort_indexes",
           "index_name"]

log = logging.getLogger("metalab.store")

SORTED_FROM_RUNS = 20_000
MAX_VALUES = 64
MAX_INDEXES = 24
LOCK_TIMEOUT = "10s"  # a concurrent build waits out every older transaction: not one left open for ever

_PLANNED = f"""
SELECT e.sort_indexes_planned, coalesce(sum(c.runs), 0) FROM {sql.INDEX_SCHEMA}.experiments e
LEFT JOIN {sql.INDEX_SCHEMA}.run_counts c USING (experiment_id) WHERE e.experiment_id = %s
GROUP BY e.sort_indexes_planned
"""
_NUMERIC_SLOTS = f"SELECT kind, slot FROM {sql.INDEX_SCHEMA}.catalogue WHERE experiment_id = %s AND type = 'number'"
_VALIDITY = f"""
SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relname = %s AND c.relnamespace = '{sql.INDEX_SCHEMA}'::regnamespace
"""
_LISTED = f"""
INSERT INTO {sql.INDEX_SCHEMA}.sort_indexes (experiment_id, filter_slot, sort_slot, index_name)
VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
_DONE = f"UPDATE {sql.INDEX_SCHEMA}.experiments SET sort_indexes_planned = true WHERE experiment_id = %s"


def choose_pairs(param_values: Iterable[tuple[int, int]], metric_slots: Iterable[int]) -> list[tuple[int, int]]:
    """The (param slot, metric slot) pairs to index, from each numeric param's (slot, number of
    distinct values) and the numeric metrics' slots: in slot order, at most MAX_INDEXES."""
    metrics = sorted(metric_slots)
    pairs = [(param, metric) for param, count in sorted(param_values) if 1 < count <= MAX_VALUES for metric in metrics]
    return pairs[:MAX_INDEXES]


def index_name(experiment_id: str, filter_slot: int, sort_slot: int) -> str:
    """A name that fits PostgreSQL's 63 bytes whatever the experiment id is."""
    digest = hashlib.sha256(experiment_id.encode()).hexdigest()[:16]
    return f"runs_sorted_{digest}_{filter_slot}_{sort_slot}"


def ensure_sort_indexes(conn: Any, experiment_id: str, *, from_runs: int | None = None) -> list[tuple[int, int]]:
    """Build the experiment's sort indexes if it holds ``from_runs`` (SORTED_FROM_RUNS) runs and
    they were never chosen; returns the pairs built (none, mostly: one cheap read). ``conn`` is
    idle, outside a transaction, and is left so (CREATE INDEX CONCURRENTLY runs outside one)."""
    from_runs = SORTED_FROM_RUNS if from_runs is None else from_runs
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        if not _due(conn, experiment_id, from_runs):
            return []
        # A session lock (gone with the connection if this process dies): one builder at a time.
        (locked,) = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (sql.SORT_LOCK_CLASS, experiment_id)).fetchone()
        if not locked:
            return []
        try:
            return _build(conn, experiment_id) if _due(conn, experiment_id, from_runs) else []
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (sql.SORT_LOCK_CLASS, experiment_id))
    finally:
        conn.autocommit = autocommit


def _due(conn: Any, experiment_id: str, from_runs: int) -> bool:
    row = conn.execute(_PLANNED, (experiment_id,)).fetchone()
    return row is not None and not row[0] and row[1] >= from_runs


def _build(conn: Any, experiment_id: str) -> list[tuple[int, int]]:
    from psycopg import sql as composed

    started = time.perf_counter()
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        pairs = _build_pairs(conn, experiment_id, composed)
    finally:
        conn.execute("RESET lock_timeout")
    log.info("%s: %d sort indexes built in %.1f s", experiment_id, len(pairs), time.perf_counter() - started)
    return pairs


def _build_pairs(conn: Any, experiment_id: str, composed: Any) -> list[tuple[int, int]]:
    slots = conn.execute(_NUMERIC_SLOTS, (experiment_id,)).fetchall()
    params = [slot for kind, slot in slots if kind == "param"]
    metrics = [slot for kind, slot in slots if kind == "metric"]
    counts: list[int] = []
    if params:
        distinct = ", ".join(f"count(DISTINCT numbers[{int(slot)}])" for slot in params)
        counts = list(conn.execute(f"SELECT {distinct} FROM {sql.INDEX_SCHEMA}.runs WHERE experiment_id = %s",
                                   (experiment_id,)).fetchone())
    pairs = choose_pairs(zip(params, counts), metrics)
    for filter_slot, sort_slot in pairs:
        name = index_name(experiment_id, filter_slot, sort_slot)
        valid = conn.execute(_VALIDITY, (name,)).fetchone()
        if valid is not None and not valid[0]:  # left by a build that was killed: built again
            conn.execute(composed.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                composed.Identifier(sql.INDEX_SCHEMA), composed.Identifier(name)))
        conn.execute(composed.SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {schema}.runs "
            "((numbers[{filter_slot}]), (numbers[{sort_slot}]), run_id) INCLUDE (numbers) WHERE experiment_id = {experiment}"
        ).format(name=composed.Identifier(name), schema=composed.Identifier(sql.INDEX_SCHEMA),
                 filter_slot=composed.Literal(filter_slot), sort_slot=composed.Literal(sort_slot),
                 experiment=composed.Literal(experiment_id)))
        conn.execute(_LISTED, (experiment_id, filter_slot, sort_slot, name))
    conn.execute(_DONE, (experiment_id,))
    return pairs


class SortIndexBuilder:
    """Builds the sort indexes of the experiments ``offer``ed to it, one at a time, from a daemon
    thread over a connection of its own (``store.connect``), so the caller never waits."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._offered: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._waiting: set[str] = set()
        self._failed: set[str] = set()  # not tried again until restart: the pages walk instead
        self._conn: Any = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metalab-sort-indexes", daemon=True)

    def start(self) -> SortIndexBuilder:
        self._thread.start()
        return self

    def offer(self, experiment_id: str) -> None:
        """Build the experiment's sort indexes if they are due (a cheap check, in the thread)."""
        with self._lock:
            if experiment_id in self._waiting or experiment_id in self._failed:
                return
            self._waiting.add(experiment_id)
        self._offered.put(experiment_id)

    def waiting(self) -> int:
        """How many offered experiments are not yet looked at or built."""
        with self._lock:
            return len(self._waiting)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, cancelling a build under way (its index is left invalid, unused, and built again
        the next time)."""
        self._stopping.set()
        self._offered.put(None)
        conn = self._conn
        if conn is not None:
            try:
                conn.cancel()
            except Exception:
                pass  # closed meanwhile: nothing to cancel
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while (experiment_id := self._offered.get()) is not None and not self._stopping.is_set():
            try:
                if self._conn is None:
                    self._conn = self.store.connect(application_name="metalab-sort-indexes", autocommit=True)
                ensure_sort_indexes(self._conn, experiment_id)
            except Exception as error:
                if self._stopping.is_set():
                    break  # cancelled by stop()
                log.warning("no sort indexes for %s (%s); its runs pages walk the metric's index instead",
                            experiment_id, self.store.scrub(error))
                with self._lock:
                    self._failed.add(experiment_id)
                self._drop()
            finally:
                with self._lock:
                    self._waiting.discard(experiment_id)
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)


def close_quietly(conn: Any) -> None:
    """Close a database connection that may be broken already (then there is nothing to close)."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass
