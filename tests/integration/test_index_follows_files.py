"""The index converges to the record files by itself: Atlas's indexer follows them, whatever
happened to the writers or to the database, and says how far behind it is when it lags."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import metalab
from atlas_support import settings_for, start_atlas, stop, wait_healthy
from cluster_support import wait_until
from metalab.runner import execute_run
from metalab.store import index_schema

pytestmark = pytest.mark.integration

# Forks WRITERS processes from one that has imported everything, as array tasks each run their
# share of one experiment into the store's sink; prints how many writers failed.
WRITERS = textwrap.dedent("""
    import os, sys, time
    import metalab
    from metalab.runner import run_serially
    from metalab.store import open_store

    @metalab.operation
    def train(params, seeds, capture):
        time.sleep(params["pause"])
        capture.metric("loss", 1 / (1 + params["i"]))

    writers, each, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    exp = metalab.Experiment(name="wide", version="1", operation=train,
                             params=metalab.grid(i=list(range(writers * each)), pause=[pause]))
    store = open_store("discover")
    store.write_experiment(exp.describe())
    specs, files, pids = list(exp.runs()), store.files(exp.experiment_id), []
    for k in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_serially(exp, specs[k * each : (k + 1) * each], files, store.sink(exp.experiment_id))
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    print(sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in pids))
""")


def start_writers(project: Any, writers: int, each: int, pause: float) -> subprocess.Popen:
    script = project.root / "writers.py"
    script.write_text(WRITERS)
    return subprocess.Popen([sys.executable, str(script), str(writers), str(each), str(pause)], cwd=project.root,
                            env=project.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def indexed_runs(project: Any, experiment_id: str = "wide-1") -> int:
    status, _, body = project.http_get(f"/api/experiments/{experiment_id}")
    return json.loads(body)["runs"] if status == 200 else -1


def records_on_disk(root: Path, experiment_id: str = "wide-1") -> int:
    return len(metalab.FileStore(root).load(experiment_id))


class PeakConnections:
    """The most client backends the project's PostgreSQL had at once (this probe excluded)."""

    def __init__(self, project: Any) -> None:
        self.conn = project.connect()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            count = self.conn.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
            self.peak = max(self.peak, count.fetchone()[0])
            time.sleep(0.02)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def test_140_concurrent_writers_all_reach_the_index_over_a_bounded_number_of_connections(project) -> None:
    """More writers than PostgreSQL's 100 connections: none connects, and every run is indexed."""
    assert project.run("services", "up").code == 0
    with PeakConnections(project) as connections:
        writers = start_writers(project, 140, 6, 0.1)
        out, err = writers.communicate(timeout=300)
        assert writers.returncode == 0 and out.split() == ["0"], err
        assert records_on_disk(project.root / "runs") == 840
        wait_until(lambda: indexed_runs(project) == 840, 15, "all 840 runs in the index")
    assert connections.peak <= 20, connections.peak  # Atlas's pool and its indexer
    with project.connect() as conn:
        assert conn.execute("SELECT count(DISTINCT run_id) FROM metalab.runs WHERE experiment_id = 'wide-1'").fetchone() == (840,)


def test_runs_written_while_the_services_were_down_reach_the_index_once_they_are_up(project) -> None:
    assert project.run("services", "up").code == 0
    writers = start_writers(project, 10, 20, 0.25)  # 200 runs over about 5 s
    wait_until(lambda: records_on_disk(project.root / "runs") >= 20, 30, "the first records")
    assert project.run("services", "down").code == 0  # in the middle of the sweep
    out, err = writers.communicate(timeout=120)
    assert writers.returncode == 0 and out.split() == ["0"], err  # no writer waited on or failed for the index
    assert records_on_disk(project.root / "runs") == 200
    assert project.run("services", "up").code == 0
    wait_until(lambda: indexed_runs(project) == 200, 10, "the 200 runs in the index, with no rerun")


# -- Atlas over a database of the suite's server -----------------------------------------------------


@metalab.operation
def count(params, seeds, capture):
    capture.metric("x", params["x"])


COUNTED = metalab.Experiment(name="counted", version="1", operation=count, params=metalab.grid(x=list(range(10))))


@pytest.fixture
def atlas(pg_server, tmp_path: Path):
    """Atlas over a new database and an empty file_root; the index is made by Atlas alone."""
    name = f"follow_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{pg_server.user}"')
    root = tmp_path / "file_root"
    root.mkdir()
    process, url = start_atlas(settings_for(pg_server, name, root), tmp_path / "atlas.log")
    try:
        wait_healthy(url, process)
        yield url, root, psycopg.connect(pg_server.dsn(), dbname=name, autocommit=True)
    finally:
        stop(process)
        with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def write_records(root: Path, specs: list) -> None:
    """Records as a task writes them: to the files only."""
    store = metalab.FileStore(root)
    files = store.write_experiment(COUNTED.describe())
    with store.sink(COUNTED.experiment_id) as sink:
        for spec in specs:
            sink.write(execute_run(COUNTED, spec, files))


def experiment(url: str) -> dict | None:
    status, body = get(f"{url}/api/experiments/{COUNTED.experiment_id}")
    return json.loads(body) if status == 200 else None


def test_atlas_indexes_files_no_one_indexed_and_says_when_the_index_lags(atlas) -> None:
    url, root, conn = atlas
    specs = list(COUNTED.runs())
    write_records(root, specs[:7])
    wait_until(lambda: (experiment(url) or {}).get("runs") == 7, 10, "Atlas's indexer reading the 7 records")
    assert experiment(url)["index_lag"] is None
    # the indexer cannot get at this experiment (another holds its lock): the count is labelled stale
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (index_schema.INDEX_LOCK_CLASS, COUNTED.experiment_id))
    write_records(root, specs[7:])
    lagging = wait_until(lambda: (experiment(url) or {}).get("index_lag"), 10, "Atlas saying the index lags")
    assert re.fullmatch(r"index \d+ s behind the files", lagging) and experiment(url)["runs"] == 7
    status, page = get(f"{url}/experiments/{COUNTED.experiment_id}")
    assert status == 200 and re.search(r'id="index-lag"[^>]*>index \d+ s behind the files<', page)
    status, page = get(f"{url}/")
    assert re.search(r'id="index-lag"[^>]*>index \d+ s behind the files<', page)  # the list says so too
    conn.execute("SELECT pg_advisory_unlock_all()")
    wait_until(lambda: (experiment(url) or {}).get("runs") == 10, 10, "the 3 new records in the index")
    assert experiment(url)["index_lag"] is None
    status, page = get(f"{url}/experiments/{COUNTED.experiment_id}")
    assert 'class="lag hidden"' in page


def test_atlas_keeps_trying_while_the_index_refuses_it_and_catches_up_after(atlas, pg_server) -> None:
    """The indexer's connection is cut and new ones refused (as while PostgreSQL restarts): Atlas
    says why its counts are stale, and the index catches up by itself once it may connect again."""
    url, root, conn = atlas
    specs = list(COUNTED.runs())
    write_records(root, specs[:4])
    wait_until(lambda: (experiment(url) or {}).get("runs") == 4, 10, "the first 4 records in the index")
    database = conn.info.dbname
    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND application_name = 'metalab-indexer'", (database,))
        try:
            write_records(root, specs[4:])
            lagging = wait_until(lambda: "not currently accepting connections" in ((experiment(url) or {}).get("index_lag") or "")
                                 and experiment(url)["index_lag"], 15, "Atlas saying why the index lags")
            assert re.fullmatch(r"index \d+ s behind the files: .*", lagging), lagging
            assert pg_server.password not in lagging
        finally:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    wait_until(lambda: (experiment(url) or {}).get("runs") == 10, 10, "the index catching up")
    assert experiment(url)["index_lag"] is None
