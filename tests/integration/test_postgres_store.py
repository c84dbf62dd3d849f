"""PostgresStore against a real PostgreSQL (conftest's pg_server): files first, the index beside.

Each test gets its own database (created by the superuser over the socket, owned by the app
role), so the schema is created from nothing every time and tests cannot see each other's rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import metalab
from cluster_support import wait_until
from conftest import all_text
from metalab.errors import ConfigError, MetalabError, NotFoundError
from metalab.executor.process import ProcessExecutor
from metalab.store import index_schema
from metalab.store.postgres import IndexSchemaError, IndexUnavailable, PostgresStore
from metalab.store.records import RunRecord

if TYPE_CHECKING:
    from conftest import PgServer

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class Db:
    """One throwaway database on the suite's server."""

    server: PgServer
    name: str
    root: Path

    def locator(self, *, password: str | None = None, root: Path | None = None, user: str | None = None) -> str:
        password = self.server.password if password is None else password
        auth = f"{user or self.server.user}:{password}" if password else (user or self.server.user)
        return f"postgresql://{auth}@{self.server.host}:{self.server.port}/{self.name}?file_root={root or self.root}"

    def store(self, **options: Any) -> PostgresStore:
        return PostgresStore.from_locator(self.locator(), **options)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(host=self.server.host, port=self.server.port, user=self.server.user,
                               password=self.server.password, dbname=self.name, autocommit=True)

    def rows(self, query: str, *args: Any) -> list[tuple]:
        """The rows ``query`` returns (none for a statement that returns none)."""
        with self.connect() as conn:
            cursor = conn.execute(query, args)
            return cursor.fetchall() if cursor.description is not None else []

    def runs(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        with self.connect() as conn:
            cursor = conn.execute(
                "SELECT run_id, status, params, metrics, error, replicate, seed, started_at, finished_at, duration "
                "FROM metalab.runs WHERE experiment_id = %s", (experiment_id,),
            )
            names = [column.name for column in cursor.description]
            return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


@pytest.fixture
def db(pg_server: PgServer, tmp_path: Path) -> Iterator[Db]:
    name = f"pgstore_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{pg_server.user}"')
    root = tmp_path / "file_root"
    try:
        yield Db(pg_server, name, root)
    finally:
        with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- experiments -------------------------------------------------------------------------------


@metalab.operation
def train(params, seeds, capture):
    capture.metric("score", seeds.rng().random() * params["scale"])
    capture.metric("loss", 1.0 / params["scale"])


def quick(name: str = "mvp", **kwargs: Any) -> metalab.Experiment:
    return metalab.Experiment(name=name, version="0.1", operation=train,
                              params=metalab.grid(scale=[0.1, 1.0, 10.0]), seeds=metalab.seeds(base=123, replicates=2),
                              **kwargs)


@metalab.operation
def flaky(params, seeds, capture):
    """Fails for scale 10 while the flag file exists."""
    capture.metric("score", params["scale"] * 2)
    if params["scale"] == 10 and os.path.exists(params["flag"]):
        raise RuntimeError("flaky failure for scale 10")


@metalab.operation
def four_metrics(params, seeds, capture):
    x = params["x"]
    capture.metric("a", x)
    capture.metric("b", x * 2.5)
    capture.metric("c", float("nan") if x == 3 else x + seeds.replicate)
    capture.metric("d", "not a number" if False else 1.0)


@metalab.operation
def awkward(params, seeds, capture):
    """Values jsonb and COPY need care with: backslashes, tabs, NUL, huge and non-finite numbers."""
    capture.metric("inf", float("inf") * params["sign"])
    capture.metric("big", 10**30)
    if params["sign"] < 0:
        raise ValueError("bad\x00value\twith\\backslash")


def many(name: str, points: int, replicates: int = 4) -> metalab.Experiment:
    return metalab.Experiment(name=name, version="1", operation=four_metrics,
                              params=metalab.grid(x=list(range(points))), seeds=metalab.seeds(base=7, replicates=replicates))


# -- a full run ----------------------------------------------------------------------------------


def test_a_run_lands_every_record_in_the_files_and_in_the_index(db: Db) -> None:
    exp = quick()
    handle = metalab.run(exp, store=db.locator(), progress=False)
    results = handle.result()
    assert (len(results), results.succeeded, results.failed) == (6, 6, 0)

    # the files hold everything, exactly as a FileStore would
    on_disk = metalab.FileStore(db.root).load(exp.experiment_id)
    assert set(on_disk) == {r.run_id for r in results}

    runs = db.runs(exp.experiment_id)
    assert set(runs) == set(on_disk)
    for run_id, record in on_disk.items():
        row = runs[run_id]
        assert row["status"] == "success" and row["error"] is None
        assert row["params"] == record.params and row["replicate"] == record.replicate and row["seed"] == 123
        assert row["metrics"] == record.metrics  # jsonb, numbers as numbers
        assert row["started_at"].timestamp() == pytest.approx(record.started_at, abs=1e-5)
        assert row["finished_at"] >= row["started_at"] and row["duration"] == pytest.approx(record.duration, abs=1e-5)
    # metrics can be queried as numbers
    best = db.rows("SELECT max((metrics->>'score')::float8) FROM metalab.runs WHERE experiment_id = %s",
                   exp.experiment_id)[0][0]
    assert best == pytest.approx(max(r.metrics["score"] for r in results))

    assert db.rows("SELECT name, version, description->>'runs' FROM metalab.experiments") == [("mvp", "0.1", "6")]
    assert db.rows("SELECT kind, name, type FROM metalab.catalogue WHERE experiment_id = %s ORDER BY 1, 2",
                   exp.experiment_id) == [("metric", "loss", "number"), ("metric", "score", "number"),
                                          ("param", "scale", "number")]
    assert db.rows("SELECT version FROM metalab.schema_version") == [(index_schema.SCHEMA_VERSION,)]


def test_resume_skips_finished_runs_and_does_not_depend_on_the_index(db: Db) -> None:
    exp = quick()
    first = metalab.run(exp, store=db.locator(), progress=False)
    again = metalab.run(exp, store=db.locator(), progress=False)
    assert (first.ran, again.ran, again.skipped) == (6, 0, 6)
    # with the index wiped, the files still say what is finished
    db.rows("DELETE FROM metalab.runs")
    third = metalab.run(exp, store=db.locator(), progress=False)
    assert (third.ran, third.skipped) == (0, 6)
    assert len(third.result()) == 6


def test_a_failed_run_is_indexed_with_its_error_then_updated_when_a_rerun_succeeds(db: Db, tmp_path: Path) -> None:
    flag = tmp_path / "fail-now"
    flag.touch()
    exp = metalab.Experiment(name="flaky", version="1", operation=flaky,
                             params=metalab.grid(scale=[1, 10], flag=[str(flag)]), seeds=metalab.seeds(base=1))
    results = metalab.run(exp, store=db.locator(), progress=False).result()
    assert (results.succeeded, results.failed) == (1, 1)
    failed_id = results.failures()[0].run_id
    row = db.runs(exp.experiment_id)[failed_id]
    assert row["status"] == "failed" and "flaky failure for scale 10" in row["error"]
    assert "Traceback" in row["error"] and row["metrics"] == {"score": 20}

    flag.unlink()
    again = metalab.run(exp, store=db.locator(), progress=False)
    assert (again.skipped, again.ran) == (1, 1)
    runs = db.runs(exp.experiment_id)
    assert len(runs) == 2
    assert runs[failed_id]["status"] == "success" and runs[failed_id]["error"] is None
    assert again.result().succeeded == 2


def test_a_late_failure_does_not_overwrite_a_success_as_the_files_say(db: Db) -> None:
    store = db.store()
    exp = quick()
    store.write_experiment(exp.describe())
    good = RunRecord(run_id="r1", params={"scale": 1}, seed=1, replicate=0, status="success",
                     metrics={"score": 1.0}, started_at=100.0, duration=1.0)
    bad = dataclasses.replace(good, status="failed", metrics={}, error="boom", started_at=200.0)
    for record in (good, bad):
        with store.sink(exp.experiment_id) as sink:
            sink.write(record)
    assert store.load(exp.experiment_id)["r1"].status == "success"
    assert db.runs(exp.experiment_id)["r1"]["status"] == "success"


def test_process_workers_write_only_files_and_the_run_indexes_all_they_wrote(db: Db) -> None:
    exp = many("workers", 150)  # 600 runs
    handle = metalab.run(exp, store=db.store(), executor=ProcessExecutor(2), progress=False)
    assert handle.ran == 600
    on_disk = metalab.FileStore(db.root).load(exp.experiment_id)
    runs = db.runs(exp.experiment_id)
    assert len(on_disk) == 600 and set(runs) == set(on_disk)
    assert len(list((db.root / exp.experiment_id / "runs").glob("*.jsonl"))) == 2  # one file per worker
    assert {row["metrics"]["c"] for row in runs.values() if row["params"]["x"] == 3} == {"NaN"}
    assert db.rows("SELECT count(*) FROM metalab.catalogue WHERE experiment_id = %s", exp.experiment_id) == [(5,)]
    # and the index knows how far it read each worker's file: all of it
    sizes = {path.name: path.stat().st_size for path in (db.root / exp.experiment_id / "runs").glob("*.jsonl")}
    assert dict(db.rows("SELECT file, indexed_bytes FROM metalab.record_files WHERE experiment_id = %s",
                        exp.experiment_id)) == sizes


def test_records_reach_the_index_while_the_experiment_runs_not_only_at_its_end(db: Db) -> None:
    from metalab.runner import execute_run

    store = db.store()
    exp = many("live", 25, replicates=1)
    files = store.write_experiment(exp.describe())
    specs = list(exp.runs())
    with store.indexing(exp.experiment_id), store.sink(exp.experiment_id) as sink:
        for spec in specs[:10]:
            sink.write(execute_run(exp, spec, files))
        wait_until(lambda: len(db.runs(exp.experiment_id)) == 10, 10, "the first 10 runs in the index")
        for spec in specs[10:]:
            sink.write(execute_run(exp, spec, files))
    assert len(db.runs(exp.experiment_id)) == 25  # the rest when it ends


def test_a_killed_sweep_and_a_rerun_leave_the_index_equal_to_the_files(db: Db, tmp_path: Path) -> None:
    """Records a killed process wrote but never indexed reach the index on the rerun that skips them."""
    script = tmp_path / "sweep.py"
    script.write_text(SLOW_SWEEP.format(locator=db.locator()))
    runs_dir = db.root / "slow-1" / "runs"
    for _ in range(2):
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = _lines(runs_dir)
        wait_until(lambda start=before: _lines(runs_dir) >= start + 5, 60, "5 more records")
        process.kill()  # kill -9: nothing flushed, nothing said
        process.wait()
    rerun = metalab.run(slow(), store=db.locator(), progress=False)
    assert rerun.skipped >= 10 and rerun.ran + rerun.skipped == 40
    on_disk = metalab.FileStore(db.root).load("slow-1")
    assert len(on_disk) == 40 and set(db.runs("slow-1")) == set(on_disk)
    assert db.rows("SELECT sum(runs) FROM metalab.run_counts WHERE experiment_id = 'slow-1'") == [(40,)]


def test_load_results_brings_the_index_up_to_files_written_without_it(db: Db) -> None:
    exp = quick()
    metalab.run(exp, store=metalab.FileStore(db.root), progress=False)  # the same folder, no index at all
    assert db.rows("SELECT to_regclass('metalab.runs')") == [(None,)]
    results = metalab.load_results(db.locator(), exp)
    assert len(results) == 6 and len(db.runs(exp.experiment_id)) == 6


def test_a_record_file_edited_by_hand_is_indexed_again_whole(db: Db) -> None:
    exp = quick()
    metalab.run(exp, store=db.locator(), progress=False)
    [path] = (db.root / exp.experiment_id / "runs").glob("*.jsonl")
    kept = path.read_text().splitlines(keepends=True)[:4]
    path.write_text("".join(kept))  # two runs deleted by hand: the file shrank
    assert db.store().catch_up(exp.experiment_id) == 4
    assert len(db.runs(exp.experiment_id)) == 4


SLOW_SWEEP = """
import sys, time
sys.path.insert(0, {here!r})
import metalab
from test_postgres_store import slow
metalab.run(slow(), store={locator!r}, progress=False)
""".replace("{here!r}", repr(str(Path(__file__).parent)))


@metalab.operation
def crawl(params, seeds, capture):
    time.sleep(0.05)
    capture.metric("x", params["x"])


def slow() -> metalab.Experiment:
    return metalab.Experiment(name="slow", version="1", operation=crawl, params=metalab.grid(x=list(range(40))))


def _lines(runs_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in runs_dir.glob("*.jsonl")) if runs_dir.is_dir() else 0


# -- rebuilding the index ----------------------------------------------------------------------


def test_rebuild_index_restores_one_experiment_and_leaves_another_untouched(db: Db) -> None:
    a, b = quick("alpha"), many("beta", 10)
    metalab.run(a, store=db.locator(), progress=False)
    metalab.run(b, store=db.locator(), progress=False)
    store = db.store()
    before_a = db.runs(a.experiment_id)
    before_b = db.rows("SELECT run_id, xmin::text, metrics FROM metalab.runs WHERE experiment_id = %s ORDER BY 1",
                       b.experiment_id)
    catalogue_b = db.rows("SELECT kind, name, type, xmin::text FROM metalab.catalogue WHERE experiment_id = %s ORDER BY 1, 2",
                          b.experiment_id)
    # damage alpha's index: two rows lost, one altered, one that the files never had, a lost name
    lost = sorted(before_a)[:2]
    db.rows("DELETE FROM metalab.runs WHERE run_id = ANY(%s)", lost)
    db.rows("UPDATE metalab.runs SET status = 'failed', metrics = '{}' WHERE run_id = %s", sorted(before_a)[3])
    db.rows("INSERT INTO metalab.runs (experiment_id, run_id, status) VALUES (%s, 'bogus', 'success')",
            a.experiment_id)
    db.rows("DELETE FROM metalab.catalogue WHERE experiment_id = %s AND name = 'loss'", a.experiment_id)

    assert store.rebuild_index(a.experiment_id) == 6
    assert db.runs(a.experiment_id) == before_a
    assert db.rows("SELECT name FROM metalab.catalogue WHERE experiment_id = %s ORDER BY 1", a.experiment_id) == [
        ("loss",), ("scale",), ("score",),
    ]
    # beta: not one row rewritten (same tuple versions)
    assert db.rows("SELECT run_id, xmin::text, metrics FROM metalab.runs WHERE experiment_id = %s ORDER BY 1",
                   b.experiment_id) == before_b
    assert db.rows("SELECT kind, name, type, xmin::text FROM metalab.catalogue WHERE experiment_id = %s ORDER BY 1, 2",
                   b.experiment_id) == catalogue_b


def test_rebuilt_rows_equal_the_rows_the_indexer_wrote(db: Db, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    exp = metalab.Experiment(name="same", version="1", operation=flaky,
                             params=metalab.grid(scale=[1, 2, 10], flag=[str(flag)]), seeds=metalab.seeds(base=3, replicates=2))
    metalab.run(exp, store=db.locator(), progress=False)
    nan_exp = many("nan", 5)
    metalab.run(nan_exp, store=db.locator(), progress=False)
    odd = metalab.Experiment(name="odd", version="1", operation=awkward, params=metalab.manual([
        {"sign": 1, "path": "C:\\tmp\\x", "text": "a\tb\nc", "nul": "a\x00b", "nested": {"l": [1, None]}},
        {"sign": -1, "path": "/x", "text": "", "nul": "", "nested": None},
    ]))
    metalab.run(odd, store=db.locator(), progress=False)
    odd_runs = db.runs(odd.experiment_id)
    assert sorted(row["metrics"]["inf"] for row in odd_runs.values()) == ["-Infinity", "Infinity"]
    assert {row["params"]["nul"] for row in odd_runs.values()} == {"a\ufffdb", ""}
    failed = [row for row in odd_runs.values() if row["status"] == "failed"]
    assert len(failed) == 1 and "bad\ufffdvalue\twith\\backslash" in failed[0]["error"]
    query = "SELECT * FROM metalab.runs ORDER BY experiment_id, run_id"
    catalogue = "SELECT * FROM metalab.catalogue ORDER BY 1, 2, 3"
    written, names = db.rows(query), db.rows(catalogue)
    db.rows("DELETE FROM metalab.runs")
    db.rows("DELETE FROM metalab.catalogue")
    ids = (exp.experiment_id, nan_exp.experiment_id, odd.experiment_id)
    assert sum(db.store().rebuild_index(e) for e in ids) == 6 + 20 + 2
    # repr: the numbers column holds NaN, which is never == itself
    assert repr(db.rows(query)) == repr(written) and db.rows(catalogue) == names
    assert ("odd-1", "param", "nested", "json", 3) in names
    assert sum(db.store().rebuild_index(e) for e in ids) == 28  # again: nothing changes
    assert repr(db.rows(query)) == repr(written)


def test_a_brand_new_database_catches_up_with_every_experiment_in_the_files(db: Db, pg_server: PgServer) -> None:
    metalab.run(quick("one"), store=db.locator(), progress=False)
    metalab.run(quick("two"), store=db.locator(), progress=False)
    (db.root / "services").mkdir()  # the services' folder under file_root is no experiment
    fresh = Db(pg_server, f"pgstore_{secrets.token_hex(6)}", db.root)
    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{fresh.name}" OWNER "{pg_server.user}"')
    try:
        store = PostgresStore.from_locator(fresh.locator())
        assert store.catch_up() == 12
        assert store.catch_up() == 0  # nothing new
        assert fresh.rows("SELECT experiment_id, name, count(*) FROM metalab.runs JOIN metalab.experiments "
                          "USING (experiment_id) GROUP BY 1, 2 ORDER BY 1") == [("one-0.1", "one", 6), ("two-0.1", "two", 6)]
        assert fresh.rows("SELECT count(*) FROM metalab.catalogue") == [(6,)]
    finally:
        with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{fresh.name}" WITH (FORCE)')


def test_rebuild_index_of_an_unknown_experiment_is_an_error(db: Db) -> None:
    with pytest.raises(NotFoundError, match="nosuch"):
        db.store().rebuild_index("nosuch")


def test_rebuild_index_skips_a_torn_last_line_as_loading_does(db: Db) -> None:
    exp = quick()
    metalab.run(exp, store=db.locator(), progress=False)
    [path] = (db.root / exp.experiment_id / "runs").glob("*.jsonl")
    with path.open("a") as handle:
        handle.write('{"run_id":"torn","status":"success","par')
    (path.parent / "junk.jsonl").write_text('not json\n{"run_id":"x"}\n')
    assert db.store().rebuild_index(exp.experiment_id) == 6
    assert len(db.runs(exp.experiment_id)) == 6


# -- the schema ----------------------------------------------------------------------------------


def test_concurrent_first_use_creates_the_schema_once(db: Db) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def first_use(n: int) -> None:
        store = db.store()
        try:
            with store.connect() as conn:
                barrier.wait()
                store.ensure_schema(conn)
            store.write_experiment(quick(f"e{n}").describe())
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert db.rows("SELECT version FROM metalab.schema_version") == [(index_schema.SCHEMA_VERSION,)]
    assert db.rows("SELECT count(*) FROM metalab.experiments") == [(6,)]


def test_a_version_1_index_is_upgraded_in_place(db: Db) -> None:
    v1 = dict(index_schema.MIGRATIONS)[1]
    with db.connect() as conn:
        conn.execute(v1)
        conn.execute("INSERT INTO metalab.schema_version VALUES (1)")
        conn.execute("INSERT INTO metalab.experiments (experiment_id, name, version) VALUES ('old-1', 'old', '1')")
        conn.execute("INSERT INTO metalab.runs (run_id, experiment_id, status) VALUES ('r-old', 'old-1', 'success')")
    metalab.run(quick(), store=db.locator(), progress=False)
    assert db.rows("SELECT version FROM metalab.schema_version") == [(index_schema.SCHEMA_VERSION,)]
    assert db.rows("SELECT experiment_id, status, params FROM metalab.runs WHERE run_id = 'r-old'") == [("old-1", "success", {})]
    assert len(db.runs("mvp-0.1")) == 6
    assert db.rows("SELECT experiment_id, status, runs FROM metalab.run_counts ORDER BY 1") == [
        ("mvp-0.1", "success", 6), ("old-1", "success", 1)]


def test_a_version_2_index_gets_slots_numbers_and_counts(db: Db) -> None:
    migrations = dict(index_schema.MIGRATIONS)
    with db.connect() as conn:
        conn.execute(migrations[1])
        conn.execute(migrations[2])
        conn.execute("INSERT INTO metalab.schema_version VALUES (2)")
        conn.execute("INSERT INTO metalab.experiments (experiment_id, name, version) VALUES ('old-1', 'old', '1')")
        conn.execute("INSERT INTO metalab.runs (run_id, experiment_id, status, params, metrics) VALUES "
                     """('r1', 'old-1', 'success', '{"lr": 0.1, "opt": "sgd"}', '{"loss": "NaN", "big": 1e400}')""")
        conn.execute("INSERT INTO metalab.catalogue VALUES ('old-1', 'param', 'lr', 'number'), "
                     "('old-1', 'param', 'opt', 'string'), ('old-1', 'metric', 'loss', 'number'), "
                     "('old-1', 'metric', 'big', 'number')")
    db.store().write_experiment(quick().describe())
    assert db.rows("SELECT kind, name, slot FROM metalab.catalogue WHERE experiment_id = 'old-1' ORDER BY slot") == [
        ("metric", "big", 1), ("metric", "loss", 2), ("param", "lr", 3), ("param", "opt", 4)]
    assert repr(db.rows("SELECT numbers FROM metalab.runs WHERE run_id = 'r1'")) == repr([([None, math.nan, 0.1, None],)])
    assert db.rows("SELECT status, runs FROM metalab.run_counts WHERE experiment_id = 'old-1'") == [("success", 1)]


def test_an_index_newer_than_this_metalab_is_refused_clearly(db: Db) -> None:
    db.store().write_experiment(quick().describe())
    db.rows("UPDATE metalab.schema_version SET version = 99")
    with pytest.raises(IndexSchemaError, match="99"):
        db.store().write_experiment(quick().describe())


# -- failures and credentials --------------------------------------------------------------------


def test_a_wrong_password_fails_before_any_run_and_is_never_shown(db: Db, caplog) -> None:
    wrong = "Wr0ng-" + secrets.token_hex(8)
    locator = db.locator(password=wrong)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(IndexUnavailable) as caught:
            metalab.run(quick(), store=locator, progress=False)
    text = all_text(caught.value)
    assert "password authentication failed" in text
    assert wrong not in text and wrong not in caplog.text
    assert "***" in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, MetalabError)
    assert not (db.root / "mvp-0.1" / "runs").exists() or not any((db.root / "mvp-0.1" / "runs").iterdir())


def test_the_password_is_in_no_log_line_describe_or_repr(db: Db, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        handle = metalab.run(quick(), store=db.locator(), progress=False)
        handle.store.rebuild_index(handle.experiment.experiment_id)
    password = db.server.password
    assert "***" in caplog.text
    for text in (caplog.text, handle.store.describe(), repr(handle.store), str(vars(handle.store))):
        assert password not in text


def test_an_unreachable_server_only_warns_and_every_run_lands_in_the_files(db: Db, caplog) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "Unre4chable-" + secrets.token_hex(6)
    locator = f"postgresql://u:{secret}@127.0.0.1:{port}/db?file_root={db.root}"
    with caplog.at_level(logging.WARNING, logger="metalab.store"):
        handle = metalab.run(quick(), store=locator, progress=False)
    assert handle.ran == 6 and len(metalab.FileStore(db.root).load(handle.experiment.experiment_id)) == 6
    assert str(port) in caplog.text and "catches up" in caplog.text and secret not in caplog.text


def test_every_password_source_logs_in(db: Db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))  # no ~/.pgpass either
    password = db.server.password
    bare = db.locator(password="")
    # a password file given explicitly (as discover passes the bundle's)
    given = tmp_path / "given.pw"
    given.write_text(password + "\n")
    given.chmod(0o600)
    PostgresStore.from_locator(bare, password_file=given).write_experiment(quick("a").describe())
    # the services' file under file_root
    services = db.root / "services" / "postgres.password"
    services.parent.mkdir(parents=True)
    services.write_text(password + "\n")
    services.chmod(0o600)
    PostgresStore.from_locator(bare).write_experiment(quick("b").describe())
    services.unlink()
    # libpq's own PGPASSWORD
    monkeypatch.setenv("PGPASSWORD", password)
    PostgresStore.from_locator(bare).write_experiment(quick("c").describe())
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(IndexUnavailable):
        PostgresStore.from_locator(bare).write_experiment(quick("d").describe())
    assert db.rows("SELECT name FROM metalab.experiments ORDER BY 1") == [("a",), ("b",), ("c",)]


def test_missing_file_root_is_a_config_error(db: Db) -> None:
    locator = db.locator().split("?")[0]
    with pytest.raises(ConfigError, match="file_root"):
        metalab.run(quick(), store=locator, progress=False)


def test_an_index_dropped_mid_experiment_is_restored_from_the_files_by_itself(db: Db, caplog) -> None:
    exp = many("lost", 5)  # 20 runs
    db.store().write_experiment(exp.describe())
    db.rows("DROP SCHEMA metalab CASCADE")
    with caplog.at_level(logging.WARNING, logger="metalab.store"):
        handle = metalab.run(exp, store=db.locator(), progress=False)
    assert handle.ran == 20 and len(db.runs(exp.experiment_id)) == 20
    assert db.server.password not in caplog.text


def test_pgpass_style_env_does_not_leak_into_describe(db: Db, monkeypatch) -> None:
    monkeypatch.setenv("PGPASSWORD", db.server.password)
    store = PostgresStore.from_locator(db.locator(password=""))
    assert db.server.password not in store.describe() + repr(store)


# -- what Atlas reads: slots, typed numbers, run counts ----------------------------------------------


def test_numbers_sit_at_their_catalogue_slots_and_counts_follow_reruns(db: Db, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    exp = metalab.Experiment(name="counted", version="1", operation=flaky,
                             params=metalab.grid(scale=[1, 2, 10], flag=[str(flag)]), seeds=metalab.seeds(base=3, replicates=2))
    metalab.run(exp, store=db.locator(), executor=metalab.ProcessExecutor(2), progress=False)
    counts = "SELECT status, runs FROM metalab.run_counts WHERE experiment_id = %s AND runs > 0 ORDER BY 1"
    assert db.rows(counts, exp.experiment_id) == [("failed", 2), ("success", 4)]
    flag.unlink()
    metalab.run(exp, store=db.locator(), progress=False)  # the failed runs succeed: their rows are updated
    assert db.rows(counts, exp.experiment_id) == [("success", 6)]
    slots = dict(((kind, name), slot) for kind, name, slot in
                 db.rows("SELECT kind, name, slot FROM metalab.catalogue WHERE experiment_id = %s", exp.experiment_id))
    assert sorted(slots.values()) == list(range(1, len(slots) + 1))  # two writers, one numbering
    for params, metrics, numbers in db.rows(
        "SELECT params, metrics, numbers FROM metalab.runs WHERE experiment_id = %s", exp.experiment_id
    ):
        assert numbers[slots[("param", "scale")] - 1] == params["scale"]
        assert numbers[slots[("metric", "score")] - 1] == metrics["score"] == params["scale"] * 2
        assert numbers[slots[("param", "flag")] - 1] is None  # a string has no number
    shutil.rmtree(db.store().files(exp.experiment_id).runs_dir)
    db.store().rebuild_index(exp.experiment_id)  # the files say there are none: the rows and counts go
    assert db.rows(counts, exp.experiment_id) == []
