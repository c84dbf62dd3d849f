"""The numbers behind Atlas's sweep views, as pure functions (numpy): curves of many runs reduced
to what a chart can show and aggregated over replicates, and each parameter's share of a
metric's variance.

Curves: a run's steps fall into at most ``points`` buckets over the steps of every run shown
(one bucket per step when they are fewer), and each run has its mean per bucket; an aggregate
is then, per bucket, the mean over its runs with a band (standard deviation, a 95% confidence
interval with Student's t, or min-max). Averaging within a run first keeps the band the spread
*between* runs, whatever the bucket width.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BANDS", "RunCurve", "Share", "curves", "importance", "t_quantile"]

BANDS = ("sd", "ci95", "minmax")
# Student's t, 97.5% quantile, for 1..30 degrees of freedom; beyond, 1.96 + 2.5/df is within 0.003.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class RunCurve:
    """One run's series of one metric, and what it is grouped by."""

    run_id: str
    steps: np.ndarray
    values: np.ndarray
    group: Hashable  # runs with equal groups are aggregated together
    color: Any = None
    facet: Any = None
    label: str = ""


@dataclass(frozen=True)
class Share:
    """A source of a metric's variance and its share of the total (0..1)."""

    source: str  # a parameter's name, "interactions" or "replicates"
    share: float
    groups: int  # how many distinct values (cells for "replicates")


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.5 / df


def curves(runs: Sequence[RunCurve], *, points: int, aggregate: bool, band: str = "sd") -> list[dict[str, Any]]:
    """One series per run (``aggregate`` False) or per group: ``x``, ``y`` and, aggregated, ``lo``,
    ``hi`` and ``n`` (runs per point), as numpy arrays. Non-finite values are left out."""
    runs = [run for run in runs if len(run.steps)]
    if not runs:
        return []
    shared = _shared_steps(runs)
    means, xs = _by_columns(runs, shared, points) if shared is not None else _by_bincount(runs, points)
    has_values = ~np.isnan(means).all(axis=1)
    runs = [run for run, keep in zip(runs, has_values) if keep]
    means, xs = means[has_values], xs[has_values]
    if not runs:
        return []
    if not aggregate:
        return [_single(run, xs[i], means[i]) for i, run in enumerate(runs)]
    return _aggregates(runs, xs, means, band)


def _buckets(lo: float, hi: float, points: int) -> tuple[float, int]:
    """Bucket width (a whole number of steps) and count covering ``lo``..``hi`` in ``points``."""
    width = max(1.0, math.ceil((hi - lo + 1) / points))
    return width, int((hi - lo) // width) + 1


def _shared_steps(runs: Sequence[RunCurve]) -> np.ndarray | None:
    """The steps every run has, when they are the same increasing finite steps (the usual case)."""
    first = runs[0].steps
    if not (np.isfinite(first).all() and (len(first) < 2 or (np.diff(first) > 0).all())):
        return None
    return first if all(run.steps is first or np.array_equal(run.steps, first) for run in runs) else None


def _by_columns(runs: Sequence[RunCurve], steps: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run and bucket, the mean value and step, for runs sharing ``steps``: one matrix,
    columns summed bucket by bucket (no per-value bucket arithmetic)."""
    values = np.vstack([run.values for run in runs])
    finite = np.isfinite(values)
    width, _ = _buckets(float(steps[0]), float(steps[-1]), points)
    bucket = ((steps - steps[0]) // width).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(bucket) != 0])
    counts = np.add.reduceat(finite, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1) / counts
        xs = np.add.reduceat(np.where(finite, steps, 0.0), starts, axis=1) / counts
    return means, xs


def _by_bincount(runs: Sequence[RunCurve], points: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run and bucket, the mean value and step (NaN where the run has none), whatever each
    run's steps: every value's bucket, then sums per (run, bucket)."""
    masks = [np.isfinite(run.values) & np.isfinite(run.steps) for run in runs]
    steps = [run.steps[mask] for run, mask in zip(runs, masks)]
    values = [run.values[mask] for run, mask in zip(runs, masks)]
    present = [s for s in steps if len(s)]
    lo = min((float(s.min()) for s in present), default=0.0)
    width, buckets = _buckets(lo, max((float(s.max()) for s in present), default=0.0), points)
    lengths = np.fromiter((len(s) for s in steps), dtype=np.int64, count=len(steps))
    run_index = np.repeat(np.arange(len(steps)), lengths)
    all_steps = np.concatenate(steps)
    key = run_index * buckets + ((all_steps - lo) // width).astype(np.int64)
    size = len(steps) * buckets
    counts = np.bincount(key, minlength=size).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(key, weights=np.concatenate(values), minlength=size) / counts
        xs = np.bincount(key, weights=all_steps, minlength=size) / counts
    return means.reshape(len(steps), buckets), xs.reshape(len(steps), buckets)


def _single(run: RunCurve, xs: np.ndarray, means: np.ndarray) -> dict[str, Any]:
    have = ~np.isnan(means)
    return {"run_id": run.run_id, "label": run.label, "color": run.color, "facet": run.facet, "runs": 1,
            "x": xs[have], "y": means[have]}


def _aggregates(runs: list[RunCurve], xs: np.ndarray, means: np.ndarray, band: str) -> list[dict[str, Any]]:
    """Every group at once: rows sorted by group, then sums over each group's rows (reduceat)."""
    index: dict[Hashable, int] = {}
    group_of = np.fromiter((index.setdefault(run.group, len(index)) for run in runs), dtype=np.int64, count=len(runs))
    order = np.argsort(group_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])
    m, x = means[order], xs[order]
    have = ~np.isnan(m)
    n = np.add.reduceat(have, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduceat(np.where(have, m, 0.0), starts, axis=0) / n
        step = np.add.reduceat(np.where(have, x, 0.0), starts, axis=0) / n
        if band == "minmax":
            low, high = np.fmin.reduceat(m, starts, axis=0), np.fmax.reduceat(m, starts, axis=0)
        else:
            rows_group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(m)]))
            squares = np.add.reduceat(np.where(have, (m - mean[rows_group]) ** 2, 0.0), starts, axis=0)
            sd = np.sqrt(np.where(n > 1, squares / np.maximum(n - 1, 1), 0.0))
            half = sd if band == "sd" else _t975(n - 1) * sd / np.sqrt(np.maximum(n, 1))
            low, high = mean - half, mean + half
    members = np.split(order, starts[1:])
    out = []
    for g, rows in enumerate(members):
        keep = n[g] > 0
        first = runs[rows[0]]
        out.append({"run_ids": [runs[i].run_id for i in rows], "label": first.label, "color": first.color,
                    "facet": first.facet, "runs": len(rows), "x": step[g][keep], "y": mean[g][keep],
                    "lo": low[g][keep], "hi": high[g][keep], "n": n[g][keep]})
    return out


def _t975(df: np.ndarray) -> np.ndarray:
    """:func:`t_quantile` of every element (0 where there is no degree of freedom)."""
    table = np.array([0.0, *_T975])
    clipped = np.clip(df, 0, len(_T975))
    return np.where(df > len(_T975), 1.96 + 2.5 / np.maximum(df, 1), table[clipped])


def importance(groups: Mapping[str, Sequence[tuple[int, float, float]]], cells: Sequence[tuple[int, float, float]],
               total: tuple[int, float, float]) -> list[Share]:
    """Each parameter's share of the metric's variance (its one-way ANOVA eta squared: the
    between-values sum of squares over the total), the replicates' (within the cells of every
    parameter at once) and the interactions' (what is left), largest first.

    ``groups`` maps a parameter to its values' ``(count, mean, population variance)``; ``cells``
    are the same for each combination of all parameters; ``total`` for all runs.
    """
    count, grand, variance = total
    ss_total = count * variance
    if count < 2 or ss_total <= 0:
        return []
    shares = [Share(name, _between(rows, grand) / ss_total, len(rows)) for name, rows in groups.items()]
    within = sum(n * var for n, _, var in cells) / ss_total
    rest = 1.0 - sum(s.share for s in shares) - within
    shares.append(Share("interactions", max(0.0, rest), 0))
    shares.append(Share("replicates", within, len(cells)))
    return sorted(shares, key=lambda s: -s.share)


def _between(rows: Sequence[tuple[int, float, float]], grand: float) -> float:
    return sum(n * (mean - grand) ** 2 for n, mean, _ in rows)
