"""PostgresStore: the FileStore under ``file_root`` is the truth, PostgreSQL the index over it.

    postgresql://user[:password]@host[:port]/db?file_root=DIR[&libpq_option=value...]

Every record goes to the files only, exactly as FileStore writes it: a run (or a SLURM task)
never connects to the database, so none waits or fails while it is away or full. The index
follows the files (``metalab.store.indexer``): the services' Atlas follows every experiment under
``file_root``; ``run()`` catches its experiment up when it starts, while it runs in this process,
and when it ends; ``load_results`` catches up before reading. Resuming and loading read the
files, so they never depend on the index; ``rebuild_index`` makes one experiment's rows match
its files again after they were edited by hand.

The password is kept as a :class:`~metalab.secret.Secret`; ``describe()``, ``repr()``, log lines
and errors show ``***`` in its place. psycopg is imported only by the methods that talk to the
server, so ``metalab.store`` imports without it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MetalabError, NotFoundError
from . import index_schema as sql
from .files import ExperimentFiles, FileStore, RecordWriter
from .indexer import CONNECT_TIMEOUT, IndexFollower, catch_up
from .locator import PostgresLocator, parse_locator, resolve_password
from .records import RunRecord

__all__ = ["IndexSchemaError", "IndexUnavailable", "PostgresStore"]

log = logging.getLogger("metalab.store")

FOLLOW_INTERVAL = 1.0  # seconds between a running experiment's catch-ups in run()'s process


class IndexUnavailable(MetalabError):
    """The PostgreSQL index could not be reached or written (the files are unaffected).
    ``misconfigured``: the server answered and refused (login, database): retrying cannot help."""

    def __init__(self, message: str, *, misconfigured: bool = False) -> None:
        super().__init__(message)
        self.misconfigured = misconfigured


class IndexSchemaError(MetalabError):
    """The index was created by a newer metalab than this one."""


# -- the store -------------------------------------------------------------------------------


class PostgresStore:
    """Experiments as folders under ``file_root``, indexed in PostgreSQL."""

    kind = "postgres"

    def __init__(
        self,
        target: PostgresLocator,
        *,
        files: Any = None,
        followed: bool = False,
    ) -> None:
        """``files``: where the records are read and written, FileStore's interface; by default
        a FileStore at ``file_root`` (a workstation passes GatewayFiles: the files are on the cluster).
        ``followed``: an indexer beside the database follows ``file_root`` (the services' Atlas
        does), so this process never connects to it: any number of runs, no connection."""
        self.target = target
        self.file_store = files if files is not None else FileStore(target.file_root)
        self.followed = followed

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
            )
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
        """The records, from the files; the index is caught up with them on the way."""
        files = self._readable()
        self.try_catch_up(experiment_id)
        return files.load(experiment_id)

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
        """FileStore's ``experiment.json``, then the index caught up with the experiment's files
        (a rerun brings it up to every record, whatever happened to earlier runs). An index that
        does not answer only warns: the runs go to the files and the index catches up later; one
        that refuses this login, or is newer than this metalab, is an error before any run."""
        files = self.file_store.write_experiment(description)
        self.try_catch_up(description["experiment_id"], refuse_misconfigured=True)
        return files

    def sink(self, experiment_id: str, writer_id: str | None = None) -> RecordWriter:
        """This process's writer: records to its own file, nothing to the database."""
        return self.file_store.sink(experiment_id, writer_id)

    @contextlib.contextmanager
    def indexing(self, experiment_id: str) -> Iterator[None]:
        """While an experiment runs in this process: its new records reach the index within
        about a second, from a thread, and all of them once it ends (unless the services'
        indexer follows the files, or they are on the cluster: the services there index them)."""
        if not self._indexes_here:
            yield
            return
        follower = IndexFollower(self, lambda: (experiment_id,), interval=FOLLOW_INTERVAL).start()
        try:
            yield
        finally:
            follower.stop()
            self.try_catch_up(experiment_id)

    @property
    def _indexes_here(self) -> bool:
        """Whether this process keeps the index up: not when the services' indexer follows the
        files, nor when they are on the cluster (the services there index them)."""
        return not self.followed and isinstance(self.file_store, FileStore)

    def catch_up(self, experiment: str | None = None) -> int:
        """Index what the files of ``experiment`` (or of every experiment under ``file_root``)
        gained since the index last read them; returns the runs written."""
        ids = [experiment] if experiment is not None else self.experiment_ids()
        return self._index(ids, exact=False)

    def try_catch_up(self, experiment_id: str, *, refuse_misconfigured: bool = False) -> bool:
        """:meth:`catch_up`, or a warning when the index does not answer (it catches up later);
        nothing when the services' indexer follows the files. With ``refuse_misconfigured``, a
        login the server refuses or a newer schema still raise."""
        if not self._indexes_here or not self.file_store.root.is_dir():
            return False
        try:
            self._index([experiment_id], exact=False, connect_timeout=CONNECT_TIMEOUT)
            return True
        except (IndexUnavailable, IndexSchemaError) as error:
            if refuse_misconfigured and (isinstance(error, IndexSchemaError) or error.misconfigured):
                raise
            log.warning("%s; the records are safe in %s, and the index catches up with them once it answers",
                        error, self.files(experiment_id).directory)
            return False

    def rebuild_index(self, experiment: str) -> int:
        """Make the index of ``experiment`` match its files exactly (after they were edited by
        hand: the index follows appended lines by itself). Its record lines are read again whole,
        rows the files lack are deleted, missing or differing rows written, rows already right
        left as they are, and its catalogue rebuilt, in one transaction. Returns the runs indexed."""
        if not self.files(experiment).directory.is_dir():
            raise NotFoundError(f"no experiment {experiment!r} under {self.file_root}")
        total = self._index([experiment], exact=True)
        log.info("index of %s rebuilt: %d runs", experiment, total)
        return total

    def _index(self, ids: list[str], *, exact: bool, **connect: Any) -> int:
        total = 0
        with self.connect(**connect) as conn, self._index_errors():
            self.ensure_schema(conn)
            for experiment_id in ids:
                total += catch_up(conn, experiment_id, self.files(experiment_id), exact=exact)
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
            raise IndexUnavailable(message, misconfigured=_refused_login(error)) from None

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

    def _refuse_newer(self, conn: Any, version: int | None) -> None:
        if version is not None and version > sql.SCHEMA_VERSION:
            conn.rollback()
            raise IndexSchemaError(
                f"the index at {self.locator} has schema version {version}, newer than this metalab's "
                f"{sql.SCHEMA_VERSION}: upgrade metalab"
            )

    def close(self) -> None:
        """Nothing to release: the store holds no connection between calls."""


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




def _refused_login(error: BaseException) -> bool:
    """The server refused this login or database (SQLSTATE class 28, or 3D000), as opposed to
    not answering or being full."""
    state = getattr(error, "sqlstate", None) or ""
    if state:
        return state.startswith("28") or state == "3D000"
    text = str(error)
    return "password authentication failed" in text or ("database" in text and "does not exist" in text) or (
        "no password supplied" in text)
