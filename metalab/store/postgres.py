"""PostgresStore: the FileStore under ``file_root`` is the truth, PostgreSQL the index over it.

    postgresql://user[:password]@host[:port]/db?file_root=DIR[&libpq_option=value...]

Every record goes to the files first (exactly as FileStore writes it); index rows are batched
and sent every ``batch_size`` records (or ``flush_interval`` seconds, or on ``close()``), COPY'd
into a temp table and upserted in one transaction: never one transaction per run. Resuming and
loading read the files, so they never depend on the index, and ``rebuild_index`` restores the
index from the files whenever it is lost or stale.

The password is kept as a :class:`~metalab.secret.Secret`; ``describe()``, ``repr()``, log lines
and errors show ``***`` in its place. psycopg is imported only by the methods that talk to the
server, so ``metalab.store`` imports without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import MetalabError, NotFoundError
from . import index_schema as sql
from .files import ExperimentFiles, FileStore, RecordWriter
from .locator import PostgresLocator, parse_locator, resolve_password
from .records import SUCCESS, RunRecord, _jsonable

__all__ = ["IndexSchemaError", "IndexUnavailable", "PostgresSink", "PostgresStore"]

log = logging.getLogger("metalab.store")

DEFAULT_BATCH_SIZE = 1000
DEFAULT_FLUSH_INTERVAL = 5.0  # seconds: slow runs still reach the index (and Atlas) soon
_INT64 = (-(2**63), 2**63 - 1)


class IndexUnavailable(MetalabError):
    """The PostgreSQL index could not be reached or written (the files are unaffected)."""


class IndexSchemaError(MetalabError):
    """The index was created by a newer metalab than this one."""


# -- index rows: pure ------------------------------------------------------------------------

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable).encode


def _finite(value: Any) -> Any:
    """NaN and infinities as the strings PostgreSQL's float8 input reads ("NaN", "Infinity")."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_jsonb(value: Any) -> str:
    """JSON text that jsonb accepts: no NaN/Infinity literals, no \\u0000."""
    try:
        text = _encode(value)
    except ValueError:
        text = _encode(_finite(value))
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def run_row(experiment_id: str, record: RunRecord) -> tuple[Any, ...]:
    """The values of one run in ``index_schema.RUN_COLUMNS`` order, all but the last (numbers,
    which needs the catalogue's slots: see ``numbers_row``)."""
    seed = record.seed if isinstance(record.seed, int) and _INT64[0] <= record.seed <= _INT64[1] else None
    error = record.error.replace("\x00", "\ufffd") if record.error else None
    # Rounded as record lines are, so a rebuilt row equals the row the sink wrote.
    return (experiment_id, record.run_id, record.status, round(record.started_at, 6), round(record.duration, 6),
            record.replicate, seed, to_jsonb(record.params), to_jsonb(record.metrics), error)  # fmt: skip


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

    def take(self) -> tuple[list[str], list[str], list[str]] | None:
        """The pending entries as three arrays (sorted: concurrent writers lock rows in one order)."""
        if not self.pending:
            return None
        entries = sorted(self.pending.items())
        self.pending = {}
        return [k for (k, _), _ in entries], [n for (_, n), _ in entries], [t for _, t in entries]


# -- the store -------------------------------------------------------------------------------


class PostgresStore:
    """Experiments as folders under ``file_root``, indexed in PostgreSQL."""

    kind = "postgres"

    def __init__(
        self,
        target: PostgresLocator,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        files: Any = None,
    ) -> None:
        """``files``: where the records are read and written, FileStore's interface; by default
        a FileStore at ``file_root`` (a workstation passes GatewayFiles: the files are on the cluster)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.target = target
        self.file_store = files if files is not None else FileStore(target.file_root)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._schema_ready = False

    @classmethod
    def from_locator(
        cls, locator: str, *, password_file: Path | None = None, cwd: Path | None = None, **options: Any
    ) -> PostgresStore:
        """The store a locator names; the password comes from the locator, else ``password_file``,
        else ``{file_root}/services/postgres.password``, else libpq (PGPASSWORD, ~/.pgpass)."""
        target = parse_locator(locator, cwd=cwd)
        password = resolve_password(target, password_file)
        if password is not target.password:
            target = PostgresLocator(
                file_root=target.file_root, host=target.host, port=target.port, user=target.user,
                dbname=target.dbname, password=password, options=target.options, display=target.display,
            )  # fmt: skip
        return cls(target, **options)

    # -- what it is ------------------------------------------------------------------------

    @property
    def file_root(self) -> Path:
        return self.file_store.root

    @property
    def root(self) -> Path:  # as FileStore.root
        return self.file_store.root

    @property
    def locator(self) -> str:
        """The locator with any password as ``***``."""
        return self.target.display

    def __repr__(self) -> str:
        return f"PostgresStore({self.locator!r})"

    def describe(self) -> str:
        return f"PostgresStore {self.locator} (records under {self.file_root})"

    # -- the files: the source of truth ----------------------------------------------------

    def files(self, experiment_id: str) -> ExperimentFiles:
        return self.file_store.files(experiment_id)

    def iter_records(self, experiment_id: str) -> Iterator[RunRecord]:
        return self._readable().iter_records(experiment_id)

    def load(self, experiment_id: str) -> dict[str, RunRecord]:
        return self._readable().load(experiment_id)

    def finished_run_ids(self, experiment_id: str) -> set[str]:
        return self.file_store.finished_run_ids(experiment_id)

    def experiment_ids(self) -> list[str]:
        return self._readable().experiment_ids()

    def _readable(self) -> Any:
        """The records' files; a file_root missing here is an error, never an empty answer (on a
        workstation the files are on the cluster: ``store="discover"`` reads them through the gateway)."""
        if isinstance(self.file_store, FileStore) and not self.file_store.root.is_dir():
            raise NotFoundError(
                f"file_root {self.file_store.root} does not exist on this machine, so the runs' records cannot be read "
                "here; on a workstation use store='discover' (with `metalab tunnel` open), or read them on the cluster"
            )
        return self.file_store

    def read_experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._readable().read_experiment(experiment_id)

    # -- writing ---------------------------------------------------------------------------

    def write_experiment(self, description: dict[str, Any]) -> ExperimentFiles:
        """FileStore's ``experiment.json``, then the schema (created or upgraded once) and the
        experiment's row. An unreachable index fails here, before any run starts."""
        files = self.file_store.write_experiment(description)
        with self.connect() as conn, self._index_errors():
            self.ensure_schema(conn)
            conn.execute(sql.EXPERIMENT_UPSERT, _experiment_values(description["experiment_id"], description))
            conn.commit()
        return files

    def sink(self, experiment_id: str, writer_id: str | None = None) -> PostgresSink:
        """This process's writer: records to its own file at once, index rows in batches over
        one connection (opened at the first flush)."""
        return PostgresSink(self, experiment_id, self.file_store.sink(experiment_id, writer_id))

    def rebuild_index(self, experiment: str | None = None) -> int:
        """Restore the index from the files, for ``experiment`` or every experiment under
        ``file_root``; other experiments' rows (and those of experiments with no folder here)
        are left alone. Returns the number of runs indexed.

        Each experiment is made to match its files in one transaction: its record lines are
        COPY'd to the server, rows the files lack are deleted, missing or differing rows are
        written, rows already right are left as they are, and its catalogue is rebuilt; the end
        state is that of deleting its rows and reloading them, without rewriting a sound index.
        """
        if experiment is not None:
            if not self.files(experiment).directory.is_dir():
                raise NotFoundError(f"no experiment {experiment!r} under {self.file_root}")
            ids = [experiment]
        else:
            ids = self.experiment_ids()
        total = 0
        with self.connect() as conn, self._index_errors():
            self.ensure_schema(conn)
            conn.execute(sql.LINE_DDL)
            for experiment_id in ids:
                latest, catalogue = _latest_lines(self.files(experiment_id).runs_dir)
                conn.execute(sql.EXPERIMENT_UPSERT, _experiment_values(experiment_id, self._description(experiment_id)))
                with conn.cursor() as cursor:
                    slots = write_catalogue(cursor, experiment_id, catalogue.take() or ([], [], []), exact=True)
                    lines = [f"{run_id}\t{copy_array(numbers_row(slots, params, metrics))}\t{line}"
                             for run_id, params, metrics, line in latest]  # fmt: skip
                    cursor.execute(sql.LINE_PLAN)
                    with cursor.copy(sql.LINE_COPY) as copy:
                        for start in range(0, len(lines), 2000):
                            copy.write("".join(lines[start : start + 2000]))
                    cursor.execute(sql.LINE_PRUNE, (experiment_id,))
                    cursor.execute(sql.LINE_UPSERT, (experiment_id,))
                conn.commit()
                total += len(lines)
        log.info("index rebuilt: %d runs of %d experiments", total, len(ids))
        return total

    # -- the connection --------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> Any:
        """A new psycopg connection to the index (the caller closes it); errors name the server,
        never the password."""
        import psycopg

        params = {**self.target.connect_kwargs(), **kwargs}
        try:
            if self.target.password:
                return psycopg.connect(**params, password=self.target.password.reveal())
            return psycopg.connect(**params)
        except psycopg.Error as error:
            message = f"cannot connect to the PostgreSQL index {self.locator}: {self.scrub(error)}"
            raise IndexUnavailable(message) from None

    @contextlib.contextmanager
    def _index_errors(self) -> Iterator[None]:
        """psycopg errors as IndexUnavailable, on one line, the password masked."""
        import psycopg

        try:
            yield
        except psycopg.Error as error:
            raise IndexUnavailable(f"PostgreSQL index {self.locator}: {self.scrub(error)}") from None

    def scrub(self, error: BaseException | str) -> str:
        """An error's text on one line, with the password (should the server echo it) masked."""
        text = " ".join(str(error).split())
        password = self.target.password.reveal() if self.target.password else ""
        return text.replace(password, "***") if password else text

    def ensure_schema(self, conn: Any) -> None:
        """Create or upgrade the index schema (safe under concurrent first use: the work is done
        under a transaction-level advisory lock, and the version read again once it is held)."""
        version = _schema_version(conn)
        if version != sql.SCHEMA_VERSION:
            self._refuse_newer(conn, version)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (sql.SCHEMA_LOCK_KEY,))
            version = _schema_version(conn) or 0  # another process may have done it meanwhile
            self._refuse_newer(conn, version)
            for step, ddl in sql.MIGRATIONS:
                if step > version:
                    conn.execute(ddl)
            if version < sql.SCHEMA_VERSION:
                conn.execute(f"DELETE FROM {sql.INDEX_SCHEMA}.schema_version")
                conn.execute(f"INSERT INTO {sql.INDEX_SCHEMA}.schema_version VALUES (%s)", (sql.SCHEMA_VERSION,))
                log.info("index schema at version %d", sql.SCHEMA_VERSION)
        conn.commit()
        self._schema_ready = True  # sinks (and the workers forked after this) need not check again

    def _refuse_newer(self, conn: Any, version: int | None) -> None:
        if version is not None and version > sql.SCHEMA_VERSION:
            conn.rollback()
            raise IndexSchemaError(
                f"the index at {self.locator} has schema version {version}, newer than this metalab's "
                f"{sql.SCHEMA_VERSION}: upgrade metalab"
            )

    def close(self) -> None:
        """Nothing to release: the store holds no connection between calls (sinks hold their own)."""

    def _description(self, experiment_id: str) -> dict[str, Any]:
        try:
            return self.read_experiment(experiment_id)
        except (OSError, ValueError):
            return {"experiment_id": experiment_id}


def _schema_version(conn: Any) -> int | None:
    # pg_class, not to_regclass: to_regclass may answer from this backend's cache, which does not
    # yet know a table another process created while this one waited for the schema lock.
    exists = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'schema_version')",
        (sql.INDEX_SCHEMA,),
    ).fetchone()[0]
    if not exists:
        return None
    row = conn.execute(f"SELECT max(version) FROM {sql.INDEX_SCHEMA}.schema_version").fetchone()
    return row[0]


LatestLine = tuple[str, dict[str, Any], dict[str, Any], str]  # run id (COPY text), params, metrics, line


def _latest_lines(runs_dir: Path) -> tuple[list[LatestLine], Catalogue]:
    """The current record line of every run (as ``FileStore.load`` picks it: a success beats a
    failure, then the later start), escaped for COPY text and made acceptable to jsonb, with its
    params and metrics; and the catalogue of their names. Lines FileStore would skip are skipped."""
    best: dict[str, tuple[tuple[bool, float], LatestLine]] = {}
    catalogue = Catalogue()
    loads = json.loads
    for path in sorted(runs_dir.glob("*.jsonl")) if runs_dir.is_dir() else ():
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # a writer died mid-line: that run is not finished
                try:
                    data = loads(line)
                    run_id, status, params, seed, replicate = (
                        data["run_id"], data["status"], data["params"], data["seed"], data["replicate"]
                    )  # fmt: skip
                    rank = (status == SUCCESS, float(data.get("started_at", 0.0)))
                except (ValueError, KeyError, TypeError):
                    continue
                metrics = data.get("metrics") or {}
                if (type(replicate) is not int or not isinstance(run_id, str) or not isinstance(status, str)
                        or not isinstance(params, dict) or not isinstance(metrics, dict)):  # fmt: skip
                    continue
                catalogue.add(params, metrics)  # every record's names, as the sinks sent them
                current = best.get(run_id)
                if current is not None and rank < current[0]:
                    continue
                if type(seed) is not int or not _INT64[0] <= seed <= _INT64[1]:
                    data["seed"] = None
                    line = to_jsonb(data) + "\n"
                elif "NaN" in line or "Infinity" in line:
                    line = to_jsonb(data) + "\n"  # NaN literals are not JSON to PostgreSQL
                if "\\" in line:
                    line = line.replace("\\u0000", "\\ufffd").replace("\\", "\\\\")  # COPY text escapes
                best[run_id] = (rank, (_copy_text(run_id), params, metrics, line))
    return [line for _, line in best.values()], catalogue


def _copy_text(value: str) -> str:
    """``value`` as one field of COPY's text format."""
    if value.isalnum():  # run ids are hex
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _experiment_values(experiment_id: str, description: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (experiment_id, str(description.get("name", experiment_id)), str(description.get("version", "")),
            to_jsonb(dict(description)))  # fmt: skip


Entries = tuple[list[str], list[str], list[str]]  # kinds, names, types (Catalogue.take)


def write_catalogue(cursor: Any, experiment_id: str, entries: Entries, *, exact: bool) -> dict[tuple[str, str], int]:
    """Record catalogue entries (new names get the next free slots; with ``exact``, as a rebuild,
    names not in ``entries`` go and types are set, else types merge) and return every slot."""
    kinds, names, types = entries
    args = {"experiment": experiment_id, "kinds": kinds, "names": names, "types": types}
    cursor.execute(sql.CATALOGUE_LOCK, (sql.CATALOGUE_LOCK_CLASS, experiment_id))
    if exact:
        cursor.execute(sql.CATALOGUE_PRUNE, args)
        cursor.execute(sql.CATALOGUE_SET, args)
    else:
        cursor.execute(sql.CATALOGUE_MERGE, args)
    cursor.execute(sql.CATALOGUE_NEW, args)
    cursor.execute(sql.CATALOGUE_SLOTS, (experiment_id,))
    return {(kind, name): slot for kind, name, slot in cursor.fetchall()}


def _send(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into the batch table and upsert them (no commit)."""
    with conn.cursor() as cursor, cursor.copy(sql.BATCH_COPY) as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(sql.RUN_UPSERT)


# -- the sink --------------------------------------------------------------------------------


class PostgresSink:
    """One process's writer: each record to the files at once, index rows in batches.

    An index that fails mid-experiment does not stop the runs (their records are safe in the
    files): the sink warns once, naming ``rebuild_index``, and writes only files from then on.
    """

    def __init__(self, store: PostgresStore, experiment_id: str, files: RecordWriter) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.files = files
        self.indexed = 0  # runs sent to the index
        self.failed = False  # the index could not be written; only files from then on
        self._rows: dict[str, tuple[tuple[Any, ...], RunRecord]] = {}  # the row without its numbers
        self._catalogue = Catalogue()
        self._slots: dict[tuple[str, str], int] = {}
        self._conn: Any = None
        self._last_flush = time.monotonic()

    def write(self, record: RunRecord) -> None:
        self.files.write(record)
        if self.failed:
            return
        rows = self._rows
        current = rows.get(record.run_id)
        if current is None or (record.status == SUCCESS, record.started_at) >= (
            current[1].status == SUCCESS, current[1].started_at
        ):
            rows[record.run_id] = (run_row(self.experiment_id, record), record)
        self._catalogue.add(record.params, record.metrics)
        if len(rows) >= self.store.batch_size or time.monotonic() - self._last_flush >= self.store.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Send the buffered rows in one transaction (retried once on a fresh connection)."""
        self._last_flush = time.monotonic()
        if self.failed or (not self._rows and not self._catalogue.pending):
            return
        pending = list(self._rows.values())
        self._rows = {}
        catalogue = self._catalogue.take()
        for attempt in (1, 2):
            try:
                conn = self._connection()
                if catalogue is not None:  # first, so the catalogue lock comes before any run row's
                    with conn.cursor() as cursor:
                        self._slots = write_catalogue(cursor, self.experiment_id, catalogue, exact=False)
                slots = self._slots
                rows = [row + (numbers_row(slots, record.params, record.metrics),) for row, record in pending]
                if rows:
                    _send(conn, rows)
                conn.commit()
                self.indexed += len(pending)
                return
            except Exception as error:  # the files hold every record; the index can be rebuilt
                self._drop_connection()
                if attempt == 2 or not _is_connection_error(error):
                    self.failed = True
                    log.warning(
                        "the PostgreSQL index %s is not being updated for %s (%s); the records are safe "
                        "in %s; restore the index with PostgresStore.rebuild_index(%r)",
                        self.store.locator, self.experiment_id, self.store.scrub(error),
                        self.store.files(self.experiment_id).directory, self.experiment_id,
                    )  # fmt: skip
                    return

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.files.close()
            self._drop_connection()

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.store.connect()
            try:
                if not self.store._schema_ready:
                    self.store.ensure_schema(conn)
                conn.execute(sql.BATCH_DDL)
                description = self.store._description(self.experiment_id)
                conn.execute(sql.EXPERIMENT_ENSURE, _experiment_values(self.experiment_id, description))
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_connection_error(error: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError, IndexUnavailable))

