"""Atlas while runs land, and every run opening: a real Atlas over a real index (atlas_support),
the runs written by metalab.run() (in this process, so a test can hold an operation at a gate),
pages in Playwright driving Debian's Chromium, screenshots in test-screenshots/.

- a failed run shows its error and traceback at the top of its page; a run that wrote no log
  opens and says so; ``logging.info`` in an operation is in the run's log page;
- runs in progress appear as running, their step count grows on their page, and when the last
  run ends the running badge goes; at every moment in between the header's counts, the Sort
  box and the table agree;
- a running record whose heartbeat stopped shows as interrupted;
- runs are named by short labels (the params that vary, the replicate), the id on hover.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import metalab
from atlas_support import Site, atlas_over, browser, records_of  # noqa: F401 (browser: a fixture)
from atlas_support import shot as screenshot
from cluster_support import wait_until
from metalab import runner

pytestmark = pytest.mark.integration

@metalab.operation
def quiet(params, seeds, capture):
    """The README's quick start: a metric, no log at all."""
    capture.metric("score", seeds.rng().random() * params["scale"])


@metalab.operation
def noisy(params, seeds, capture):
    """Standard logging at INFO; width 3 fails."""
    logging.getLogger("atlas.live").info("INFO line from width %d", params["width"])
    if params["width"] == 3:
        raise ValueError("width 3 is not allowed")
    capture.metric("loss", 1 / params["width"])


QUIET = metalab.Experiment(name="quiet", version="1", operation=quiet, params=metalab.grid(scale=[0.1, 1.0, 10.0]),
                           seeds=metalab.seeds(base=123, replicates=2))
NOISY = metalab.Experiment(name="noisy", version="1", operation=noisy, params=metalab.grid(width=[1, 2, 3], opt=["sgd"]),
                           seeds=metalab.seeds(base=1, replicates=2))


@pytest.fixture(scope="module")
def lab(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    def write(locator: str) -> dict[str, Any]:
        assert logging.getLogger().level == logging.WARNING  # as a researcher's script leaves it
        metalab.run(QUIET, store=locator, progress=False)
        return records_of(NOISY)(locator)

    with atlas_over(pg_server, tmp_path_factory.mktemp("atlas-live"), write) as found:
        yield found


@pytest.fixture
def context(browser: Any, lab: Site) -> Iterator[Any]:  # noqa: F811 (pytest passes the fixture)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=lab.url)
    errors: list[str] = []
    context.on("page", lambda page: (page.on("pageerror", lambda error: errors.append(str(error))),
                                     page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)))
    yield context
    context.close()
    assert errors == []  # no script error on any page


def shot(page: Any, name: str) -> None:
    screenshot(page, f"live-{name}")


def api(lab: Site, path: str, params: Any = None) -> Any:
    code, _, body = lab.get(path, params)
    return json.loads(body) if code == 200 else None


# -- every run opens -----------------------------------------------------------------------------


def test_a_run_that_wrote_no_log_opens_and_says_so(lab: Site, context: Any) -> None:
    spec = next(iter(QUIET.runs()))
    run = lab.json(f"/api/experiments/{QUIET.experiment_id}/runs/{spec.run_id}")
    assert (run["status"], run["log"], run["label"]) == ("success", None, "scale=0.1 #0")
    assert lab.get(f"/api/experiments/{QUIET.experiment_id}/runs/{spec.run_id}/log")[0] == 404  # the log itself: none
    page = context.new_page()
    response = page.goto(f"/experiments/{QUIET.experiment_id}/runs/{spec.run_id}")
    assert response.status == 200
    assert page.inner_text("#no-log") == "this run wrote no log"
    assert page.inner_text("#run-label") == "scale=0.1 #0" and spec.run_id in page.inner_text("main")
    assert page.title().startswith("scale=0.1 #0 · quiet")
    shot(page, "1-silent-run")


def test_a_failed_run_shows_its_error_and_traceback_at_the_top_and_its_info_log(lab: Site, context: Any) -> None:
    failed = next(r for r in lab.probe_records.values() if r.status == "failed")
    page = context.new_page()
    page.goto(f"/experiments/{NOISY.experiment_id}/runs/{failed.run_id}")
    assert page.inner_text("#run-status") == "failed"
    assert page.inner_text("#error-headline") == "ValueError: width 3 is not allowed"
    trace = page.inner_text("#error-trace")
    assert trace.startswith("Traceback (most recent call last):") and 'raise ValueError("width 3 is not allowed")' in trace
    failure, params = page.locator("#failure").bounding_box(), page.locator("#run-params").bounding_box()
    assert failure["y"] < params["y"] and failure["y"] < 300  # first thing under the title, in the first screen
    # logging.info() inside the operation landed in the run's log (the root logger stayed at WARNING)
    assert "INFO atlas.live: INFO line from width 3" in page.inner_text("#log")
    assert logging.getLogger().level == logging.WARNING
    shot(page, "2-failed-run")


def test_runs_are_named_by_what_varies_with_the_id_on_hover(lab: Site, context: Any) -> None:
    page = context.new_page()
    page.goto(f"/experiments/{NOISY.experiment_id}/runs?sort=run_id")
    links = page.locator("#runs tbody a.run-label")
    labels = links.all_inner_texts()
    assert sorted(labels) == sorted(f"width={w} #{r}" for w in (1, 2, 3) for r in (0, 1))  # opt has one value
    ids = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
    assert links.evaluate_all("links => links.map(a => a.title)") == ids
    assert all(href.endswith(i) for href, i in zip(links.evaluate_all("links => links.map(a => a.href)"), ids))
    page.locator("#runs tbody input[name=run]").nth(0).check()
    page.locator("#runs tbody input[name=run]").nth(1).check()
    page.click("#compare")
    page.wait_for_url("**/compare?**")
    heads = page.locator("#compare-table thead a.run-label")
    assert heads.all_inner_texts() == labels[:2] and heads.evaluate_all("a => a.map(x => x.title)") == ids[:2]
    shot(page, "3-labels-compare")


# -- runs in progress, the counts, the Sort box and the badge while runs land ------------------------

GATE = threading.Event()


@metalab.operation
def slow(params, seeds, capture):
    GATE.wait(60)  # held until the test has the runs page open: no metric exists before
    for step in range(params["steps"]):
        capture.metric("loss", params["lr"] / (step + 1), step=step)
        time.sleep(0.25)


LANDING = metalab.Experiment(name="landing", version="1", operation=slow,
                             params=metalab.manual([{"lr": 0.3, "steps": 40}, {"lr": 0.2, "steps": 8},
                                                    {"lr": 0.1, "steps": 8}]))

SNAPSHOT = """() => {
  const n = name => Number(document.querySelector(`[data-count="${name}"]`).textContent);
  const rows = [...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => ({
    id: r.dataset.run, status: r.dataset.status, loss: r.querySelector('td[data-field="metrics.loss"]')?.textContent ?? null}));
  return {runs: n('runs'), succeeded: n('succeeded'), failed: n('failed'), running: n('running'),
          interrupted: n('interrupted'), badge: !document.getElementById('live-badge').classList.contains('hidden'),
          sort: document.getElementById('sort').value, order: document.getElementById('order').value,
          tableSort: document.getElementById('runs').dataset.sort, tableOrder: document.getElementById('runs').dataset.order,
          rows};
}"""


def agree(snap: dict[str, Any]) -> None:
    """What one look at the runs page must show: counts, Sort box and table from one moment."""
    statuses = [row["status"] for row in snap["rows"]]
    assert snap["runs"] == len(snap["rows"]), snap
    assert (snap["succeeded"], snap["failed"], snap["running"], snap["interrupted"]) == (
        statuses.count("success"), statuses.count("failed"), statuses.count("running"), statuses.count("interrupted")), snap
    assert (snap["sort"], snap["order"]) == (snap["tableSort"], snap["tableOrder"]), snap
    if snap["tableSort"] == "run_id":
        ids = [row["id"] for row in snap["rows"]]
        assert ids == sorted(ids), snap
    if snap["running"]:
        assert snap["badge"], snap


def test_runs_in_progress_appear_grow_and_end_and_the_page_always_agrees(lab: Site, context: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.5)
    GATE.clear()
    path = f"/api/experiments/{LANDING.experiment_id}"
    sweep = threading.Thread(target=metalab.run, args=(LANDING,), kwargs={"store": lab.locator, "progress": False})
    sweep.start()
    try:
        first = next(iter(LANDING.runs())).run_id
        # the first run has started (its provisional line is in the index) and recorded nothing yet
        wait_until(lambda: (api(lab, path) or {}).get("running") == 1, 20, "the first run to show as running")
        runs_page = context.new_page()
        runs_page.goto(f"/experiments/{LANDING.experiment_id}/runs")
        start = runs_page.evaluate(SNAPSHOT)
        agree(start)
        assert start["sort"] == "run_id" and start["badge"]  # no metric yet: the default sort is the run id
        assert [row["status"] for row in start["rows"]] == ["running"]
        run_page = context.new_page()
        run_page.goto(f"/experiments/{LANDING.experiment_id}/runs/{first}")
        assert run_page.inner_text("#run-status") == "running" and run_page.inner_text("#no-log") == "no log yet"
        shot(run_page, "4-run-in-progress")
        GATE.set()
        snaps, steps_seen, run_states = [], [], []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            snap = runs_page.evaluate(SNAPSHOT)
            agree(snap)
            snaps.append(snap)
            state = run_page.inner_text("#run-status")
            run_states.append(state)
            if state == "running":
                steps_seen.append(int(run_page.inner_text("#steps-so-far")))
            if not sweep.is_alive() and snap["succeeded"] == 3 and not snap["badge"] and state == "success":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the page did not settle: {snaps[-1]} / {run_states[-1]}")
    finally:
        GATE.set()
        sweep.join(60)
    shot(runs_page, "5-landing-done")
    # the run showed as running while its steps grew, then ended (and its page said so by itself)
    grown = sorted(set(steps_seen))
    assert steps_seen == sorted(steps_seen) and len([s for s in grown if s > 0]) >= 2, steps_seen
    assert run_states[-1] == "success" and "running" in run_states
    assert run_page.locator("#steps svg circle.point").count() == 40
    # the table showed runs in progress, and at the end none: every run succeeded, the badge is gone
    assert any(row["status"] == "running" for snap in snaps for row in snap["rows"])
    assert (snaps[-1]["runs"], snaps[-1]["succeeded"], snaps[-1]["running"]) == (3, 3, 0)
    assert snaps[-1]["sort"] == "run_id"  # the sort the page applied, though loss now exists
    final = lab.json(path)
    assert (final["active"], final["running"], final["succeeded"]) == (False, 0, 3)
    # opened afresh, the page applies (and says) the default sort it now has: the first numeric metric
    runs_page.goto(f"/experiments/{LANDING.experiment_id}/runs")
    snap = runs_page.evaluate(SNAPSHOT)
    agree(snap)
    losses = [float(row["loss"]) for row in snap["rows"]]
    assert snap["sort"] == "metrics.loss" and losses == sorted(losses)


@metalab.operation
def brief(params, seeds, capture):
    time.sleep(0.25)  # 10 s in all: the page refreshes (every 4 s) while they land
    capture.metric("score", params["i"])
    if params["i"] % 7 == 3:
        raise RuntimeError("every seventh fails")


BURST = metalab.Experiment(name="burst", version="1", operation=brief, params=metalab.grid(i=list(range(40))))


def test_counts_and_table_agree_at_every_look_while_quick_runs_land(lab: Site, context: Any) -> None:
    sweep = threading.Thread(target=metalab.run, args=(BURST,), kwargs={"store": lab.locator, "progress": False})
    sweep.start()
    try:
        wait_until(lambda: (api(lab, f"/api/experiments/{BURST.experiment_id}") or {}).get("runs"), 20, "a first run")
        page = context.new_page()
        page.goto(f"/experiments/{BURST.experiment_id}/runs?sort=run_id")
        looks, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = page.evaluate(SNAPSHOT)
            agree(snap)
            looks.append(snap["runs"])
            if not sweep.is_alive() and snap["runs"] == 40 and not snap["badge"]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the page did not reach 40 runs: {looks[-5:]}")
    finally:
        sweep.join(60)
    assert len(set(looks)) >= 3  # it was looked at while the counts moved
    assert (snap["succeeded"], snap["failed"]) == (34, 6)


# -- a run whose process was killed ----------------------------------------------------------------


def test_a_running_record_without_a_recent_heartbeat_shows_as_interrupted(lab: Site) -> None:
    folder = lab.file_root / "killed-1"
    (folder / "runs").mkdir(parents=True)
    (folder / "experiment.json").write_text(json.dumps({
        "experiment_id": "killed-1", "name": "killed", "version": "1", "runs": 2,
        "params": {"kind": "grid", "axes": {"x": [1, 2]}}, "seeds": {"base": 0, "replicates": 1}}))
    now = time.time()

    def line(run_id: str, x: int, status: str, started: float, beat: float | None) -> str:
        data = {"run_id": run_id, "status": status, "params": {"x": x}, "seed": 0, "replicate": 0,
                "metrics": {"loss": 1.0}, "steps": {"loss": [[0, 1.0]]}, "started_at": started,
                "duration": (beat or now) - started}
        if beat is not None:
            data["heartbeat"] = beat
        return json.dumps(data) + "\n"

    records = folder / "runs" / "node-1.jsonl"
    # a: its process was killed five minutes ago; b: beating a second ago
    records.write_text(line("a" * 20, 1, "running", now - 300, now - 290) + line("b" * 20, 2, "running", now - 5, now - 1))
    path = "/api/experiments/killed-1"
    e = wait_until(lambda: (found := api(lab, path)) and found["runs"] == 2 and found, 20, "both runs")
    assert (e["running"], e["interrupted"], e["active"]) == (1, 1, True)
    statuses = {r["run_id"][0]: r["status"] for r in lab.json(f"{path}/runs")["runs"]}
    assert statuses == {"a": "interrupted", "b": "running"}
    assert [r["run_id"][0] for r in lab.json(f"{path}/runs", {"status": "interrupted"})["runs"]] == ["a"]
    assert [r["run_id"][0] for r in lab.json(f"{path}/runs", {"where": "status = running"})["runs"]] == ["b"]
    assert lab.json(f"{path}/runs/{'a' * 20}")["status"] == "interrupted"
    # b ends; a stays interrupted (until it runs again), and is no finished run for load_results
    with records.open("a") as handle:
        handle.write(line("b" * 20, 2, "success", now - 5, None))
    e = wait_until(lambda: (found := api(lab, path)) and found["succeeded"] == 1 and found, 20, "b's success")
    assert (e["running"], e["interrupted"], e["runs"]) == (0, 1, 2)
    assert [r.run_id[0] for r in metalab.load_results(str(lab.file_root), "killed-1")] == ["b"]
