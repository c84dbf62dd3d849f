"""The sweep views' numbers: curves reduced and aggregated, and each parameter's share of the variance."""

from __future__ import annotations

import itertools
import random
import statistics

import numpy as np
import pytest

from metalab.atlas.sweeps import RunCurve, curves, importance, t_quantile


def plain(series):
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in series.items()}


def run(run_id, values, group="g", steps=None, **kw):
    steps = np.arange(len(values), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    return RunCurve(run_id=run_id, steps=steps, values=np.asarray(values, dtype=float), group=group, **kw)


def test_few_steps_are_kept_exactly_and_many_are_bucketed_by_run_then_across_runs():
    (single,) = map(plain, curves([run("a", [3, 1, 2])], points=400, aggregate=False))
    assert (single["x"], single["y"]) == ([0, 1, 2], [3, 1, 2])
    a, b = run("a", list(range(10))), run("b", [10.0] * 10)
    (mean,) = map(plain, curves([a, b], points=5, aggregate=True, band="minmax"))
    assert mean["x"] == [0.5, 2.5, 4.5, 6.5, 8.5]  # two steps a bucket
    assert mean["lo"] == [0.5, 2.5, 4.5, 6.5, 8.5] and mean["hi"] == [10] * 5  # per run first, then across
    assert mean["y"] == [(0.5 + 10) / 2, (2.5 + 10) / 2, (4.5 + 10) / 2, (6.5 + 10) / 2, (8.5 + 10) / 2]


def test_bands_are_the_spread_between_runs():
    values = [[1.0, 2.0], [3.0, 2.0], [5.0, 2.0], [7.0, 8.0]]
    runs = [run(str(i), v) for i, v in enumerate(values)]
    sd = plain(curves(runs, points=100, aggregate=True, band="sd")[0])
    column = [v[0] for v in values]
    assert sd["y"][0] == statistics.fmean(column) and sd["hi"][0] - sd["y"][0] == pytest.approx(statistics.stdev(column))
    ci = plain(curves(runs, points=100, aggregate=True, band="ci95")[0])
    assert ci["hi"][1] - ci["y"][1] == pytest.approx(3.182 * statistics.stdev(v[1] for v in values) / 2)
    assert sd["n"] == [4, 4]


def test_groups_missing_and_non_finite_values_and_ragged_steps():
    runs = [run("a", [1, np.nan, 3], group=1), run("b", [5, 6, np.inf], group=1), run("c", [0, 0], group=2),
            run("d", [np.nan])]
    one, two = map(plain, curves(runs, points=100, aggregate=True))
    assert one["run_ids"] == ["a", "b"] and one["n"] == [2, 1, 1] and one["y"] == [3, 6, 3]
    assert one["lo"][1] == one["hi"][1] == 6  # one run there: no spread
    assert two["run_ids"] == ["c"] and two["y"] == [0, 0]
    assert curves([run("d", [np.nan])], points=10, aggregate=False) == []
    far = plain(curves([run("a", [1, 2], steps=[0, 1000])], points=10, aggregate=False)[0])
    assert far["x"] == [0, 1000] and far["y"] == [1, 2]


def test_t_quantiles():
    assert t_quantile(1) == 12.706 and t_quantile(4) == 2.776 and t_quantile(30) == 2.042
    assert t_quantile(60) == pytest.approx(2.000, abs=0.003) and t_quantile(10_000) == pytest.approx(1.96, abs=0.001)


def _stats(values):
    return (len(values), statistics.fmean(values), statistics.pvariance(values))


def test_importance_of_a_balanced_grid_is_its_anova():
    rng = random.Random(1)
    rows = []
    for a, b in itertools.product([0, 1, 2], [0, 1]):
        for _ in range(4):
            rows.append((a, b, 3 * a + 0.5 * b + (a * b) + rng.gauss(0, 0.3)))
    total = _stats([y for *_, y in rows])
    groups = {"a": [_stats([y for a, _, y in rows if a == v]) for v in (0, 1, 2)],
              "b": [_stats([y for _, b, y in rows if b == v]) for v in (0, 1)]}
    cells = [_stats([y for a, b, y in rows if (a, b) == key]) for key in itertools.product([0, 1, 2], [0, 1])]
    shares = importance(groups, cells, total)
    by = {s.source: s.share for s in shares}
    assert [s.source for s in shares][0] == "a" and sum(by.values()) == pytest.approx(1.0)
    grand = total[1]
    ss = total[0] * total[2]
    assert by["a"] == pytest.approx(sum(n * (m - grand) ** 2 for n, m, _ in groups["a"]) / ss)
    assert by["replicates"] == pytest.approx(sum(n * v for n, _, v in cells) / ss)
    assert importance({"a": []}, [], (1, 0.0, 0.0)) == [] and importance({}, [], (5, 2.0, 0.0)) == []
