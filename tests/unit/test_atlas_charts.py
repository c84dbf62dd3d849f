"""Atlas charts: the SVG parses, and what it shows (points, bars, ticks, labels) matches the data."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalab.atlas.charts import (
    PALETTE,
    error_bar_chart,
    format_tick,
    histogram,
    line_chart,
    log_ticks,
    nice_ticks,
)

SVG = "{http://www.w3.org/2000/svg}"
GEOMETRY = ("x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "width", "height")


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.get("width") and root.get("height") and root.get("viewBox")
    return root


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [el for el in root.iter() if name in (el.get("class") or "").split()]


def ticks(root: ET.Element, axis: str) -> list[float]:
    (group,) = by_class(root, f"{axis}-axis")
    return [float(t.get("data-value")) for t in by_class(group, "tick")]


def tick_labels(root: ET.Element, axis: str) -> list[str]:
    (group,) = by_class(root, f"{axis}-axis")
    return [t.text for t in by_class(group, "tick-label")]


def numbers_in_geometry(root: ET.Element) -> list[float]:
    """Every number in coordinate attributes, polyline vertices and the viewBox."""
    found = [float(el.get(a)) for el in root.iter() for a in GEOMETRY if el.get(a) is not None]
    for el in root.iter(f"{SVG}polyline"):
        found += [float(v) for vertex in el.get("points").split() for v in vertex.split(",")]
    found += [float(v) for v in root.get("viewBox").split()]
    return found


def vertices(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in vertex.split(",")) for vertex in polyline.get("points").split()]


def legend_names(root: ET.Element) -> list[str]:
    return [item.get("data-name") for item in by_class(root, "legend-item")]


def assert_empty(svg: str) -> None:
    root = parse(svg)
    (message,) = by_class(root, "empty")
    assert message.text == "no data"
    assert float(message.get("x")) == pytest.approx(float(root.get("width")) / 2)
    assert not by_class(root, "point") and not by_class(root, "bar")


# --- line chart ------------------------------------------------------------------------------


def test_line_chart_draws_one_point_per_value_with_its_data():
    series = {"loss": [(0, 1.0), (10, 0.5), (20, 0.25)], "acc": [(0, 0.1), (20, 0.9)]}
    root = parse(line_chart(series))
    points = by_class(root, "point")
    assert len(points) == 5
    drawn = {(p.get("data-series"), float(p.get("data-x")), float(p.get("data-y"))) for p in points}
    assert drawn == {(name, x, y) for name, pairs in series.items() for x, y in pairs}
    assert [p.get("data-name") for p in by_class(root, "series")] == ["loss", "acc"]
    assert legend_names(root) == ["loss", "acc"]
    loss = [p for p in points if p.get("data-series") == "loss"]
    assert [float(p.get("cy")) for p in loss] == sorted(float(p.get("cy")) for p in loss)  # falls as the value falls
    assert [float(p.get("cx")) for p in loss] == sorted(float(p.get("cx")) for p in loss)
    assert loss[1].find(f"{SVG}title").text == "loss: step=10, value=0.5"
    assert by_class(root, "x-title")[0].text == "step" and by_class(root, "y-title")[0].text == "value"


def test_line_chart_joins_points_in_x_order():
    root = parse(line_chart({"loss": [(30, 1.0), (10, 3.0), (20, 2.0)]}))
    xs = [x for x, _ in vertices(by_class(root, "series")[0])]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert [p.get("data-x") for p in by_class(root, "point")] == ["10", "20", "30"]


def test_a_single_series_has_no_legend_and_its_colour_is_the_first():
    root = parse(line_chart({"loss": [(1, 2.0), (2, 3.0)]}, x_label="epoch", y_label="loss"))
    assert not by_class(root, "legend")
    assert by_class(root, "series")[0].get("stroke") == PALETTE[0]
    assert by_class(root, "x-title")[0].text == "epoch"


def test_line_chart_colours_cycle_through_the_palette():
    root = parse(line_chart({f"m{i}": [(0, i), (1, i + 1)] for i in range(len(PALETTE) + 2)}))
    colours = [line.get("stroke") for line in by_class(root, "series")]
    assert colours[: len(PALETTE)] == list(PALETTE) and len(set(PALETTE)) == len(PALETTE)
    assert colours[len(PALETTE)] == PALETTE[0] and colours[len(PALETTE) + 1] == PALETTE[1]


def test_line_chart_ticks_increase_and_cover_negative_and_large_values():
    series = {"a": [(-3, -2.5e6), (0, 7.0), (1500, 1.2e7)]}
    root = parse(line_chart(series))
    for axis, values in (("x", [-3, 1500]), ("y", [-2.5e6, 1.2e7])):
        found = ticks(root, axis)
        assert 4 <= len(found) <= 8
        assert all(a < b for a, b in pairwise(found))
        assert found[0] <= min(values) and found[-1] >= max(values)
    assert "1.5k" in tick_labels(root, "x") or "2k" in tick_labels(root, "x")
    assert any(label.endswith("M") for label in tick_labels(root, "y"))


def test_line_chart_skips_nan_and_inf_and_never_writes_them():
    nan, inf = float("nan"), float("inf")
    series = {"loss": [(0, 1.0), (1, nan), (2, inf), (nan, 3.0), (3, -inf), (4, 0.5)], "dead": [(0, nan)]}
    svg = line_chart(series)
    root = parse(svg)
    points = by_class(root, "point")
    assert [(float(p.get("data-x")), float(p.get("data-y"))) for p in points] == [(0, 1.0), (4, 0.5)]
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    assert [s.get("data-name") for s in by_class(root, "series")] == ["loss"]  # the all-NaN series is gone
    assert all(math.isfinite(v) for v in numbers_in_geometry(root))


@pytest.mark.parametrize("series", [{}, {"loss": []}, {"loss": [(float("nan"), float("nan"))]}, None])
def test_line_chart_without_data_says_so(series):
    assert_empty(line_chart(series))


def test_a_single_point_and_all_equal_values_get_a_padded_range():
    root = parse(line_chart({"loss": [(5, 0.3)]}))
    (point,) = by_class(root, "point")
    x_ticks, y_ticks = ticks(root, "x"), ticks(root, "y")
    assert x_ticks[0] < 5 < x_ticks[-1] and y_ticks[0] < 0.3 < y_ticks[-1]
    box = by_class(root, "x-axis")[0].find(f"{SVG}line")
    assert float(box.get("x1")) < float(point.get("cx")) < float(box.get("x2"))  # inside, not on an edge

    root = parse(line_chart({"flat": [(i, 2.0) for i in range(10)]}))
    y_ticks = ticks(root, "y")
    assert y_ticks[0] < 2.0 < y_ticks[-1]
    assert len({p.get("cy") for p in by_class(root, "point")}) == 1


def test_long_series_keep_every_point_in_the_data_but_stay_light():
    points = [(i, math.sin(i / 50) + (5.0 if i == 7777 else 0.0)) for i in range(10_000)]
    root = parse(line_chart({"loss": points}))
    (line,) = by_class(root, "series")
    assert line.get("data-count") == "10000"
    kept = vertices(line)
    assert 1000 < len(kept) <= 2002
    highest, runner_up = sorted(y for _, y in kept)[:2]  # pixel y: the highest value is the smallest
    assert runner_up - highest > 50  # the one-sample spike survives decimation (without it the gap is ~0)
    xs = [x for x, _ in kept]
    assert xs == sorted(xs)
    markers = by_class(root, "point")
    assert 0 < len(markers) <= 500 and all(m.get("data-sampled") == "true" for m in markers)
    assert float(markers[0].get("data-x")) == 0 and float(markers[-1].get("data-x")) == 9999


def test_up_to_500_points_each_get_a_marker():
    root = parse(line_chart({"loss": [(i, i * i) for i in range(500)]}))
    markers = by_class(root, "point")
    assert len(markers) == 500 and not any(m.get("data-sampled") for m in markers)
    assert len(vertices(by_class(root, "series")[0])) == 500


# --- error bar chart -------------------------------------------------------------------------


def sweep(*groups: str) -> dict[str, list[dict]]:
    return {g: [{"x": 0.001, "mean": 0.3 + i, "spread": 0.01, "n": 3}, {"x": 0.01, "mean": 0.2357 + i,
                 "spread": 0.018, "n": 4}, {"x": 0.1, "mean": 0.1 + i, "spread": 0.0, "n": 4}]
            for i, g in enumerate(groups)}


def test_error_bars_carry_the_data_and_their_lengths_follow_the_spread():
    groups = {"sgd": [{"x": 1, "mean": 0.5, "spread": 0.1, "n": 4}, {"x": 2, "mean": 0.4, "spread": 0.3, "n": 4},
                      {"x": 3, "mean": 0.2, "spread": 0.0, "n": 2}]}
    root = parse(error_bar_chart(groups, x_label="lr", y_label="loss"))
    points = by_class(root, "point")
    assert [(float(p.get("data-x")), float(p.get("data-y")), float(p.get("data-spread")), p.get("data-n"))
            for p in points] == [(1, 0.5, 0.1, "4"), (2, 0.4, 0.3, "4"), (3, 0.2, 0.0, "2")]
    assert {p.get("data-group") for p in points} == {"sgd"}
    bars = by_class(root, "error-bar")
    assert len(bars) == 2  # a zero spread draws no bar
    lengths = []
    for bar, point in zip(bars, points):
        whisker = by_class(bar, "whisker")[0]
        y1, y2 = float(whisker.get("y1")), float(whisker.get("y2"))
        lengths.append(abs(y2 - y1))
        assert (y1 + y2) / 2 == pytest.approx(float(point.get("cy")), abs=0.02)  # centred on the mean
        assert float(whisker.get("x1")) == float(point.get("cx"))
        assert len(by_class(bar, "cap")) == 2
    assert lengths[1] / lengths[0] == pytest.approx(3, rel=0.01)
    assert float(bars[0].get("data-lo")) == pytest.approx(0.4) and float(bars[0].get("data-hi")) == pytest.approx(0.6)
    y_ticks = ticks(root, "y")
    assert y_ticks[0] <= 0.1 and y_ticks[-1] >= 0.7  # the range covers the bars, not only the means


def test_error_bar_tooltip_reads_like_the_data():
    root = parse(error_bar_chart(sweep("sgd"), x_label="lr", y_label="loss"))
    titles = [p.find(f"{SVG}title").text for p in by_class(root, "point")]
    assert titles[1] == "sgd: x=0.01, y=0.2357 \u00b1 0.018 (n=4)"


def test_each_group_is_joined_in_x_order():
    groups = {"adam": [{"x": 3, "mean": 1.0}, {"x": 1, "mean": 3.0}, {"x": 2, "mean": 2.0}]}
    root = parse(error_bar_chart(groups, x_label="width", y_label="loss"))
    (line,) = by_class(root, "series")
    xs = [x for x, _ in vertices(line)]
    ys = [y for _, y in vertices(line)]
    assert xs == sorted(xs) and len(xs) == 3
    assert ys == sorted(ys) and ys[0] < ys[-1]  # means 3, 2, 1 in x order: the line falls (pixel y grows)
    assert [p.get("data-x") for p in by_class(root, "point")] == ["1", "2", "3"]
    assert [p.get("data-spread") for p in by_class(root, "point")] == ["0", "0", "0"]  # missing spread is 0


def test_x_spanning_decades_gets_a_log_scale():
    root = parse(error_bar_chart(sweep("sgd"), x_label="lr", y_label="loss"))
    assert by_class(root, "x-axis")[0].get("data-scale") == "log"
    cx = [float(p.get("cx")) for p in by_class(root, "point")]
    assert cx[1] - cx[0] == pytest.approx(cx[2] - cx[1], abs=0.02)  # 0.001, 0.01, 0.1 evenly spaced
    x_ticks = ticks(root, "x")
    assert x_ticks[0] <= 0.001 and x_ticks[-1] >= 0.1 and 0.01 in x_ticks
    assert {"0.001", "0.01", "0.1"} <= set(tick_labels(root, "x"))

    linear = parse(error_bar_chart(sweep("sgd"), x_label="lr", y_label="loss", log_x=False))
    assert by_class(linear, "x-axis")[0].get("data-scale") == "linear"
    cx = [float(p.get("cx")) for p in by_class(linear, "point")]
    assert cx[1] - cx[0] < (cx[2] - cx[1]) / 5


@pytest.mark.parametrize(("xs", "log_x", "scale"), [
    ([1, 2, 3], None, "linear"),  # max/min < 100
    ([1, 100], None, "log"),
    ([0, 1, 1000], None, "linear"),  # zero cannot go on a log axis
    ([-1, 10, 1000], True, "linear"),  # asked for log, but a value is negative
    ([1, 2, 3], True, "log"),
])
def test_log_scale_choice(xs, log_x, scale):
    groups = {"g": [{"x": x, "mean": 1.0, "spread": 0.1, "n": 1} for x in xs]}
    root = parse(error_bar_chart(groups, x_label="x", y_label="y", log_x=log_x))
    assert by_class(root, "x-axis")[0].get("data-scale") == scale
    assert len(by_class(root, "point")) == len(xs)


def test_only_the_first_twelve_groups_are_drawn_and_the_rest_are_counted():
    names = [f"g{i:02}" for i in range(15)]
    root = parse(error_bar_chart(sweep(*names), x_label="lr", y_label="loss"))
    assert {p.get("data-group") for p in by_class(root, "point")} == set(names[:12])
    assert legend_names(root) == names[:12]
    (more,) = by_class(root, "legend-more")
    assert more.text == "+3 more groups"


def test_group_names_are_escaped():
    name = "<script>alert('x')</script> & \"q\""
    svg = error_bar_chart({name: [{"x": 1, "mean": 2, "spread": 0.5, "n": 3}], "plain": [{"x": 2, "mean": 1}]},
                          x_label="<b>lr</b>", y_label="a&b")
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)
    assert by_class(root, "point")[0].get("data-group") == name
    assert legend_names(root)[0] == name
    assert by_class(root, "x-title")[0].text == "<b>lr</b>" and by_class(root, "y-title")[0].text == "a&b"
    assert "<script>" in by_class(root, "point")[0].find(f"{SVG}title").text


def test_error_bar_chart_skips_non_finite_points():
    nan = float("nan")
    groups = {"g": [{"x": nan, "mean": 1}, {"x": 1, "mean": nan}, {"x": 2, "mean": 3, "spread": nan},
                    {"x": 3, "mean": 4, "spread": 1, "n": 2}, "junk", {"mean": 1}]}
    svg = error_bar_chart(groups, x_label="x", y_label="y")
    root = parse(svg)
    assert [p.get("data-x") for p in by_class(root, "point")] == ["2", "3"]
    assert len(by_class(root, "error-bar")) == 1
    assert "nan" not in svg.lower()


@pytest.mark.parametrize("groups", [{}, {"g": []}, {"g": [{"x": float("nan"), "mean": 1}]}])
def test_error_bar_chart_without_data_says_so(groups):
    assert_empty(error_bar_chart(groups, x_label="lr", y_label="loss"))


# --- histogram -------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [[1, 4, 0, 12, 3], [6, 9, 12, 7, 10]])
def test_histogram_bar_heights_are_proportional_to_counts(counts):
    bins = [{"lo": i * 0.5, "hi": (i + 1) * 0.5, "count": c} for i, c in enumerate(counts)]
    root = parse(histogram(bins, x_label="loss"))
    bars = by_class(root, "bar")
    assert [int(b.get("data-count")) for b in bars] == counts
    assert [(float(b.get("data-lo")), float(b.get("data-hi"))) for b in bars] == [(b["lo"], b["hi"]) for b in bins]
    heights = [float(b.get("height")) for b in bars]
    assert (heights[2] == 0) == (counts[2] == 0)
    tallest = heights[counts.index(max(counts))]
    for height, count in zip(heights, counts):
        assert height == pytest.approx(tallest * count / max(counts), abs=0.02)
    bottoms = {round(float(b.get("y")) + float(b.get("height")), 1) for b in bars}
    assert len(bottoms) == 1  # a shared baseline
    assert ticks(root, "y")[0] == 0 and ticks(root, "y")[-1] >= 12
    lefts = [float(b.get("x")) for b in bars]
    assert lefts == sorted(lefts) and len(set(lefts)) == 5
    assert by_class(root, "y-title")[0].text == "count" and by_class(root, "x-title")[0].text == "loss"


def test_histogram_skips_bad_bins():
    bins = [{"lo": 0, "hi": 1, "count": 3}, {"lo": float("nan"), "hi": 2, "count": 1},
            {"lo": 2, "hi": float("inf"), "count": 1}, {"lo": 3, "hi": 4, "count": -1}, {"lo": 5, "hi": 4, "count": 2}]
    svg = histogram(bins, x_label="v")
    root = parse(svg)
    assert [(b.get("data-lo"), b.get("data-hi"), b.get("data-count")) for b in by_class(root, "bar")] == [
        ("0", "1", "3"), ("4", "5", "2")]  # a reversed bin is turned round
    assert "nan" not in svg.lower() and "inf" not in svg.lower()


@pytest.mark.parametrize("bins", [[], [{"lo": 0, "hi": float("nan"), "count": 1}], None])
def test_histogram_without_data_says_so(bins):
    assert_empty(histogram(bins, x_label="v"))


def test_histogram_of_zero_counts_still_draws_the_bins():
    root = parse(histogram([{"lo": 0, "hi": 1, "count": 0}, {"lo": 1, "hi": 2, "count": 0}], x_label="v"))
    assert [float(b.get("height")) for b in by_class(root, "bar")] == [0, 0]


# --- ticks and labels ------------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1]),
    (0, 7, [0, 2, 4, 6, 8]),
    (-3, -2.9, [-3, -2.98, -2.96, -2.94, -2.92, -2.9]),
    (0.001, 0.1, [0, 0.02, 0.04, 0.06, 0.08, 0.1]),
    (3, 0, [0, 1, 2, 3]),
])
def test_nice_ticks_are_round_numbers(lo, hi, expected):
    assert nice_ticks(lo, hi) == expected


def test_nice_ticks_pad_a_single_value_and_reject_non_finite_bounds():
    found = nice_ticks(0.3, 0.3)
    assert found[0] < 0.3 < found[-1] and 4 <= len(found) <= 8
    assert nice_ticks(0, 0)[0] < 0 < nice_ticks(0, 0)[-1]
    assert nice_ticks(float("nan"), 1) == [] and nice_ticks(0, float("inf")) == []


def test_log_ticks():
    assert log_ticks(0.001, 0.1) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    assert log_ticks(1, 1e12) == [1, 1e2, 1e4, 1e6, 1e8, 1e10, 1e12]
    assert log_ticks(2, 8) == [1, 2, 5, 10]
    assert log_ticks(0, 10) == [] and log_ticks(-1, 10) == []


@pytest.mark.parametrize(("value", "label"), [
    (0, "0"), (-0.0, "0"), (0.001, "0.001"), (1e-05, "1e-05"), (2.5e-05, "2.5e-05"), (0.1 + 0.2, "0.3"),
    (12, "12"), (-7.5, "-7.5"), (2500, "2.5k"), (1000, "1k"), (-1.5e6, "-1.5M"), (3e9, "3G"), (4e12, "4T"),
    (1e15, "1e+15"),
])
def test_format_tick(value, label):
    assert format_tick(value) == label


# --- properties ------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(finite, finite, st.integers(min_value=2, max_value=12))
def test_nice_ticks_increase_and_cover_the_range(a, b, count):
    lo, hi = min(a, b), max(a, b)
    found = nice_ticks(lo, hi, count)
    assert found and all(math.isfinite(t) for t in found)
    assert all(x < y for x, y in pairwise(found))
    assert found[0] <= lo and found[-1] >= hi
    if count == 5:
        assert 4 <= len(found) <= 8


@given(st.floats(min_value=1e-300, max_value=1e300), st.floats(min_value=1e-300, max_value=1e300))
def test_log_ticks_increase_and_cover_the_range(a, b):
    lo, hi = min(a, b), max(a, b)
    found = log_ticks(lo, hi)
    assert all(x < y for x, y in pairwise(found)) and 2 <= len(found) <= 8
    assert found[0] <= lo and found[-1] >= hi


any_float = st.floats()  # NaN and inf included: they must be skipped
names = st.text(max_size=12)


def all_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def check_well_formed(svg: str, expected_points: int, cls: str = "point") -> ET.Element:
    root = parse(svg)
    assert len(by_class(root, cls)) == expected_points
    assert all(math.isfinite(v) for v in numbers_in_geometry(root))
    if expected_points == 0:
        assert by_class(root, "empty")
    return root


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, st.lists(st.tuples(any_float, any_float), max_size=20), max_size=5))
def test_line_chart_is_well_formed_for_any_input(series):
    expected = sum(all_finite(x, y) for pairs in series.values() for x, y in pairs)
    check_well_formed(line_chart(series), expected)


error_point = st.fixed_dictionaries({"x": any_float, "mean": any_float},
                                    optional={"spread": any_float, "n": st.integers(0, 10**6)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, st.lists(error_point, max_size=8), max_size=14), st.sampled_from([None, True, False]))
def test_error_bar_chart_is_well_formed_for_any_input(groups, log_x):
    kept = [sum(all_finite(p["x"], p["mean"]) for p in points) for points in groups.values()]
    expected = sum([k for k in kept if k][:12])
    check_well_formed(error_bar_chart(groups, x_label="x", y_label="y", log_x=log_x), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"lo": any_float, "hi": any_float, "count": st.integers(-2, 10**9)}),
                max_size=30), names)
def test_histogram_is_well_formed_for_any_input(bins, label):
    expected = sum(all_finite(b["lo"], b["hi"]) and b["count"] >= 0 for b in bins)
    check_well_formed(histogram(bins, x_label=label), expected, cls="bar")
