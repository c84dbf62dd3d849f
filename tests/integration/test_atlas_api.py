"""Atlas's API against real PostgreSQL, with data written by metalab.run() (atlas_support)."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from urllib.parse import quote

import psycopg
import pytest

from atlas_support import (
    PNG,
    PROBE,
    Site,
    settings_for,
    start_atlas,
    stop,
    wait_healthy,
)

pytestmark = pytest.mark.integration

EXP = PROBE.experiment_id


def succeeded(site: Site) -> list:
    return [r for r in site.probe_records.values() if r.status == "success"]


def walk(site: Site, params: dict, limit: int = 7) -> list[dict]:
    """Every page of a runs query, following next_cursor."""
    runs, cursor = [], None
    while True:
        page = site.json(site.runs_path(EXP), {**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert len(page["runs"]) <= limit
        runs += page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return runs


# -- experiments ---------------------------------------------------------------------------------


def test_experiments_list_counts_runs_by_status_and_searches(site: Site) -> None:
    listed = {e["experiment_id"]: e for e in site.json("/api/experiments")}
    assert set(listed) == {EXP, "atlas-tour-1"}
    probe = listed[EXP]
    assert (probe["version"], probe["runs"], probe["succeeded"], probe["failed"]) == ("1", 36, 24, 12)
    # every run of the experiment has finished (36 of its 36): not "running", however recent
    assert probe["last_activity"] and probe["active"] is False and (probe["running"], probe["expected"]) == (0, 36)
    assert [e["experiment_id"] for e in site.json("/api/experiments", {"search": "tour"})] == ["atlas-tour-1"]
    assert site.json("/api/experiments", {"search": "100%_no"}) == []


def test_experiment_has_its_catalogue_and_metric_summaries(site: Site) -> None:
    e = site.json(f"/api/experiments/{EXP}")
    assert {(p["name"], p["type"]) for p in e["params"]} == {("lr", "number"), ("width", "number"), ("opt", "string")}
    assert {(m["name"], m["type"]) for m in e["metrics"]} == {("loss", "number"), ("final", "number")}
    finals = [r.metrics["final"] for r in succeeded(site)]
    summary = {s["name"]: s for s in e["summaries"]}["final"]
    assert summary["count"] == len(finals) == 24
    assert summary["min"] == pytest.approx(min(finals)) and summary["max"] == pytest.approx(max(finals))
    assert summary["median"] == pytest.approx(statistics.median(finals))
    assert site.get("/api/experiments/nope-1")[0] == 404


# -- runs: sort, filter, keyset pages, CSV -------------------------------------------------------------


def test_runs_sorted_by_a_metric_walk_every_page_once_in_order(site: Site) -> None:
    for order in ("asc", "desc"):
        runs = walk(site, {"sort": "final", "order": order})
        keyed = [r for r in runs if "final" in r["metrics"]]
        values = [r["metrics"]["final"] for r in keyed]
        assert values == sorted(values, reverse=order == "desc")
        assert runs[: len(keyed)] == keyed  # runs without the metric (the failures) come last
        assert sorted(r["run_id"] for r in runs) == sorted(site.probe_records)  # each run exactly once


@pytest.mark.parametrize("column", ["run_id", "status", "started_at", "duration", "replicate", "seed", "params.opt"])
def test_runs_sorted_by_a_run_column_or_a_string_walk_every_page(site: Site, column: str) -> None:
    for order in ("asc", "desc"):
        runs = walk(site, {"sort": column, "order": order}, limit=5)
        assert sorted(r["run_id"] for r in runs) == sorted(site.probe_records)
        key = (lambda r: r["params"]["opt"]) if column == "params.opt" else (lambda r: r[column])
        values = [key(r) for r in runs]
        assert values == sorted(values, reverse=order == "desc")


def test_runs_filtered_by_param_metric_and_status(site: Site) -> None:
    runs = walk(site, {"where": ["lr = 0.1", "final < 0.35"], "sort": "final"})
    expected = {r.run_id for r in succeeded(site) if r.params["lr"] == 0.1 and r.metrics["final"] < 0.35}
    assert {r["run_id"] for r in runs} == expected and expected
    failed = walk(site, {"status": "failed", "sort": "width", "order": "desc"})
    assert {r["run_id"] for r in failed} == {r.run_id for r in site.probe_records.values() if r.status == "failed"}
    assert [r["params"]["width"] for r in failed] == sorted((r["params"]["width"] for r in failed), reverse=True)
    adam = walk(site, {"where": "opt = adam and width >= 2", "sort": "params.lr"})
    assert {r["run_id"] for r in adam} == {
        r.run_id for r in site.probe_records.values() if r.params["opt"] == "adam" and r.params["width"] >= 2}
    contains = walk(site, {"where": "opt ~ da"})
    assert len(contains) == 18 and all(r["params"]["opt"] == "adam" for r in contains)


def final(r: object) -> float | None:
    return r.metrics.get("final") if r.status == "success" else None  # type: ignore[attr-defined]


# Filters with or, in and parentheses, and the same selection in Python over the records. A run
# without the field fails a condition on it; not is the complement (it also takes such runs).
BOOLEAN_FILTERS = [
    ("opt = adam or width in (1, 4)", lambda r: r.params["opt"] == "adam" or r.params["width"] in (1, 4)),
    ("(lr = 0.01 or lr = 0.5) and not width = 2", lambda r: r.params["lr"] in (0.01, 0.5) and r.params["width"] != 2),
    ("lr in (0.1, 0.5) && (opt = 'sgd' || final < 0.15)",
     lambda r: r.params["lr"] in (0.1, 0.5) and (r.params["opt"] == "sgd" or (final(r) is not None and final(r) < 0.15))),
    ("width not in (1, 2) or status = failed", lambda r: r.params["width"] not in (1, 2) or r.status == "failed"),
    ("not final < 0.2", lambda r: not (final(r) is not None and final(r) < 0.2)),
    ("final >= 0.2", lambda r: final(r) is not None and final(r) >= 0.2),
    ("opt IN (\"adam\", 'x, (y)') AND lr NOT IN (0.5) and width > 1 OR lr = 0.5 and width = 1",
     lambda r: r.params["opt"] == "adam" and r.params["lr"] != 0.5 and r.params["width"] > 1
     or r.params["lr"] == 0.5 and r.params["width"] == 1),
    ("not (opt = sgd and (width = 4 or lr in (0.01)))",
     lambda r: not (r.params["opt"] == "sgd" and (r.params["width"] == 4 or r.params["lr"] == 0.01))),
]


@pytest.mark.parametrize(("where", "selects"), BOOLEAN_FILTERS, ids=[w for w, _ in BOOLEAN_FILTERS])
def test_runs_filtered_with_or_in_and_parentheses_are_the_runs_python_selects(site: Site, where: str, selects) -> None:
    expected = {r.run_id for r in site.probe_records.values() if selects(r)}
    assert expected and expected != set(site.probe_records)  # each filter keeps some runs, not all
    for sort in ("final", "params.width", "run_id"):
        assert sorted(r["run_id"] for r in walk(site, {"where": where, "sort": sort})) == sorted(expected)
    # a second where= and the status param are ANDed with the whole filter
    both = walk(site, {"where": [where, "opt = sgd"], "status": "success"})
    assert {r["run_id"] for r in both} == {
        r.run_id for r in site.probe_records.values() if selects(r) and r.params["opt"] == "sgd" and r.status == "success"}
    status, _, body = site.get(site.runs_path(EXP) + ".csv", {"where": where})
    assert status == 200 and {row["run_id"] for row in csv.DictReader(io.StringIO(body.decode()))} == expected
    data = site.json(f"/api/experiments/{EXP}/histogram", {"field": "final", "bins": 3, "where": where})
    assert sum(b["count"] for b in data["bins"]) == sum(1 for r in site.probe_records.values() if selects(r) and final(r) is not None)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"sort": "los"}, "unknown field 'los'"),
        ({"where": "nope > 1"}, "this experiment has params lr, opt, width"),
        ({"where": "final < cheap"}, "metrics.final is a number"),
        ({"where": "final"}, "write FIELD OP VALUE"),
        ({"where": "status = done"}, "status can be"),
        ({"where": "width ~ 2"}, "~ (contains) is for text"),
        ({"order": "sideways"}, "order is asc or desc"),
        ({"limit": "0"}, "limit must be from 1 to 500"),
        ({"cursor": "garbage"}, "page cursor"),
        ({"where": "lr = 1; DROP TABLE metalab.runs"}, "cannot read the condition"),
        ({"where": "(lr = 0.1 or width = 2"}, "unbalanced parenthesis: the '(' at character 1"),
        ({"where": "lr in ()"}, "an empty in ()"),
        ({"where": "lr = 0.1 or"}, "a dangling 'or'"),
        ({"where": "lr = 0.1 or nope in (1)"}, "unknown field 'nope'"),
        ({"where": "lr = 0.1) or 1=1 --"}, "unbalanced parenthesis: the ')' at character 9"),
    ],
)
def test_a_bad_query_is_a_400_that_says_what_to_fix(site: Site, params: dict, says: str) -> None:
    status, _, body = site.get(site.runs_path(EXP), params)
    assert status == 400 and says in json.loads(body)["detail"]
    assert "\n" not in json.loads(body)["detail"]


def test_a_cursor_from_another_sort_is_refused(site: Site) -> None:
    cursor = site.json(site.runs_path(EXP), {"sort": "final", "limit": 2})["next_cursor"]
    status, _, body = site.get(site.runs_path(EXP), {"sort": "opt", "cursor": cursor})
    assert status == 400 and "another sort" in json.loads(body)["detail"]


def test_csv_streams_every_matching_run(site: Site) -> None:
    status, head, body = site.get(site.runs_path(EXP) + ".csv", {"where": "opt = sgd", "sort": "final"})
    assert status == 200 and head["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == 18 and {row["params.opt"] for row in rows} == {"sgd"}
    finals = [float(row["metrics.final"]) for row in rows if row["metrics.final"]]
    assert finals == sorted(finals) and len(finals) == 12
    status, _, body = site.get("/api/experiments/atlas-tour-1/runs.csv")  # uncapped: all 180 runs
    assert len(body.decode().strip().splitlines()) == 181


# -- a run, its files ----------------------------------------------------------------------------


def a_run(site: Site, lr: float = 0.1) -> object:
    return next(r for r in succeeded(site) if r.params["lr"] == lr)


def test_run_shows_steps_data_artifacts_and_log(site: Site) -> None:
    record = a_run(site)
    run = site.json(f"/api/experiments/{EXP}/runs/{record.run_id}")
    assert run["params"] == record.params and run["metrics"]["final"] == record.metrics["final"]
    assert run["steps"]["loss"] == [list(point) for point in record.steps["loss"]]
    assert run["data"] == {"shape": {"width": record.params["width"]}}
    assert {(a["name"], a["kind"]) for a in run["artifacts"]} == {
        ("notes.txt", "text"), ("config.json", "json"), ("dot.png", "image")}
    base = f"/api/experiments/{EXP}/runs/{record.run_id}"
    status, head, body = site.get(base + "/artifacts/dot.png")
    assert (status, body, head["content-type"]) == (200, PNG, "image/png")
    preview = site.json(base + "/artifacts/config.json", {"preview": "1"})
    assert preview["kind"] == "json" and json.loads(preview["text"]) == record.params
    tail = site.json(base + "/log", {"lines": 1})
    assert tail["lines"] == [f"lr={record.params['lr']} width={record.params['width']} final={record.metrics['final']}"]
    failed = next(r for r in site.probe_records.values() if r.status == "failed")
    run = site.json(f"/api/experiments/{EXP}/runs/{failed.run_id}")
    assert "lr too large" in run["error"] and run["log"]["size"] > 0
    assert site.get(f"/api/experiments/{EXP}/runs/{'0' * 20}")[0] == 404
    assert site.get(base + "/artifacts/missing.txt")[0] == 404


ESCAPES = [
    "/artifacts/../../../../etc/passwd",
    "/artifacts/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/artifacts/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/artifacts/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/artifacts/%2fetc%2fpasswd",
    "/artifacts//etc/passwd",
    "/artifacts/..\\..\\..\\etc\\passwd",
    "/artifacts/escape.txt",  # a symlink planted in the run's artifacts folder, pointing outside
    "/artifacts/inside/../../../../../../etc/passwd",
    "/data/..%2f..%2f..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("suffix", ESCAPES)
def test_paths_outside_file_root_are_refused(site: Site, suffix: str) -> None:
    record = a_run(site)
    folder = site.file_root / EXP / "artifacts" / record.run_id
    (folder / "escape.txt").unlink(missing_ok=True)
    (folder / "escape.txt").symlink_to("/etc/passwd")
    for prefix in (f"/api/experiments/{EXP}/runs/{record.run_id}", f"/experiments/{EXP}/runs/{record.run_id}"):
        status, _, body = site.get(prefix + suffix)
        assert status in (400, 404), (prefix + suffix, status)
        assert b"root:" not in body
    status, _, body = site.get(f"/api/experiments/{quote('..', safe='')}/runs/x/log")
    assert status in (400, 404) and b"root:" not in body


# -- plots, compare ------------------------------------------------------------------------------


def test_plot_means_and_spreads_match_the_records(site: Site) -> None:
    data = site.json(f"/api/experiments/{EXP}/plot", {"x": "width", "y": "final", "group": "lr"})
    assert set(data["groups"]) == {"0.01", "0.1"}  # lr 0.5 failed: no final
    for group, points in data["groups"].items():
        for point in points:
            values = [r.metrics["final"] for r in succeeded(site)
                      if str(r.params["lr"]) == group and r.params["width"] == point["x"]]
            assert point["n"] == len(values) == 4  # 2 replicates x 2 optimizers
            assert point["mean"] == pytest.approx(statistics.mean(values))
            assert point["spread"] == pytest.approx(statistics.stdev(values))
    histogram = site.json(f"/api/experiments/{EXP}/histogram", {"field": "final", "bins": 4})
    assert len(histogram["bins"]) == 4 and sum(b["count"] for b in histogram["bins"]) == 24
    status, _, body = site.get(f"/api/experiments/{EXP}/plot", {"x": "opt", "y": "final"})
    assert status == 400 and "numeric" in json.loads(body)["detail"]


def test_compare_lists_the_fields_that_differ(site: Site) -> None:
    a, b = [r for r in succeeded(site) if r.params["lr"] == 0.1 and r.params["width"] == 2 and r.params["opt"] == "sgd"]
    data = site.json(f"/api/experiments/{EXP}/compare", {"run": [a.run_id, b.run_id]})
    assert [r["run_id"] for r in data["runs"]] == [a.run_id, b.run_id]
    assert set(data["differing"]) == {"metrics.loss", "metrics.final"}  # only the replicate differs
    assert site.get(f"/api/experiments/{EXP}/compare", {"run": a.run_id})[0] == 400
    ten = [r.run_id for r in succeeded(site)][:10]
    assert len(site.json(f"/api/experiments/{EXP}/compare", {"run": ten})["runs"]) == 10  # up to ten
    assert site.get(f"/api/experiments/{EXP}/compare", {"run": [a.run_id] * 11})[0] == 400


# -- health, read-only, tokens, secrets --------------------------------------------------------------


def test_openapi_describes_every_endpoint(site: Site) -> None:
    spec = site.json("/api/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert {"/api/health", "/api/experiments", "/api/experiments/{experiment_id}/runs",
            "/api/experiments/{experiment_id}/plot", "/api/experiments/{experiment_id}/compare"} <= set(spec["paths"])


def test_health_is_503_while_the_database_does_not_answer(pg_server, tmp_path) -> None:
    closed = settings_for(pg_server, "metalab_test", tmp_path, port=1)  # nothing listens on port 1
    process, url = start_atlas(closed, tmp_path / "atlas.log")
    try:
        import urllib.error
        import urllib.request

        deadline = __import__("time").monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/api/health", timeout=5)
                raise AssertionError("healthy without a database")
            except urllib.error.HTTPError as error:
                assert error.code == 503
                break
            except urllib.error.URLError:
                assert __import__("time").monotonic() < deadline
    finally:
        stop(process)


def test_atlas_sessions_cannot_write(pg_server, site: Site) -> None:
    name = next(iter(site.json("/api/experiments")))["experiment_id"]
    settings = settings_for(pg_server, site.database, site.file_root)
    with psycopg.connect(settings.conninfo()) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM metalab.runs WHERE experiment_id = %s", (name,))


def test_a_token_is_needed_once_set_and_a_token_url_leaves_a_cookie(pg_server, site: Site, tmp_path) -> None:
    token = "tok-" + os.urandom(8).hex()
    process, url = start_atlas(settings_for(pg_server, site.database, site.file_root, token=token), tmp_path / "atlas.log")
    try:
        wait_healthy(url, process, token=token)
        guarded = Site(url=url, database=site.database, locator=site.locator, file_root=site.file_root, log_file=tmp_path / "atlas.log", password=site.password,
                       token=None, process=process, probe_records={})
        assert guarded.get("/api/experiments")[0] == 403
        assert guarded.get("/")[0] == 403
        assert guarded.get("/api/experiments", headers={"Authorization": "token wrong"})[0] == 403
        assert guarded.get("/api/experiments", headers={"Authorization": f"token {token}"})[0] == 200
        import http.client

        conn = http.client.HTTPConnection(url.split("//")[1], timeout=10)
        conn.request("GET", f"/experiments/{EXP}?token={token}")
        response = conn.getresponse()
        assert response.status == 303 and response.getheader("location") == f"/experiments/{EXP}"
        cookie = response.getheader("set-cookie").split(";")[0]
        assert "HttpOnly" in response.getheader("set-cookie")
        assert guarded.get(f"/experiments/{EXP}", headers={"Cookie": cookie})[0] == 200
        assert token not in "".join(guarded.seen)
    finally:
        stop(process)
    assert token not in (tmp_path / "atlas.log").read_text()


def test_atlas_refuses_to_listen_beyond_loopback_without_a_token(pg_server, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "metalab.atlas", "--host", "0.0.0.0", "--port", "1"],
                            input=json.dumps({"db_host": "127.0.0.1", "db_port": 1, "db_user": "u", "db_name": "d",
                                              "db_password": "p"}) + "\n",
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0 and "needs an access token" in result.stderr


def test_no_page_response_or_log_shows_the_password(site: Site) -> None:
    for path in ("/", f"/experiments/{EXP}", f"/experiments/{EXP}/runs", "/api/experiments", f"/api/experiments/{EXP}"):
        site.get(path)
    assert site.seen and site.password not in "".join(site.seen)
    assert site.password not in site.log_file.read_text()
