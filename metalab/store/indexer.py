"""The indexer: brings the PostgreSQL index up to the record files, and follows them.

The files under ``file_root`` are the truth; the index is derived from them, and only from them.
Tasks never connect to the database (so no number of them can exhaust its connections, and none
waits or fails while it is away): they append record lines to their own files, and the indexer
reads what each file gained since it last looked, over one connection:

- ``record_files`` remembers how many bytes of each file are in the index, committed in the same
  transaction as the rows those bytes hold, so an indexer that dies or loses its database in the
  middle neither loses nor repeats a line, and the next one (or the next pass) goes on from there;
- only whole lines count: a line being written (or torn by a killed writer) is read once complete;
- a file that shrank or went away was edited by hand: the experiment is then read again whole
  (``exact``), as ``PostgresStore.rebuild_index`` does;
- one indexer at a time per experiment (a transaction-level advisory lock), so the services'
  follower and a ``run()`` catching up meet without a conflict.

``IndexFollower`` runs passes from a thread, skipping experiments whose files have not changed
since its last pass (a ``stat`` per file, no query), and retries while the database is away.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import index_schema as sql
from .files import ExperimentFiles
from .index_rows import Entries, LineBatch, experiment_values
from .sort_indexes import SortIndexBuilder, close_quietly

__all__ = ["Freshness", "IndexFollower", "catch_up", "signature", "write_catalogue"]

log = logging.getLogger("metalab.store")

BATCH_BYTES = 32 * 2**20  # of new lines per transaction: a backlog is indexed in steps, memory bounded
CONNECT_TIMEOUT = 3  # seconds: a database that does not answer is tried again at the next pass
RECORD_SUFFIX = ".jsonl"

Signature = tuple[tuple[str, Any], ...]  # (name, size) of every record file, then ("", experiment.json's stamp)


def signature(files: ExperimentFiles) -> Signature:
    """What the experiment's files look like now: equal signatures mean nothing to index."""
    return tuple(sorted(_record_sizes(files.runs_dir).items())) + (("", _stamp(files.directory / "experiment.json")),)


def _record_sizes(runs_dir: Path) -> dict[str, int]:
    try:
        with os.scandir(runs_dir) as entries:
            return {e.name: e.stat().st_size for e in entries if e.name.endswith(RECORD_SUFFIX) and e.is_file()}
    except FileNotFoundError:
        return {}


def _stamp(path: Path) -> str | None:
    """Which version of ``experiment.json`` is there (modification time and size); None if none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{info.st_mtime_ns}:{info.st_size}"


def _description(path: Path) -> dict[str, Any]:
    """``experiment.json``, or nothing if it cannot be read as an object."""
    try:
        description = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return description if isinstance(description, dict) else {}


def _complete_lines(path: Path, start: int, length: int, *, whole: bool) -> bytes:
    """Up to ``length`` bytes of ``path`` from ``start``, cut after the last newline (a line still
    being written waits for the next pass). Without ``whole``, at most BATCH_BYTES are read,
    unless a single line is longer than that."""
    with path.open("rb") as handle:
        handle.seek(start)
        chunk = handle.read(length if whole else min(length, BATCH_BYTES))
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) < length:
            chunk += handle.read(length - len(chunk))  # one line longer than a batch
            end = chunk.rfind(b"\n") + 1
    return chunk[:end]


def catch_up(conn: Any, experiment_id: str, files: ExperimentFiles, *, exact: bool = False) -> int:
    """Index what the experiment's record files gained since the index last read them (with
    ``exact``: all of them, and the experiment's rows made to match them exactly), committing
    every step. Returns the number of runs written. The caller has made sure the schema exists."""
    total = 0
    while True:
        indexed, more = _step(conn, experiment_id, files, exact=exact)
        total += indexed
        if not more:
            return total


def _step(conn: Any, experiment_id: str, files: ExperimentFiles, *, exact: bool) -> tuple[int, bool]:
    """One transaction: up to BATCH_BYTES of new lines (everything, when ``exact``). Returns the
    runs written and whether more lines wait."""
    try:
        conn.execute(sql.INDEX_LOCK, (sql.INDEX_LOCK_CLASS, experiment_id))
        _describe(conn, experiment_id, files.directory)
        on_disk = _record_sizes(files.runs_dir)
        indexed = {} if exact else dict(conn.execute(sql.FILES_READ, (experiment_id,)).fetchall())
        if any(on_disk.get(name, -1) < size for name, size in indexed.items()):
            log.info("record files of %s were changed by hand; indexing them again whole", experiment_id)
            exact, indexed = True, {}
        batch, reached, read, more = LineBatch(), {}, 0, False
        for name in sorted(on_disk):
            start = indexed.get(name, 0)
            if on_disk[name] <= start:
                continue
            if not exact and read >= BATCH_BYTES:
                more = True
                break
            chunk = _complete_lines(files.runs_dir / name, start, on_disk[name] - start, whole=exact)
            read += len(chunk)
            if chunk:
                for line in chunk.decode("utf-8", "replace").splitlines(keepends=True):
                    batch.add(line)
                reached[name] = start + len(chunk)
        written = _write(conn, experiment_id, batch, exact=exact)
        if exact:
            conn.execute(sql.FILES_FORGET, (experiment_id,))
        if reached:
            conn.execute(sql.FILES_WRITE, {"experiment": experiment_id, "files": list(reached), "sizes": list(reached.values())})
        conn.commit()
        return written, more
    except BaseException:
        _rollback(conn)
        raise


def _describe(conn: Any, experiment_id: str, directory: Path) -> None:
    """The experiment's row, from ``experiment.json`` when that changed since the row was made
    (read only then: a sweep's passes see the same file again and again)."""
    row = conn.execute(sql.EXPERIMENT_STAMP, (experiment_id,)).fetchone()
    path = directory / "experiment.json"
    stamp = _stamp(path)
    if row is None or (stamp is not None and row[0] != stamp):
        description = _description(path) if stamp is not None else {}
        conn.execute(sql.EXPERIMENT_UPSERT, experiment_values(experiment_id, description or {"experiment_id": experiment_id}, stamp))


def _write(conn: Any, experiment_id: str, batch: LineBatch, *, exact: bool) -> int:
    """The batch's runs and catalogue entries into the index (no commit)."""
    entries = batch.catalogue.take()
    if not batch and not exact and entries is None:
        return 0
    with conn.cursor() as cursor:
        if exact or entries is not None:
            slots = write_catalogue(cursor, experiment_id, entries or ([], [], []), exact=exact)
        else:
            cursor.execute(sql.CATALOGUE_SLOTS, (experiment_id,))
            slots = {(kind, name): slot for kind, name, slot in cursor.fetchall()}
        lines = batch.copy_lines(slots)
        cursor.execute(sql.LINE_DDL)
        cursor.execute(sql.LINE_PLAN)
        with cursor.copy(sql.LINE_COPY) as copy:
            for start in range(0, len(lines), 2000):
                copy.write("".join(lines[start : start + 2000]))
        if exact:
            cursor.execute(sql.LINE_PRUNE, (experiment_id,))
        cursor.execute(sql.LINE_UPSERT if exact else sql.LINE_MERGE, (experiment_id,))
        cursor.execute(sql.STEPS_PRUNE, {"experiment": experiment_id})
        cursor.execute(sql.STEPS_FILL, {"experiment": experiment_id})
    return len(lines)


def write_catalogue(cursor: Any, experiment_id: str, entries: Entries, *, exact: bool) -> dict[tuple[str, str], int]:
    """Record catalogue entries (new names get the next free slots; with ``exact``, names not in
    ``entries`` go and types are set, else types merge) and return every slot. The caller holds
    the experiment's index lock, so slots are handed out by one writer at a time."""
    kinds, names, types = entries
    args = {"experiment": experiment_id, "kinds": kinds, "names": names, "types": types}
    if exact:
        cursor.execute(sql.CATALOGUE_PRUNE, args)
        cursor.execute(sql.CATALOGUE_SET, args)
    else:
        cursor.execute(sql.CATALOGUE_MERGE, args)
    cursor.execute(sql.CATALOGUE_NEW, args)
    cursor.execute(sql.CATALOGUE_SLOTS, (experiment_id,))
    return {(kind, name): slot for kind, name, slot in cursor.fetchall()}


def _rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:
        pass  # the connection is gone; its transaction went with it


# -- following ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """How far the index is behind an experiment's files, as Atlas shows it."""

    behind: float | None  # seconds at most since the index last had every line; None: up to date
    error: str | None = None  # why the indexer cannot write the index now

    @property
    def text(self) -> str | None:
        if self.behind is None and self.error is None:
            return None
        lag = "the index has not read these files yet" if self.behind == float("inf") else (
            f"index {self.behind:.0f} s behind the files")
        return f"{lag}: {self.error}" if self.error else lag


class IndexFollower:
    """Keeps the index up with the files from a daemon thread: a pass every ``interval`` seconds
    over ``experiments()`` (the experiment ids to follow), each caught up when its files changed.

    ``store`` is a PostgresStore (its connection, schema and error wording); the follower holds
    one connection, made again after any failure. ``sort_indexes``: also have each large
    experiment's sort indexes built, by a SortIndexBuilder of its own (the services' follower
    does; a ``run()`` catching up has no need of them)."""

    def __init__(self, store: Any, experiments: Callable[[], Iterable[str]], *, interval: float = 0.5,
                 sort_indexes: bool = False) -> None:
        self.store = store
        self.experiments = experiments
        self.interval = interval
        self.sorter = SortIndexBuilder(store) if sort_indexes else None
        self.passed_at: float | None = None  # wall time at the start of the last pass that completed
        self.error: str | None = None
        self._seen: dict[str, Signature] = {}
        self._conn: Any = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metalab-indexer", daemon=True)

    def start(self) -> IndexFollower:
        if self.sorter is not None:
            self.sorter.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._drop()
        if self.sorter is not None:
            self.sorter.stop(timeout)

    def run_pass(self) -> int:
        """Catch up every followed experiment whose files changed; the runs written."""
        began = time.time()
        written = 0
        for experiment_id in self.experiments():
            files = self.store.files(experiment_id)
            seen = signature(files)
            if self._seen.get(experiment_id) == seen:
                continue
            written += catch_up(self._connection(), experiment_id, files)
            if self.sorter is not None:
                self.sorter.offer(experiment_id)
            self._seen[experiment_id] = seen
        self.passed_at = began
        return written

    def freshness(self, experiment_id: str) -> Freshness:
        """Whether the index holds every line of the experiment's files as they are now (else
        as far behind as :meth:`overall` says)."""
        if self._seen.get(experiment_id) == signature(self.store.files(experiment_id)):
            return Freshness(None, self.error)
        return self.overall()

    def overall(self) -> Freshness:
        """How long since a pass last read every followed file (whatever changed since then is
        not yet in the index)."""
        behind = time.time() - self.passed_at if self.passed_at is not None else float("inf")
        return Freshness(max(behind, 0.0), self.error)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                written = self.run_pass()
                if self.error is not None:
                    log.info("the index is written again (%d runs caught up)", written)
                self.error = None
            except Exception as error:  # the database is away, full or restarting: try again
                self._drop()
                reason = self.store.scrub(error)
                if self.error is None:
                    log.warning("the index is not being updated (%s); the records are safe in the files, and the "
                                "index catches up once it answers", reason)
                self.error = reason
            self._stopping.wait(self.interval)

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.store.connect(application_name="metalab-indexer", connect_timeout=CONNECT_TIMEOUT)
            try:
                self.store.ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)
