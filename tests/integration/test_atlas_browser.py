"""Atlas in a real browser: Playwright driving Debian's Chromium (installed by scripts/test.sh).

One walk through what a researcher does, with a screenshot at each step (test-screenshots/,
or $METALAB_SCREENSHOTS): find the experiment, sort and filter its runs, open a run, preview an
artifact and the log, draw a plot and check its points, compare two runs, and watch the counts
refresh by themselves while runs land.
"""

from __future__ import annotations

import statistics
from urllib.parse import parse_qs, urlparse

import pytest

import metalab
from atlas_support import PROBE, Site, browser, open_page, probe, shot  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.integration

@pytest.fixture
def page(browser, site: Site):  # type: ignore[no-untyped-def]  # noqa: F811 (pytest passes the fixture)
    yield from open_page(browser, site.url)


def cells(page, field: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(f'#runs tbody td[data-field="{field}"]').all_inner_texts()


def test_a_researcher_finds_sorts_filters_opens_plots_and_compares(page, site: Site) -> None:  # type: ignore[no-untyped-def]
    ok = [r for r in site.probe_records.values() if r.status == "success"]

    page.goto("/")
    assert page.locator("#experiments tbody tr").count() == 2
    page.fill("#search", "probe")
    page.press("#search", "Enter")
    page.wait_for_url("**/?q=probe")
    assert page.locator("#experiments tbody tr").count() == 1
    shot(page, "1-experiments")

    page.click("text=probe")
    page.wait_for_url(f"**/experiments/{PROBE.experiment_id}")
    final = page.locator('#metrics tr[data-metric="final"] td').all_inner_texts()
    assert final[2] == "24" and float(final[5]) == pytest.approx(max(r.metrics["final"] for r in ok), rel=1e-3)
    shot(page, "2-experiment")

    page.click("text=Browse runs")
    page.select_option("#sort", "metrics.final")
    page.select_option("#order", "desc")
    page.click("#apply")
    page.wait_for_load_state()
    values = [float(v) for v in cells(page, "metrics.final") if v]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(max(r.metrics["final"] for r in ok), rel=1e-3)
    page.fill("#where", "lr = 0.1")
    page.select_option("#status", "success")
    page.click("#apply")
    page.wait_for_load_state()
    assert set(cells(page, "params.lr")) == {"0.1"} and page.locator("#runs tbody tr").count() == 12
    shot(page, "3-runs-sorted-filtered")

    # compare two runs ticked in the table
    page.locator("#runs tbody input[name=run]").nth(0).check()
    page.locator("#runs tbody input[name=run]").nth(1).check()
    page.click("#compare")
    page.wait_for_url("**/compare?**")
    assert page.locator("#compare-table thead th a").count() == 2
    first, second = (site.probe_records[run_id] for run_id in parse_qs(urlparse(page.url).query)["run"])
    expected = {f"params.{k}" for k in first.params if first.params[k] != second.params[k]} | {
        f"metrics.{k}" for k in first.metrics if first.metrics[k] != second.metrics[k]}
    shown = set(page.locator("#compare-table tr.differs").evaluate_all("rows => rows.map(r => r.dataset.field)"))
    assert shown == expected and expected and "params.lr" not in shown  # both have lr = 0.1
    shot(page, "4-compare")

    # a run: its stepped metric as a chart, its artifacts, its log
    page.go_back()
    page.locator("#runs tbody tr td:nth-child(2) a").first.click()
    page.wait_for_url("**/runs/*")
    assert page.locator("#steps svg circle.point").count() == 5
    assert "final=" in page.inner_text("#log")
    shot(page, "5-run")
    page.click('#artifacts a:text-is("notes.txt")')
    assert "notes for lr=0.1" in page.inner_text("#preview")
    shot(page, "6-artifact-text")
    page.go_back()
    page.click('#artifacts a:text-is("config.json")')
    assert page.get_attribute("#preview", "data-kind") == "json" and '"width"' in page.inner_text("#preview")
    page.go_back()
    page.click('#artifacts a:text-is("dot.png")')
    assert page.evaluate("document.querySelector('#preview img').naturalWidth") == 1

    # a plot: final against width, grouped by lr; its points are the means over replicates and optimizers
    page.goto(f"/experiments/{PROBE.experiment_id}/plot")
    page.select_option("#x", "params.width")
    page.select_option("#y", "metrics.final")
    page.select_option("#group", "params.lr")
    page.click("#draw")
    page.wait_for_load_state()
    points = page.locator("#plot svg circle.point")
    assert points.count() == 6  # lr 0.01 and 0.1 (0.5 always fails) x widths 1, 2, 4
    for i in range(points.count()):
        group, x, y = (points.nth(i).get_attribute(a) for a in ("data-group", "data-x", "data-y"))
        expected = statistics.mean(r.metrics["final"] for r in ok
                                   if str(r.params["lr"]) == group and r.params["width"] == float(x))
        assert float(y) == pytest.approx(expected, rel=1e-3)
    page.select_option("#field", "metrics.final")
    page.click("#draw-histogram")
    page.wait_for_load_state()
    bars = page.locator("#histogram svg rect.bar")
    assert sum(int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())) == 24
    shot(page, "7-plots")


def test_counts_and_tables_refresh_while_runs_land(page, site: Site) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"/experiments/{PROBE.experiment_id}/runs?sort=run_id")
    before = page.locator("#runs tbody tr").count()
    assert page.inner_text('[data-count="runs"]') == "36"
    more = metalab.Experiment(name="probe", version="1", operation=probe,
                              params=metalab.grid(lr=[0.01], width=[8, 16], opt=["sgd"]), seeds=metalab.seeds(base=5, replicates=2))
    metalab.run(more, store=site.locator, progress=False)  # 4 more runs, same experiment
    page.wait_for_function("document.querySelector('[data-count=\"runs\"]').textContent === '40'", timeout=15_000)
    page.wait_for_function(f"document.querySelectorAll('#runs tbody tr').length === {min(before + 4, 50)}", timeout=15_000)
    assert not page.is_visible("#live-badge")  # every run has ended: the badge says so at once
    shot(page, "8-live-refresh")
