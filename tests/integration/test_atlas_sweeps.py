"""Atlas's sweep views over a real index: curves of many runs (overlaid, coloured, faceted,
aggregated with a band), parallel coordinates, scatter and which parameters matter, each
checked against the same numbers computed here from the runs' own records."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import metalab
from atlas_support import Site, atlas_over, browser, open_page, records_of, shot  # noqa: F401 (browser: a fixture)
from metalab.atlas.sweep_api import floats

pytestmark = pytest.mark.integration

STEPS = 20


@metalab.operation
def learn(params, seeds, capture):
    """A curve per run: its scale from lr and width, its noise from the replicate's seed."""
    rng = seeds.rng()
    scale = params["lr"] * params["width"] * (2.0 if params["opt"] == "sgd" else 1.0)
    for step in range(STEPS):
        capture.metric("loss", scale * math.exp(-step / 8) + rng.uniform(0, 0.5), step=step)
    capture.metric("final", scale + rng.uniform(0, 0.5))


SWEEP = metalab.Experiment(name="sweepviews", version="1", operation=learn,
                           params=metalab.grid(lr=[0.1, 0.3, 1.0], width=[8, 32], opt=["sgd", "adam"]),
                           seeds=metalab.seeds(base=3, replicates=4))
EXPERIMENT = "sweepviews-1"


@pytest.fixture(scope="module")
def sweep_site(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with atlas_over(pg_server, tmp_path_factory.mktemp("atlas-sweeps"), records_of(SWEEP)) as found:
        yield found


def api(site: Site, view: str, expect: int = 200, **params: Any) -> Any:
    return site.json(f"/api/experiments/{EXPERIMENT}/{view}", params, status=expect)


def combination(record) -> tuple:
    return (record.params["lr"], record.params["width"], record.params["opt"])


def by_combination(site: Site) -> dict[tuple, list]:
    groups: dict[tuple, list] = defaultdict(list)
    for record in site.probe_records.values():
        groups[combination(record)].append(record)
    return groups


def test_every_run_s_steps_are_in_the_index(sweep_site):
    with psycopg.connect(sweep_site.locator.split("?")[0], autocommit=True) as conn:
        rows = conn.execute("SELECT run_id, steps, vals FROM metalab.steps WHERE experiment_id = %s AND name = 'loss'",
                            (EXPERIMENT,)).fetchall()
    assert len(rows) == len(sweep_site.probe_records) == 48
    for run_id, steps, values in rows:
        assert steps is None  # 0, 1, ..., 19: nothing to store
        assert [[s, v] for s, v in enumerate(floats(values).tolist())] == sweep_site.probe_records[run_id].steps["loss"]


def test_curves_one_line_per_run_coloured_and_faceted(sweep_site):
    data = api(sweep_site, "curves", metric="loss", color="lr", facet="opt")
    assert data["runs"] == 48 and len(data["series"]) == 48 and not data["truncated"]
    for series in data["series"]:
        record = sweep_site.probe_records[series["run_id"]]
        assert series["x"] == list(range(STEPS)) and series["y"] == [v for _, v in record.steps["loss"]]
        assert (series["color"], series["facet"]) == (record.params["lr"], record.params["opt"])
        assert series["label"] == (f"lr={record.params['lr']:g} opt={record.params['opt']} "
                                   f"width={record.params['width']} #{record.replicate}")


def test_curves_aggregated_over_replicates_have_the_replicates_mean_and_spread(sweep_site):
    data = api(sweep_site, "curves", metric="loss", aggregate="replicates", band="sd")
    groups = by_combination(sweep_site)
    assert len(data["series"]) == len(groups) == 12
    for series in data["series"]:
        (key,) = {combination(sweep_site.probe_records[run_id]) for run_id in series["run_ids"]}
        runs = groups[key]
        assert sorted(series["run_ids"]) == sorted(r.run_id for r in runs) and series["n"] == [4] * STEPS
        for step in range(STEPS):
            values = [r.steps["loss"][step][1] for r in runs]
            mean, sd = statistics.fmean(values), statistics.stdev(values)
            assert series["y"][step] == pytest.approx(mean)
            assert (series["lo"][step], series["hi"][step]) == (pytest.approx(mean - sd), pytest.approx(mean + sd))
    ci = api(sweep_site, "curves", metric="loss", aggregate="replicates", band="ci95")["series"][0]
    runs = groups[combination(sweep_site.probe_records[ci["run_ids"][0]])]
    values = [r.steps["loss"][0][1] for r in runs]
    half = 3.182 * statistics.stdev(values) / 2  # Student's t, 3 degrees of freedom
    assert ci["hi"][0] - ci["y"][0] == pytest.approx(half, rel=1e-3)


def test_curves_aggregated_by_colour_and_reduced_to_the_points_asked(sweep_site):
    data = api(sweep_site, "curves", metric="loss", color="opt", aggregate="color", band="minmax", points=5,
               where="width = 32")
    assert {s["color"] for s in data["series"]} == {"sgd", "adam"} and data["runs"] == 24
    for series in data["series"]:
        runs = [r for r in sweep_site.probe_records.values() if r.params["opt"] == series["color"] and r.params["width"] == 32]
        assert len(series["x"]) == 5 and series["x"] == [1.5, 5.5, 9.5, 13.5, 17.5]  # 4 steps a bucket
        per_run_first_bucket = [statistics.fmean(v for _, v in r.steps["loss"][:4]) for r in runs]
        assert series["y"][0] == pytest.approx(statistics.fmean(per_run_first_bucket))
        assert (series["lo"][0], series["hi"][0]) == (pytest.approx(min(per_run_first_bucket)), pytest.approx(max(per_run_first_bucket)))


def test_curves_of_chosen_runs_and_bad_requests(sweep_site):
    chosen = sorted(sweep_site.probe_records)[:3]
    data = api(sweep_site, "curves", metric="loss", run=chosen)
    assert sorted(s["run_id"] for s in data["series"]) == chosen
    for params, message in (({"metric": "nope"}, "metric must name a metric of this experiment (final, loss), not 'nope'"),
                            ({"metric": "loss", "aggregate": "all"}, "aggregate is one of none, replicates, color, not 'all'"),
                            ({"metric": "loss", "color": "final"}, "color takes a parameter; metrics.final is a metric")):
        assert api(sweep_site, "curves", expect=400, **params) == {"detail": message}


def test_importance_matches_an_anova_computed_here(sweep_site):
    data = api(sweep_site, "importance", metric="final")
    records = list(sweep_site.probe_records.values())
    finals = [r.metrics["final"] for r in records]
    grand = statistics.fmean(finals)
    total = sum((y - grand) ** 2 for y in finals)
    expected = {}
    for name in ("lr", "width", "opt"):
        groups = defaultdict(list)
        for r in records:
            groups[r.params[name]].append(r.metrics["final"])
        expected[name] = sum(len(v) * (statistics.fmean(v) - grand) ** 2 for v in groups.values()) / total
    cells = by_combination(sweep_site)
    expected["replicates"] = sum(sum((r.metrics["final"] - statistics.fmean(x.metrics["final"] for x in runs)) ** 2
                                     for r in runs) for runs in cells.values()) / total
    expected["interactions"] = 1 - sum(expected.values())
    shares = {s["source"]: s["share"] for s in data["shares"]}
    assert shares == pytest.approx(expected) and data["runs"] == 48
    ranked = [s["source"] for s in data["shares"]]
    assert ranked == sorted(expected, key=lambda k: -expected[k])


def test_parallel_and_scatter_columns_are_the_runs_values(sweep_site):
    data = api(sweep_site, "parallel", metric="final")
    assert (data["total"], data["runs"]) == (48, 48)
    names = [c["name"] for c in data["columns"]]
    assert names == ["lr", "opt", "width", "final"]
    for i, run_id in enumerate(data["run_ids"]):
        record = sweep_site.probe_records[run_id]
        assert [c["values"][i] for c in data["columns"]] == [record.params["lr"], record.params["opt"],
                                                             record.params["width"], record.metrics["final"]]
    brushed = api(sweep_site, "parallel", metric="final", where="lr >= 0.2 and lr <= 1.0")
    assert brushed["total"] == 32
    scatter = api(sweep_site, "scatter", x="lr", y="final", color="opt")
    assert [c["name"] for c in scatter["columns"]] == ["lr", "final", "opt", "width"]
    assert scatter["columns"][1]["values"] == [sweep_site.probe_records[r].metrics["final"] for r in scatter["run_ids"]]


# -- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def page(browser, sweep_site):  # type: ignore[no-untyped-def]  # noqa: F811 (pytest passes the fixture)
    yield from open_page(browser, sweep_site.url)


def drawn(page) -> Any:  # type: ignore[no-untyped-def]
    """What plotly drew on #chart: each trace's meta, x and y (once the chart says it is drawn)."""
    page.wait_for_selector('#chart[data-drawn="1"]', timeout=30_000)
    return page.evaluate("Array.from(document.getElementById('chart').data, t => ({meta: t.meta || null, x: t.x, "
                         "y: t.y, name: t.name, type: t.type, custom: t.customdata ? t.customdata[0] : null}))")


def test_curves_overlaid_grouped_and_banded_in_the_browser(page, sweep_site):  # type: ignore[no-untyped-def]
    page.goto(f"/experiments/{EXPERIMENT}/curves?metric=loss&color=lr")
    lines = [t for t in drawn(page) if not (t["meta"] or {}).get("band")]
    assert len(lines) == 48 and page.inner_text("#view-note").startswith("48 runs, 48 series")
    shot(page, "9-curves-overlaid")

    page.select_option("#aggregate", "replicates")
    page.select_option("#facet", "opt")
    page.click("#draw")
    page.wait_for_url("**aggregate=replicates**")
    traces = drawn(page)
    means = [t for t in traces if not (t["meta"] or {}).get("band")]
    assert len(means) == 12
    groups = by_combination(sweep_site)
    for mean in means:
        series = mean["meta"]["series"]
        lo = next(t for t in traces if t["meta"] == {"band": "lo", "series": series})
        hi = next(t for t in traces if t["meta"] == {"band": "hi", "series": series})
        (key,) = {combination(sweep_site.probe_records[r]) for r in mean["custom"]["run_ids"]}
        for step in (0, 7, 19):  # the band's half-width is the replicates' standard deviation
            spread = statistics.stdev(r.steps["loss"][step][1] for r in groups[key])
            assert (hi["y"][step] - lo["y"][step]) / 2 == pytest.approx(spread)
    assert page.locator("#chart .subplot").count() >= 2  # faceted by opt
    shot(page, "10-curves-aggregated-faceted")

    page.check("#logy")
    page.wait_for_function("document.getElementById('chart').layout.yaxis.type === 'log'")
    page.fill("#smoothing", "0.6")
    page.dispatch_event("#smoothing", "input")
    smoothed = drawn(page)
    assert smoothed[2]["y"][5] != traces[2]["y"][5]  # the same series, now smoothed

    # hover shows a run's values; a click opens it
    page.goto(f"/experiments/{EXPERIMENT}/curves?metric=loss")
    lines = drawn(page)
    index = max(range(len(lines)), key=lambda i: lines[i]["y"][10])  # the top line: no other one is as near
    target = lines[index]
    x, y = page.evaluate("""(i) => { const gd = document.getElementById('chart'), xa = gd._fullLayout.xaxis,
        ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect(), t = gd.data[i];
        return [box.left + xa._offset + xa.d2p(t.x[10]), box.top + ya._offset + ya.d2p(t.y[10])]; }""", index)
    page.mouse.move(x, y)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    assert "step 10" in page.text_content(".hoverlayer")
    page.mouse.click(x, y)
    page.wait_for_url("**/runs/*", timeout=10_000)
    assert page.url.endswith(target["custom"]["run_id"])


def test_parallel_coordinates_brushing_filters_the_table(page, sweep_site):  # type: ignore[no-untyped-def]
    page.goto(f"/experiments/{EXPERIMENT}/parallel?metric=metrics.final")
    page.wait_for_selector('#chart[data-drawn="1"]', timeout=30_000)
    page.wait_for_function("document.getElementById('chart').getAttribute('data-brushed') === '48'")
    assert page.locator("#brushed tbody tr").count() == 48
    # brush lr to [0.2, 1.0] and opt to sgd, as dragging along those axes does
    page.evaluate("Plotly.restyle('chart', {'dimensions[0].constraintrange': [[0.2, 1.0]]})")
    page.wait_for_function("document.getElementById('chart').getAttribute('data-brushed') === '32'")
    page.evaluate("Plotly.restyle('chart', {'dimensions[1].constraintrange': [[0.5, 1.5]]})")  # levels: adam=0, sgd=1
    page.wait_for_function("document.getElementById('chart').getAttribute('data-brushed') === '16'")
    shown = page.locator("#brushed tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
    expected = {r.run_id for r in sweep_site.probe_records.values() if r.params["lr"] >= 0.2 and r.params["opt"] == "sgd"}
    assert set(shown) == expected
    assert "lr in" not in page.inner_text("#brushed-filter") and "opt in ('sgd')" in page.inner_text("#brushed-filter")
    shot(page, "11-parallel-brushed")
    page.click("#brushed-link")
    page.wait_for_url("**/runs?**")
    assert page.locator("#runs tbody tr").count() == 16


def test_scatter_importance_and_compare_in_the_browser(page, sweep_site):  # type: ignore[no-untyped-def]
    page.goto(f"/experiments/{EXPERIMENT}/scatter?x=params.lr&y=metrics.final&color=params.opt")
    (points,) = drawn(page)
    assert len(points["x"]) == 48
    shot(page, "12-scatter")

    page.goto(f"/experiments/{EXPERIMENT}/importance?metric=metrics.final")
    ranked = page.locator("#importance tbody tr").evaluate_all("rows => rows.map(r => r.dataset.source)")
    expected = [s["source"] for s in api(sweep_site, "importance", metric="final")["shares"]]
    assert ranked == expected and len(ranked) == 5
    (bars,) = drawn(page)
    assert list(reversed(bars["y"])) == expected
    shot(page, "13-importance")

    chosen = sorted(sweep_site.probe_records)[:3]
    page.goto(f"/experiments/{EXPERIMENT}/compare?" + "&".join(f"run={r}" for r in chosen))
    lines = drawn(page)
    assert sorted(t["custom"]["run_id"] for t in lines) == chosen
    shot(page, "14-compare-curves")
