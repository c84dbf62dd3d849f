"""The sweep views' figures for bench/atlas.py (issue 16): curves of 1,000 runs x 1,000 steps,
and parallel coordinates, scatter and parameter importance over the 100,000-run experiment."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import metalab

CURVE_RUNS, CURVE_STEPS = 1000, 1000
CURVES_BUDGET_MS, IMPORTANCE_BUDGET_MS, PARALLEL_BUDGET_MS = 150, 300, 200


@metalab.operation
def learn(params, seeds, capture):
    """A learning curve of CURVE_STEPS steps: exponential decay to a floor set by the params."""
    rng = seeds.rng()
    floor = 0.1 * abs(math.log10(params["lr"]) + 2) + 4 / params["width"]
    for step in range(CURVE_STEPS):
        capture.metric("loss", floor + math.exp(-step * params["lr"] / 10) + 0.02 * rng.random(), step=step)


def curves_experiment() -> metalab.Experiment:
    """CURVE_RUNS runs: 10 lr x 20 width x 5 replicates."""
    return metalab.Experiment(
        name="atlas-bench-curves", version="1", operation=learn,
        params=metalab.grid(lr=[0.01 * 2**k for k in range(10)], width=[8 * (k + 1) for k in range(20)]),
        seeds=metalab.seeds(base=5, replicates=CURVE_RUNS // 200),
    )


def wait_indexed(client: Any, experiment_id: str, runs: int, timeout: float = 600) -> float:
    """Seconds until Atlas's indexer has every run (and so every series) of the experiment."""
    start = time.perf_counter()
    path = f"/api/experiments/{quote(experiment_id, safe='')}"
    while True:
        try:
            if client.json(path).get("runs") == runs:
                return time.perf_counter() - start
        except Exception:  # noqa: BLE001 -- not indexed at all yet (404): keep waiting
            pass
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{experiment_id}: not every run indexed after {timeout} s")
        time.sleep(0.5)


def _path(experiment_id: str, view: str, **params: Any) -> str:
    return f"/api/experiments/{quote(experiment_id, safe='')}/{view}?{urlencode(params, doseq=True)}"


def curves_figures(client: Any, measure: Any, project: Path, rounds: int, label: int, settle: Any = None) -> None:
    """Write the curves experiment into the same services, then (after ``settle``: a VACUUM
    (ANALYZE), as autovacuum does a minute after a sweep) time the curves endpoint."""
    exp = curves_experiment()
    start = time.perf_counter()
    metalab.run(exp, store="discover", executor=metalab.ProcessExecutor(2), progress=False)
    wrote = time.perf_counter() - start
    indexed = wait_indexed(client, exp.experiment_id, len(exp))
    settled = settle() if settle is not None else None
    print(f"curves: {len(exp):,} runs x {CURVE_STEPS:,} steps, medians over {rounds} rounds")
    print(f"  {'write them; then until Atlas has indexed every series':<{label}} {wrote:6.1f} s; {indexed:6.1f} s   (no budget)")
    if settled is not None:
        print(f"  {'VACUUM (ANALYZE) the runs and steps tables':<{label}} {settled:6.1f} s")

    def every_run(body: bytes) -> None:
        data = json.loads(body)
        assert data["runs"] == len(exp) and not data["truncated"], (data["runs"], data["truncated"])

    for title, params in (
        ("curves (API), 1,000 runs, mean per lr (ci95), faceted by width",
         {"metric": "loss", "color": "lr", "facet": "width", "aggregate": "color", "band": "ci95"}),
        ("curves (API), 1,000 runs, one line each, 400 points a line",
         {"metric": "loss", "color": "lr"}),
        ("curves (API), 1,000 runs grouped by lr, replicates aggregated (sd)",
         {"metric": "loss", "color": "lr", "aggregate": "replicates", "band": "sd"}),
    ):
        measure(client, title, _path(exp.experiment_id, "curves", limit=CURVE_RUNS, **params), rounds,
                CURVES_BUDGET_MS, every_run)


def sweep_figures(client: Any, measure: Any, experiment_id: str, runs: int, rounds: int) -> None:
    """Parameter importance, parallel coordinates and scatter over the whole experiment."""
    print(f"sweep views over all {runs:,} runs: medians over {rounds} rounds")

    def covers_all(body: bytes) -> None:
        data = json.loads(body)
        counted = data.get("runs") if "shares" in data else data.get("total")
        assert counted == runs, f"covers {counted} runs, not {runs}"

    measure(client, "importance (API), loss: share of variance per param",
            _path(experiment_id, "importance", metric="loss"), rounds, IMPORTANCE_BUDGET_MS, covers_all)
    measure(client, "parallel coordinates (API), every param and loss, all runs",
            _path(experiment_id, "parallel", metric="loss", limit=runs), rounds, PARALLEL_BUDGET_MS, covers_all)
    measure(client, "parallel coordinates (API), default sample of 10,000 runs",
            _path(experiment_id, "parallel", metric="loss"), rounds, PARALLEL_BUDGET_MS, covers_all)
    measure(client, "scatter (API), loss against lr, 10,000 runs",
            _path(experiment_id, "scatter", x="lr", y="loss", color="optimizer"), rounds, None)
