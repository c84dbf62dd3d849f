"""Atlas's server time over an experiment of 100,000 indexed runs, and Atlas's start-up time.

    python bench/atlas.py [--runs N] [--rounds R] [--plot-rounds R] [--start-rounds R] [--as-written] [--explain]

The workload (issue 7): a grid of lr (10 values) x width (10) x depth (10) x optimizer
(sgd, adam) x 5 replicates = 100,000 runs of an operation that records loss and accuracy, written
through PostgresStore (`store="discover"`) into a throwaway project whose PostgreSQL and Atlas
come from `metalab services up` (and are stopped afterwards). Only 127.0.0.1 is contacted.

What is timed is Atlas's own `Server-Timing: app;dur=MS` (server time until the response
started), the median over the rounds after one warm-up request; the client's wall time
(keep-alive connection, body read) is shown beside it. The figures wait for the index to hold every
run (Atlas's indexer follows the record files); the runs table is VACUUM (ANALYZE)d first,
as autovacuum leaves it a minute or so after a sweep, so that the plans do not depend on when
autovacuum comes by; --as-written measures it as the sweep left it instead (autovacuum may act
during the figures: the lines before and after them say). --explain prints the plans of the
statements behind the figures.

Budgets (issue 7):
  a page of 50 runs sorted by a metric and filtered on a parameter      <= 10 ms (API and HTML page;
      filters matching 10%, 20% and 1% of the runs, and with or, in and parentheses 28% and 4%;
      the keyset second page; descending order)
  the experiments page (`/` and /api/experiments)                       <= 20 ms
  the data for a 100,000-point plot (/plot grouped, /histogram)         <= 200 ms
  parameter importance over the 100,000 runs                            <= 300 ms (issue 16)
  parallel coordinates data over the 100,000 runs                       <= 200 ms (issue 16)
  curves of 1,000 runs x 1,000 steps, grouped and aggregated            <= 150 ms (issue 16; a second
      experiment written into the same services)
  Atlas start (Popen) to /api/health answering 200                      <= 0.5 s
Shown without a budget: the rate the runs were written at, and the experiment page (which
computes min/median/max of every metric over all runs).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import metalab
from _sweeps import curves_figures, sweep_figures
from _timing import services_project
from metalab.net import free_port
from metalab.procs import stop_child

HOST = "127.0.0.1"
METALAB_BIN = str(Path(sys.executable).with_name("metalab"))
LRS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
OPTIMIZERS = ("sgd", "adam")
# Filters on params, by the share of runs they match (whatever depth and replicates are).
FILTERS = (("lr = 0.01", "10%"), ("width <= 16", "20%"), ("lr = 0.01 and width = 128", "1%"),
           ("width in (64, 128) or lr = 0.01", "28%"), ("(lr = 0.01 or lr = 0.1) and width in (64, 128)", "4%"))
PAGE_BUDGET_MS, LIST_BUDGET_MS, PLOT_BUDGET_MS, START_BUDGET_S = 10, 20, 200, 0.5
LABEL = 66


@metalab.operation
def train(params, seeds, capture):
    """A stand-in for training: loss from the params plus noise, accuracy from the loss."""
    rng = seeds.rng()
    lr, width, depth = params["lr"], params["width"], params["depth"]
    loss = 0.3 * abs(math.log10(lr) + 2) + 1 / depth + 8 / width + (0.1 if params["optimizer"] == "sgd" else 0.0)
    loss += 0.05 * rng.random()
    capture.metric("loss", loss)
    capture.metric("accuracy", 1 / (1 + loss) + 0.01 * rng.random())


def experiment(runs: int) -> metalab.Experiment:
    """About ``runs`` runs: 200 (lr, width, optimizer) points times depths times replicates."""
    per_point = max(1, runs // (len(LRS) * len(WIDTHS) * len(OPTIMIZERS)))
    depths = min(10, per_point)
    replicates = max(1, per_point // depths)
    return metalab.Experiment(
        name="atlas-bench", version="1", operation=train,
        params=metalab.grid(lr=list(LRS), width=list(WIDTHS), depth=list(range(1, depths + 1)),
                            optimizer=list(OPTIMIZERS)),
        seeds=metalab.seeds(base=7, replicates=replicates),
    )


# -- the project and its services ----------------------------------------------------------------


def services_up(work: Path) -> Path:
    return services_project(work, "atlas-bench", f"[services.postgres]\n[services.atlas]\nport = {free_port(HOST)}\n")


def services_down(project: Path) -> None:
    """Stopped even on a second Ctrl+C (``down`` inherits the ignored SIGINT too)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        subprocess.run([METALAB_BIN, "services", "down", "-q"], cwd=project, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)


def bundle_services(project: Path) -> dict[str, Any]:
    return json.loads((project / "runs" / "services" / "bundle.json").read_text())["services"]


def write_runs(project: Path, exp: metalab.Experiment) -> float:
    os.chdir(project)
    start = time.perf_counter()
    handle = metalab.run(exp, store="discover", executor=metalab.ProcessExecutor(2), progress=False)
    took = time.perf_counter() - start
    assert handle.ran == len(exp), (handle.ran, len(exp))
    return took


# -- HTTP ---------------------------------------------------------------------------------------


class RequestFailed(Exception):
    """Atlas answered with something other than 200 (or no Server-Timing)."""


class Client:
    """GETs over one keep-alive connection; each answer's Server-Timing and wall time, in ms."""

    def __init__(self, host: str, port: int) -> None:
        assert host == HOST, f"Atlas is expected on {HOST}, not {host}"
        self.conn = http.client.HTTPConnection(host, port, timeout=90)  # Atlas's statement_timeout is 60 s

    def get(self, path: str) -> tuple[float, float, bytes]:
        start = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        wall = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise RequestFailed(f"{response.status} after {wall / 1000:.1f} s: {body[:200].decode(errors='replace')}")
        return server_ms(response.getheader("server-timing") or ""), wall, body

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[2])

    def medians(self, path: str, rounds: int) -> tuple[float, float, bytes]:
        """(server, client) medians in ms over ``rounds`` requests after one warm-up, whose body is returned."""
        body = self.get(path)[2]
        samples = [self.get(path)[:2] for _ in range(rounds)]
        return statistics.median(s for s, _ in samples), statistics.median(c for _, c in samples), body

    def close(self) -> None:
        self.conn.close()  # the next request connects again


def server_ms(header: str) -> float:
    for metric in header.split(","):
        name, *attrs = (part.strip() for part in metric.split(";"))
        for attr in attrs:
            if name == "app" and attr.startswith("dur="):
                return float(attr[4:])
    raise RequestFailed(f"no app;dur in Server-Timing {header!r}")


def runs_path(experiment_id: str, html: bool, **params: str) -> str:
    prefix = "" if html else "/api"
    return f"{prefix}/experiments/{quote(experiment_id, safe='')}/runs?{urlencode(params, quote_via=quote)}"


def measure(client: Client, label: str, path: str | Callable[[], str], rounds: int, budget: float | None,
            check: Callable[[bytes], None] | None = None) -> None:
    """Print one figure; a failed request is printed as such and the next figure goes on."""
    try:
        server, wall, body = client.medians(path if isinstance(path, str) else path(), rounds)
        if check is not None:
            check(body)
    except (RequestFailed, OSError, http.client.HTTPException, AssertionError) as error:
        client.close()
        print(f"  {label:<{LABEL}} FAILED: {type(error).__name__}: {error}")
        return
    shown = f"median {server:7.2f} ms (client {wall:6.1f} ms)"
    verdict = f"budget <= {budget:g} ms  {'ok' if server <= budget else 'OVER'}" if budget is not None else "(no budget)"
    print(f"  {label:<{LABEL}} {shown}   {verdict}")


# -- the figures ---------------------------------------------------------------------------------


def runs_pages(client: Client, experiment_id: str, rounds: int) -> None:
    print(f"runs pages: 50 runs sorted by loss, medians over {rounds} rounds")
    for where, share in FILTERS:
        for html in (False, True):
            params = {"sort": "loss", "where": where, **({} if html else {"limit": "50"})}
            label = f"runs page ({'HTML' if html else 'API'}), sort loss, {where} ({share})"
            measure(client, label, runs_path(experiment_id, html, **params), rounds, PAGE_BUDGET_MS)
    where, share = FILTERS[0]
    for order in ("asc", "desc"):
        params = {"sort": "loss", "order": order, "where": where, "limit": "50"}
        if order == "desc":
            for html in (False, True):
                label = f"runs page ({'HTML' if html else 'API'}), sort loss desc, {where} ({share})"
                page = {key: value for key, value in params.items() if not html or key != "limit"}
                measure(client, label, runs_path(experiment_id, html, **page), rounds, PAGE_BUDGET_MS)
        label = f"runs page 2 (API, keyset cursor), sort loss{' desc' if order == 'desc' else ''}, {where} ({share})"
        measure(client, label, second_page(client, experiment_id, params), rounds, PAGE_BUDGET_MS)


def second_page(client: Client, experiment_id: str, params: dict[str, str]) -> Callable[[], str]:
    """The path of the page after the first, with the cursor the first page gives out."""

    def path() -> str:
        cursor = client.json(runs_path(experiment_id, False, **params))["next_cursor"]
        assert cursor, "the first page should have a next page"
        return runs_path(experiment_id, False, **params, cursor=cursor)

    return path


def experiment_pages(client: Client, experiment_id: str, rounds: int) -> None:
    print(f"experiments: medians over {rounds} rounds")
    measure(client, "experiments page (HTML /)", "/", rounds, LIST_BUDGET_MS)
    measure(client, "experiments (API /api/experiments)", "/api/experiments", rounds, LIST_BUDGET_MS)
    quoted = quote(experiment_id, safe="")
    measure(client, "experiment page (API), metric summaries", f"/api/experiments/{quoted}", rounds, None)
    measure(client, "experiment page (HTML), metric summaries", f"/experiments/{quoted}", rounds, None)


def plot_data(client: Client, experiment_id: str, rounds: int, runs: int) -> None:
    print(f"plot data over all {runs:,} runs: medians over {rounds} rounds")
    quoted = quote(experiment_id, safe="")

    def every_run(body: bytes) -> None:
        groups = json.loads(body)["groups"]
        counted = sum(point["n"] for points in groups.values() for point in points)
        assert counted == runs, f"the plot covers {counted} runs, not {runs}"

    measure(client, "plot (API), loss against lr grouped by optimizer",
            f"/api/experiments/{quoted}/plot?x=lr&y=loss&group=optimizer", rounds, PLOT_BUDGET_MS, every_run)
    measure(client, "histogram (API), loss in 50 bins", f"/api/experiments/{quoted}/histogram?field=loss&bins=50",
            rounds, PLOT_BUDGET_MS)


# -- Atlas's start-up ----------------------------------------------------------------------------


def atlas_settings_json(services: dict[str, Any], project: Path) -> str:
    from metalab.atlas.settings import AtlasSettings, settings_document
    from metalab.secret import Secret

    pg = services["postgres"]
    assert pg["host"] == HOST, f"PostgreSQL is expected on {HOST}, not {pg['host']}"
    password = Secret(Path(pg["password_file"]).read_text().strip())
    settings = AtlasSettings(db_host=pg["host"], db_port=int(pg["port"]), db_user=pg["user"], db_name=pg["database"],
                             db_password=password, file_root=str(project / "runs"))
    return settings_document(settings)


def health_status(port: int) -> bytes | None:
    """The status code /api/health answers with, or None while nothing listens."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as conn:
            conn.sendall(f"GET /api/health HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            parts = conn.makefile("rb").readline(256).split()
    except OSError:
        return None
    return parts[1] if len(parts) >= 2 else None


def start_once(settings_json: str, env: dict[str, str], log: Path) -> float:
    """Seconds from Popen to the first 200 from /api/health; the Atlas is stopped afterwards."""
    from metalab.services.atlas import command

    port = free_port(HOST)
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command(HOST, port), stdin=subprocess.PIPE, stdout=out, stderr=out, env=env, text=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write(settings_json + "\n")
            proc.stdin.close()
            while health_status(port) != b"200":
                if proc.poll() is not None:
                    raise RuntimeError(f"Atlas exited with {proc.returncode}: {log.read_text()[-2000:]}")
                if time.perf_counter() - start > 30:
                    raise RuntimeError(f"Atlas did not answer /api/health within 30 s: {log.read_text()[-2000:]}")
                time.sleep(0.005)
            return time.perf_counter() - start
        finally:
            stop_child(proc)


def atlas_start(services: dict[str, Any], project: Path, work: Path, rounds: int) -> None:
    settings_json = atlas_settings_json(services, project)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    samples = [start_once(settings_json, env, work / "atlas-start.log") for _ in range(rounds)]
    median = statistics.median(samples)
    verdict = "ok" if median <= START_BUDGET_S else "OVER"
    print(f"atlas start: Popen to /api/health 200, {rounds} rounds (min {min(samples) * 1000:.0f} ms, "
          f"max {max(samples) * 1000:.0f} ms)")
    print(f"  {'atlas start to /api/health answering':<{LABEL}} median {median * 1000:7.0f} ms"
          f"{'':>19}   budget <= {START_BUDGET_S:g} s  {verdict}")


# -- the index's state: the planner's statistics and the visibility map --------------------------


def connect(services: dict[str, Any], project: Path, *, read_only: bool = True) -> Any:
    """A session like Atlas's (read-only), or the index owner's (to VACUUM)."""
    import psycopg

    from metalab.atlas.settings import read_settings

    settings = read_settings(io.StringIO(atlas_settings_json(services, project)))
    if read_only:
        return psycopg.connect(settings.conninfo(), autocommit=True)
    return psycopg.connect(host=settings.db_host, port=settings.db_port, user=settings.db_user,
                           dbname=settings.db_name, password=settings.db_password.reveal(), autocommit=True)


def index_state(services: dict[str, Any], project: Path) -> str:
    """Whether the runs table has been analyzed and vacuumed yet (autovacuum's timing decides
    which plans a page gets: without statistics the planner guesses a handful of rows), and how
    many sort indexes the services' indexer has built (from 20,000 runs of an experiment)."""
    from metalab.store.index_schema import INDEX_SCHEMA

    with connect(services, project) as conn:
        analyzed, vacuumed = conn.execute(
            "SELECT greatest(last_analyze, last_autoanalyze) IS NOT NULL, "
            "greatest(last_vacuum, last_autovacuum) IS NOT NULL FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = 'runs'", (INDEX_SCHEMA,)).fetchone()
        (sorted_by,) = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                                    "WHERE c.relname LIKE 'runs\\_sorted\\_%' AND i.indisvalid").fetchone()
    return (f"runs table {'analyzed' if analyzed else 'not yet analyzed'}, {'vacuumed' if vacuumed else 'not yet vacuumed'}, "
            f"{sorted_by} valid sort indexes (metalab.store.sort_indexes)")


def wait_indexed(services: dict[str, Any], project: Path, experiment_id: str, runs: int, timeout: float = 900) -> float:
    """Seconds until the index holds all ``runs`` (Atlas's indexer follows the record files), so
    that no figure is taken over part of the runs."""
    from metalab.store.index_schema import INDEX_SCHEMA

    start = time.perf_counter()
    with connect(services, project) as conn:
        while True:
            (count,) = conn.execute(f"SELECT count(*) FROM {INDEX_SCHEMA}.runs WHERE experiment_id = %s",
                                    (experiment_id,)).fetchone()
            if count >= runs:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the index holds {count:,} of the {runs:,} runs after {timeout:g} s")
            time.sleep(0.5)


def vacuum_analyze(services: dict[str, Any], project: Path) -> float:
    from metalab.store.index_schema import INDEX_SCHEMA

    start = time.perf_counter()
    with connect(services, project, read_only=False) as conn:
        conn.execute(f"VACUUM (ANALYZE) {INDEX_SCHEMA}.runs")
        conn.execute(f"VACUUM (ANALYZE) {INDEX_SCHEMA}.steps")
    return time.perf_counter() - start


# -- optional: the plans behind the runs pages ---------------------------------------------------


def explain(services: dict[str, Any], project: Path, experiment_id: str) -> None:
    """EXPLAIN ANALYZE of the statements Atlas runs for these figures (its own SQL, from query.py)."""
    from starlette.datastructures import QueryParams

    from metalab.atlas.asks import runs_query
    from metalab.atlas.query import Catalogue, histogram_sql, plot_sql, summary_sql
    from metalab.store.index_schema import INDEX_SCHEMA

    print(f"explain ({index_state(services, project)}):")
    with connect(services, project) as conn:
        catalogue = Catalogue(conn.execute(f"SELECT kind, name, type, slot FROM {INDEX_SCHEMA}.catalogue "
                                           "WHERE experiment_id = %s ORDER BY kind, name", (experiment_id,)).fetchall())
        statements = []
        for where, share in FILTERS:
            for order in ("asc", "desc"):
                params = QueryParams(urlencode({"sort": "loss", "where": where, "order": order}))
                for segment, statement, args in runs_query(experiment_id, catalogue, params).segments():
                    statements.append((f"runs page, {where} ({share}), {order}, segment {segment}", statement, args))
        field = catalogue.field
        statements.append(("plot", *plot_sql(experiment_id, field("lr"), field("loss"), field("optimizer"), ())))
        statements.append(("histogram", *histogram_sql(experiment_id, field("loss"), 50, ())))
        statements.append(("experiment summaries", *summary_sql(experiment_id, list(catalogue.metrics.values()))))
        for label, statement, args in statements:
            print(f"-- {label}")
            for (line,) in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", args).fetchall():
                print(f"   {line}")


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the experiment (a multiple of 200)")
    parser.add_argument("--rounds", type=int, default=30, help="requests per page figure")
    parser.add_argument("--plot-rounds", type=int, default=10, help="requests per plot figure")
    parser.add_argument("--start-rounds", type=int, default=7, help="Atlas starts timed")
    parser.add_argument("--as-written", action="store_true",
                        help="measure the index as the sweep left it, without a VACUUM (ANALYZE) first")
    parser.add_argument("--explain", action="store_true", help="also print EXPLAIN ANALYZE of the statements timed")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the services
    work = Path(tempfile.mkdtemp(prefix="metalab-atlas-bench-", dir="/tmp"))
    here = os.getcwd()
    project = client = None
    try:
        project = services_up(work)
        exp = experiment(args.runs)
        runs = len(exp)
        took = write_runs(project, exp)
        print(f"atlas: {runs:,} runs indexed (PostgresStore via store=\"discover\", 2 worker processes)")
        print(f"  {'write the runs':<{LABEL}} {took:9.1f} s {runs / took:8.0f} runs/s   (no budget)")
        services = bundle_services(project)
        caught_up = wait_indexed(services, project, exp.experiment_id, runs)
        print(f"  {'the index catching up with the files':<{LABEL}} {caught_up:9.1f} s")
        if not args.as_written:
            print(f"  {'VACUUM (ANALYZE) the runs and steps tables':<{LABEL}} {vacuum_analyze(services, project):9.1f} s")
        print(f"  index before the figures: {index_state(services, project)}")
        atlas = services["atlas"]
        client = Client(atlas["host"], int(atlas["port"]))
        runs_pages(client, exp.experiment_id, args.rounds)
        experiment_pages(client, exp.experiment_id, args.rounds)
        plot_data(client, exp.experiment_id, args.plot_rounds, runs)
        sweep_figures(client, measure, exp.experiment_id, runs, args.plot_rounds)
        print(f"  index after the figures: {index_state(services, project)}")
        curves_figures(client, measure, project, args.plot_rounds, LABEL,
                       settle=None if args.as_written else lambda: vacuum_analyze(services, project))
        atlas_start(services, project, work, args.start_rounds)
        if args.explain:
            explain(services, project, exp.experiment_id)
    finally:
        if client is not None:
            client.close()
        os.chdir(here)
        if project is not None:
            services_down(project)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
