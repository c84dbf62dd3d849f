"""Server-rendered SVG charts for Atlas: line charts, error-bar charts and histograms.

Standard library only. Each chart function returns one ``<svg>`` element as a string that a browser
shows inline with no JavaScript and no network access. Every plotted datum is an element with a
class and ``data-*`` attributes carrying its values (``circle.point``, ``rect.bar``,
``polyline.series``, ``g.error-bar``), so tests and people can read the numbers back without
reverse-engineering pixel coordinates. Bad input never raises: NaN/inf values are skipped, an empty
chart says "no data", and all-equal values get a padded range.
"""

from __future__ import annotations

import html
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "PALETTE",
    "error_bar_chart",
    "format_tick",
    "histogram",
    "line_chart",
    "linear_scale",
    "log_scale",
    "log_ticks",
    "nice_ticks",
]

#: Okabe-Ito colours (colour-blind safe), yellow swapped for grey so every colour reads on white.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#888888")

MAX_GROUPS = 12  # error_bar_chart draws at most this many groups; line charts list this many in the legend
MAX_MARKERS = 500  # a line-chart series with more points gets sampled markers only
SAMPLED_MARKERS = 100  # markers kept for such a series (for hover titles)
MAX_VERTICES = 2000  # polyline vertices per series after min/max decimation

_FLOAT_MAX = sys.float_info.max
_TINY_SPAN = 1e-290  # ranges narrower than this are treated as a single value
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MARGIN_LEFT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 16, 48
_MARGIN_RIGHT, _LEGEND_WIDTH = 16, 150
_LEGEND_CHARS = 20


# --- numbers ---------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None for NaN, inf and anything that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _clamp(value: float) -> float:
    """Keep a float finite (sums like ``mean + spread`` can overflow)."""
    if math.isnan(value):
        return 0.0
    return max(-_FLOAT_MAX, min(_FLOAT_MAX, value))


def _scaled(k: int, mantissa: int, exponent: int) -> float:
    """``k * mantissa * 10**exponent`` rounded once (so 3 * 0.1 is 0.3), overflowing to +/-inf."""
    try:
        if exponent >= 0:
            return float(k * mantissa * 10**exponent)
        return (k * mantissa) / 10 ** (-exponent)
    except OverflowError:
        return math.copysign(math.inf, k * mantissa)


def _pad(lo: float, hi: float) -> tuple[float, float]:
    """Widen a (near) single-value range so it can be drawn; identity for a proper range."""
    magnitude = max(abs(lo), abs(hi))
    span = hi / 2 - lo / 2
    if span * 2 > max(magnitude * 1e-9, _TINY_SPAN):
        return lo, hi
    pad = max(magnitude * 0.1, _TINY_SPAN) if magnitude else 1.0
    return _clamp(lo - pad), _clamp(hi + pad)


def _tick_range(lo: float, hi: float, mantissa: int, exponent: int) -> tuple[int, int]:
    """The multipliers k of the step ``mantissa * 10**exponent`` of the last tick <= lo and the first >= hi."""
    step = _scaled(1, mantissa, exponent)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    while _scaled(first, mantissa, exponent) > lo:
        first -= 1
    while _scaled(first + 1, mantissa, exponent) <= lo:
        first += 1
    while _scaled(last, mantissa, exponent) < hi:
        last += 1
    while _scaled(last - 1, mantissa, exponent) >= hi:
        last -= 1
    return first, last


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Increasing 1-2-5 ticks with the first <= lo and the last >= hi, about ``count`` of them.

    For count=5 there are always 4-8 ticks. lo > hi is swapped; lo == hi is padded. Non-finite
    bounds give [].
    """
    lo_f, hi_f = _finite(lo), _finite(hi)
    if lo_f is None or hi_f is None:
        return []
    lo_f, hi_f = _pad(min(lo_f, hi_f), max(lo_f, hi_f))
    count = max(2, min(int(count), 50))
    raw = hi_f / (count - 1) - lo_f / (count - 1)
    base = math.floor(math.log10(raw))
    fewest, most = min(4, count), max(8, count)
    best: tuple[tuple[int, int, int], int, int, int, int] | None = None
    for exponent in (base - 1, base, base + 1):
        for mantissa in (1, 2, 5):
            step = _scaled(1, mantissa, exponent)
            if not step or not math.isfinite(step):
                continue
            first, last = _tick_range(lo_f, hi_f, mantissa, exponent)
            n = last - first + 1
            key = (0 if fewest <= n <= most else 1, abs(n - count), n)
            if best is None or key < best[0]:
                best = (key, mantissa, exponent, first, last)
    assert best is not None  # a range of normal floats always has a representable step
    _, mantissa, exponent, first, last = best
    ticks = [_scaled(k, mantissa, exponent) for k in range(first, last + 1)]
    if not math.isfinite(ticks[0]):  # the range reaches the largest floats: end exactly on it
        ticks[0] = lo_f
    if not math.isfinite(ticks[-1]):
        ticks[-1] = hi_f
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Increasing powers of ten (with 2 and 5 between them over a short range) covering [lo, hi].

    At most 8 ticks: long ranges skip decades. Needs 0 < lo <= hi, else [].
    """
    lo_f, hi_f = _finite(lo), _finite(hi)
    if lo_f is None or hi_f is None or lo_f <= 0 or hi_f <= 0:
        return []
    lo_f, hi_f = min(lo_f, hi_f), max(lo_f, hi_f)
    first, last = math.floor(math.log10(lo_f)), math.ceil(math.log10(hi_f))
    while _scaled(1, 1, first) > lo_f:
        first -= 1
    while _scaled(1, 1, last) < hi_f:
        last += 1
    if last == first:
        last += 1
    decades = last - first
    if decades <= 2:
        ticks = [_scaled(1, m, e) for e in range(first, last) for m in (1, 2, 5)] + [_scaled(1, 1, last)]
        ticks = [t for t in ticks if t > 0]
    else:
        stride = math.ceil(decades / 7)
        exponents = list(range(first, last, stride))
        exponents.append(exponents[-1] + stride)
        ticks = [_scaled(1, 1, e) for e in exponents]
        ticks = [t for t in ticks if t > 0] or [lo_f]
    if not math.isfinite(ticks[-1]):
        ticks[-1] = _FLOAT_MAX
    return ticks


def _plain(value: float) -> str:
    return format(value, ".12g")


def _scientific(value: float) -> str:
    mantissa, exponent = format(value, ".11e").split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def format_tick(value: float) -> str:
    """A compact tick label: 0, 0.001, 1e-05, 12, 2.5k, 1.5M, 3G, 4T, 1e+15."""
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if number == 0:
        return "0"
    size = abs(number)
    if size < 1e-3 or size >= 1e15:
        return _scientific(number)
    for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= divisor:
            return _plain(number / divisor) + suffix
    return _plain(number)


def linear_scale(value: float, d0: float, d1: float, r0: float, r1: float) -> float:
    """Map ``value`` from the domain [d0, d1] to the range [r0, r1]; a flat domain maps to the middle."""
    span = d1 / 2 - d0 / 2  # halves, so the widest float ranges do not overflow
    if not span or not math.isfinite(span):
        return (r0 + r1) / 2
    return r0 + (value / 2 - d0 / 2) / span * (r1 - r0)


def log_scale(value: float, d0: float, d1: float, r0: float, r1: float) -> float:
    """Map ``value`` from [d0, d1] to [r0, r1] in log space; non-positive inputs map to r0."""
    if value <= 0 or d0 <= 0 or d1 <= 0:
        return r0
    return linear_scale(math.log10(value), math.log10(d0), math.log10(d1), r0, r1)


def _short(value: float) -> str:
    """A number for a tooltip: four significant digits."""
    return format(value, ".4g")


def _data(value: float) -> str:
    """A number for a data-* attribute: exact (round-trips through float())."""
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _px(value: float) -> str:
    """A pixel coordinate: finite, two decimals at most."""
    if not math.isfinite(value):
        value = 0.0
    text = f"{max(-1e6, min(1e6, value)):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --- text ------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Escape for element content; characters XML forbids are dropped."""
    return html.escape(_INVALID_XML.sub("", str(value)), quote=False)


def _attr(value: Any) -> str:
    """Escape for a double-quoted attribute, keeping tabs and newlines as they were."""
    escaped = html.escape(_INVALID_XML.sub("", str(value)), quote=True)
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


def _truncate(name: str, limit: int = _LEGEND_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


# --- data cleaning ---------------------------------------------------------------------------


def _items(mapping: Any) -> list[tuple[str, Any]]:
    if not isinstance(mapping, Mapping):
        return []
    return [(str(name), values) for name, values in mapping.items()]


def _pairs(points: Any) -> list[tuple[float, float]]:
    """The finite (x, y) pairs of ``points``, sorted by x (stable)."""
    kept = []
    for point in points if isinstance(points, Iterable) else ():
        try:
            x, y = point
        except (TypeError, ValueError):
            continue
        fx, fy = _finite(x), _finite(y)
        if fx is not None and fy is not None:
            kept.append((fx, fy))
    kept.sort(key=lambda pair: pair[0])
    return kept


class _ErrorPoint(NamedTuple):
    x: float
    mean: float
    spread: float
    n: int | None
    lo: float
    hi: float


def _error_points(points: Any) -> list[_ErrorPoint]:
    """The points with finite x and mean, sorted by x; a missing or non-finite spread counts as 0."""
    kept = []
    for point in points if isinstance(points, Iterable) else ():
        if not isinstance(point, Mapping):
            continue
        x, mean = _finite(point.get("x")), _finite(point.get("mean"))
        if x is None or mean is None:
            continue
        spread = abs(_finite(point.get("spread", 0)) or 0.0)
        n = _finite(point.get("n"))
        count = int(n) if n is not None else None
        kept.append(_ErrorPoint(x, mean, spread, count, _clamp(mean - spread), _clamp(mean + spread)))
    kept.sort(key=lambda p: p.x)
    return kept


def _decimate(points: list[tuple[float, float]], limit: int = MAX_VERTICES) -> list[tuple[float, float]]:
    """At most ``limit`` points: first, last, and each bucket's min and max y, in order."""
    if len(points) <= limit:
        return points
    buckets = max(1, (limit - 2) // 2)
    inner = points[1:-1]
    kept = [points[0]]
    for b in range(buckets):
        chunk = range(b * len(inner) // buckets, (b + 1) * len(inner) // buckets)
        if not chunk:
            continue
        low = min(chunk, key=lambda i: inner[i][1])
        high = max(chunk, key=lambda i: inner[i][1])
        kept.extend(inner[i] for i in sorted({low, high}))
    kept.append(points[-1])
    return kept


def _sample(points: list[tuple[float, float]], count: int) -> list[tuple[float, float]]:
    """``count`` evenly spaced points including the first and last."""
    if len(points) <= count:
        return points
    last = len(points) - 1
    return [points[round(i * last / (count - 1))] for i in range(count)]


# --- layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    ticks: tuple[float, ...]
    log: bool = False

    def at(self, value: float, r0: float, r1: float) -> float:
        scale = log_scale if self.log else linear_scale
        return scale(value, self.ticks[0], self.ticks[-1], r0, r1)


def _axis(values: list[float], log: bool = False) -> _Axis:
    lo, hi = min(values), max(values)
    return _Axis(tuple(log_ticks(lo, hi) if log else nice_ticks(lo, hi)), log)


@dataclass(frozen=True)
class _Box:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


def _box(width: float, height: float, legend: bool) -> _Box:
    right = _LEGEND_WIDTH if legend else _MARGIN_RIGHT
    return _Box(_MARGIN_LEFT, _MARGIN_TOP, max(width - _MARGIN_LEFT - right, 1.0),
                max(height - _MARGIN_TOP - _MARGIN_BOTTOM, 1.0))


def _size(value: Any, default: float, least: float) -> float:
    number = _finite(value)
    return default if number is None else max(least, min(number, 10000.0))


def _svg(kind: str, width: float, height: float, label: str, body: list[str]) -> str:
    w, h = _px(width), _px(height)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_attr(label)}" '
            f'font-family="system-ui, sans-serif" font-size="11">' + "".join(body) + "</svg>")


def _empty(kind: str, width: float, height: float, label: str) -> str:
    frame = (f'<rect class="frame" x="0.5" y="0.5" width="{_px(width - 1)}" height="{_px(height - 1)}" '
             'fill="none" stroke="#ccc"/>')
    message = (f'<text class="empty" x="{_px(width / 2)}" y="{_px(height / 2)}" text-anchor="middle" '
               'dominant-baseline="middle" fill="#666" font-size="14">no data</text>')
    body = [frame, message]
    return _svg(kind, width, height, f"{label}: no data", body)


def _axes(x: _Axis, y: _Axis, box: _Box, x_label: str, y_label: str) -> list[str]:
    """Grid lines, both axes with ticks and labels, and the axis titles."""
    xs = [(t, x.at(t, box.left, box.right)) for t in x.ticks]
    ys = [(t, y.at(t, box.bottom, box.top)) for t in y.ticks]
    out = ['<g class="grid" stroke="#e6e6e6" stroke-width="1">']
    out += [f'<line x1="{_px(p)}" y1="{_px(box.top)}" x2="{_px(p)}" y2="{_px(box.bottom)}"/>' for _, p in xs]
    out += [f'<line x1="{_px(box.left)}" y1="{_px(p)}" x2="{_px(box.right)}" y2="{_px(p)}"/>' for _, p in ys]
    out.append("</g>")
    out.append(f'<g class="axis x-axis" data-scale="{"log" if x.log else "linear"}" stroke="#333">')
    out.append(f'<line class="domain" x1="{_px(box.left)}" y1="{_px(box.bottom)}" x2="{_px(box.right)}" '
               f'y2="{_px(box.bottom)}"/>')
    for value, p in xs:
        out.append(f'<g class="tick" data-value="{_data(value)}"><line x1="{_px(p)}" y1="{_px(box.bottom)}" '
                   f'x2="{_px(p)}" y2="{_px(box.bottom + 5)}"/><text class="tick-label" x="{_px(p)}" '
                   f'y="{_px(box.bottom + 17)}" text-anchor="middle" stroke="none" fill="#333">'
                   f"{_text(format_tick(value))}</text></g>")
    out.append("</g>")
    out.append(f'<g class="axis y-axis" data-scale="{"log" if y.log else "linear"}" stroke="#333">')
    out.append(f'<line class="domain" x1="{_px(box.left)}" y1="{_px(box.top)}" x2="{_px(box.left)}" '
               f'y2="{_px(box.bottom)}"/>')
    for value, p in ys:
        out.append(f'<g class="tick" data-value="{_data(value)}"><line x1="{_px(box.left - 5)}" y1="{_px(p)}" '
                   f'x2="{_px(box.left)}" y2="{_px(p)}"/><text class="tick-label" x="{_px(box.left - 8)}" '
                   f'y="{_px(p + 4)}" text-anchor="end" stroke="none" fill="#333">'
                   f"{_text(format_tick(value))}</text></g>")
    out.append("</g>")
    middle_x, middle_y = box.left + box.width / 2, box.top + box.height / 2
    out.append(f'<text class="axis-title x-title" x="{_px(middle_x)}" y="{_px(box.bottom + 38)}" '
               f'text-anchor="middle" fill="#111">{_text(x_label)}</text>')
    out.append(f'<text class="axis-title y-title" x="14" y="{_px(middle_y)}" text-anchor="middle" fill="#111" '
               f'transform="rotate(-90 14 {_px(middle_y)})">{_text(y_label)}</text>')
    return out


def _legend(names: list[str], box: _Box, hidden: int, noun: str) -> list[str]:
    """One swatch and name per entry at the right of the plot, then "+N more <noun>"."""
    left = box.right + 12
    out = ['<g class="legend">']
    for i, name in enumerate(names):
        y = box.top + 4 + i * 18
        out.append(f'<g class="legend-item" data-name="{_attr(name)}"><title>{_text(name)}</title>'
                   f'<rect x="{_px(left)}" y="{_px(y)}" width="10" height="10" fill="{_colour(i)}"/>'
                   f'<text x="{_px(left + 15)}" y="{_px(y + 9)}" fill="#111">{_text(_truncate(name))}</text></g>')
    if hidden > 0:
        y = box.top + 4 + len(names) * 18
        out.append(f'<text class="legend-more" x="{_px(left)}" y="{_px(y + 9)}" fill="#666">'
                   f"+{hidden} more {noun}</text>")
    out.append("</g>")
    return out


def _polyline(name: str, colour: str, vertices: list[str], count: int) -> str:
    return (f'<polyline class="series" data-name="{_attr(name)}" data-count="{count}" fill="none" '
            f'stroke="{colour}" stroke-width="1.5" stroke-linejoin="round" points="{" ".join(vertices)}"/>')


# --- charts ----------------------------------------------------------------------------------


def line_chart(series: Mapping[str, list[tuple[float, float]]], *, x_label: str = "step", y_label: str = "value",
               width: float = 640, height: float = 320) -> str:
    """One polyline per series (e.g. per metric name) of (x, y) points, sorted by x.

    Each finite point is a ``circle.point`` (data-series, data-x, data-y) when its series has at
    most 500 points; a longer series gets 100 evenly spaced markers with ``data-sampled="true"``
    and its polyline is decimated to at most 2000 vertices (per-bucket min and max). The polyline's
    ``data-count`` is always the number of finite points in the series.
    """
    width, height = _size(width, 640, 120), _size(height, 320, 100)
    label = f"Line chart of {y_label} against {x_label}"
    drawn = [(name, points) for name, points in ((n, _pairs(p)) for n, p in _items(series)) if points]
    if not drawn:
        return _empty("line-chart", width, height, label)
    legend = len(drawn) > 1
    box = _box(width, height, legend)
    x = _axis([p[0] for _, points in drawn for p in points])
    y = _axis([p[1] for _, points in drawn for p in points])
    body = _axes(x, y, box, x_label, y_label)
    for i, (name, points) in enumerate(drawn):
        colour = _colour(i)
        vertices = [f"{_px(x.at(px, box.left, box.right))},{_px(y.at(py, box.bottom, box.top))}"
                    for px, py in _decimate(points)]
        body.append(f'<g class="series-group" data-name="{_attr(name)}">')
        body.append(_polyline(name, colour, vertices, len(points)))
        sampled = len(points) > MAX_MARKERS
        markers = _sample(points, SAMPLED_MARKERS) if sampled else points
        flag = ' data-sampled="true"' if sampled else ""
        for px, py in markers:
            body.append(f'<circle class="point" data-series="{_attr(name)}" data-x="{_data(px)}" '
                        f'data-y="{_data(py)}"{flag} cx="{_px(x.at(px, box.left, box.right))}" '
                        f'cy="{_px(y.at(py, box.bottom, box.top))}" r="2.5" fill="{colour}">'
                        f"<title>{_text(name)}: {_text(x_label)}={_short(px)}, {_text(y_label)}={_short(py)}"
                        "</title></circle>")
        body.append("</g>")
    names = [name for name, _ in drawn]
    if legend:
        body += _legend(names[:MAX_GROUPS], box, len(names) - MAX_GROUPS, "series")
    label += ": " + ", ".join(names[:MAX_GROUPS])
    if len(names) > MAX_GROUPS:
        label += f" and {len(names) - MAX_GROUPS} more"
    return _svg("line-chart", width, height, label, body)


def _use_log(xs: list[float], log_x: bool | None) -> bool:
    """log_x=None: log when every x > 0 and max/min >= 100. log_x=True falls back to linear if some x <= 0."""
    positive = all(v > 0 for v in xs)
    if log_x is None:
        return positive and max(xs) / min(xs) >= 100
    return bool(log_x) and positive


def error_bar_chart(groups: Mapping[str, list[dict[str, Any]]], *, x_label: str, y_label: str,
                    log_x: bool | None = None, width: float = 640, height: float = 360) -> str:
    """Per group, the mean at each x with a vertical bar for mean +/- spread, joined in x order.

    ``groups`` maps a name to points ``{"x", "mean", "spread", "n"}``; points without a finite x or
    mean are skipped, a missing or non-finite spread is 0 (no bar). The first 12 groups with data are
    drawn, the rest noted as "+N more groups" in the legend. Each mean is a ``circle.point``
    (data-group, data-x, data-y, data-spread, data-n); each bar a ``g.error-bar``
    (data-lo, data-hi) holding a ``line.whisker`` and two ``line.cap``.
    """
    width, height = _size(width, 640, 120), _size(height, 360, 100)
    label = f"Error bar chart of {y_label} against {x_label}"
    present = [(name, points) for name, points in ((n, _error_points(p)) for n, p in _items(groups)) if points]
    if not present:
        return _empty("error-bar-chart", width, height, label)
    drawn, hidden = present[:MAX_GROUPS], max(0, len(present) - MAX_GROUPS)
    legend = len(drawn) > 1 or hidden > 0
    box = _box(width, height, legend)
    xs = [p.x for _, points in drawn for p in points]
    x = _axis(xs, log=_use_log(xs, log_x))
    y = _axis([v for _, points in drawn for p in points for v in (p.lo, p.hi)])
    body = _axes(x, y, box, x_label, y_label)
    dodge = min(4.0, 24.0 / len(drawn))  # groups sharing an x sit side by side
    for i, (name, points) in enumerate(drawn):
        colour, offset = _colour(i), (i - (len(drawn) - 1) / 2) * dodge
        spots = [(p, x.at(p.x, box.left, box.right) + offset, y.at(p.mean, box.bottom, box.top)) for p in points]
        body.append(f'<g class="group" data-group="{_attr(name)}">')
        body.append(_polyline(name, colour, [f"{_px(px)},{_px(py)}" for _, px, py in spots], len(points)))
        for p, px, _ in spots:
            if p.spread <= 0:
                continue
            top, bottom = y.at(p.hi, box.bottom, box.top), y.at(p.lo, box.bottom, box.top)
            body.append(f'<g class="error-bar" data-group="{_attr(name)}" data-x="{_data(p.x)}" '
                        f'data-lo="{_data(p.lo)}" data-hi="{_data(p.hi)}" stroke="{colour}" stroke-width="1.2">'
                        f'<line class="whisker" x1="{_px(px)}" y1="{_px(top)}" x2="{_px(px)}" y2="{_px(bottom)}"/>'
                        f'<line class="cap" x1="{_px(px - 3)}" y1="{_px(top)}" x2="{_px(px + 3)}" y2="{_px(top)}"/>'
                        f'<line class="cap" x1="{_px(px - 3)}" y1="{_px(bottom)}" x2="{_px(px + 3)}" '
                        f'y2="{_px(bottom)}"/></g>')
        for p, px, py in spots:
            n_attr = f' data-n="{p.n}"' if p.n is not None else ""
            n_text = f" (n={p.n})" if p.n is not None else ""
            body.append(f'<circle class="point" data-group="{_attr(name)}" data-x="{_data(p.x)}" '
                        f'data-y="{_data(p.mean)}" data-spread="{_data(p.spread)}"{n_attr} cx="{_px(px)}" '
                        f'cy="{_px(py)}" r="3.5" fill="{colour}" stroke="#fff" stroke-width="0.8">'
                        f"<title>{_text(name)}: x={_short(p.x)}, y={_short(p.mean)} \u00b1 {_short(p.spread)}"
                        f"{n_text}</title></circle>")
        body.append("</g>")
    if legend:
        body += _legend([name for name, _ in drawn], box, hidden, "groups")
    label += f" ({'log' if x.log else 'linear'} x scale), {len(drawn)} group{'s' if len(drawn) != 1 else ''}"
    return _svg("error-bar-chart", width, height, label, body)


def histogram(bins: list[dict[str, Any]], *, x_label: str, width: float = 640, height: float = 320) -> str:
    """One ``rect.bar`` (data-lo, data-hi, data-count) per bin ``{"lo", "hi", "count"}``.

    Bars rise from a zero baseline, so their heights are proportional to the counts. Bins with a
    non-finite bound or count, or a negative count, are skipped.
    """
    width, height = _size(width, 640, 120), _size(height, 320, 100)
    label = f"Histogram of {x_label}"
    rows = []
    for b in bins if isinstance(bins, Iterable) else ():
        if not isinstance(b, Mapping):
            continue
        lo, hi, count = _finite(b.get("lo")), _finite(b.get("hi")), _finite(b.get("count"))
        if lo is None or hi is None or count is None or count < 0:
            continue
        rows.append((min(lo, hi), max(lo, hi), count))
    if not rows:
        return _empty("histogram", width, height, label)
    rows.sort()
    box = _box(width, height, legend=False)
    x = _axis([v for lo, hi, _ in rows for v in (lo, hi)])
    y = _axis([0.0, max(1.0, max(count for _, _, count in rows))])
    body = _axes(x, y, box, x_label, "count")
    base = y.at(0.0, box.bottom, box.top)
    body.append('<g class="bars">')
    for lo, hi, count in rows:
        left, right = x.at(lo, box.left, box.right), x.at(hi, box.left, box.right)
        bar_width = right - left - 1 if right - left > 3 else max(right - left, 1.0)
        top = y.at(count, box.bottom, box.top)
        body.append(f'<rect class="bar" data-lo="{_data(lo)}" data-hi="{_data(hi)}" data-count="{_data(count)}" '
                    f'x="{_px(left)}" y="{_px(top)}" width="{_px(bar_width)}" height="{_px(base - top)}" '
                    f'fill="{PALETTE[0]}"><title>[{_short(lo)}, {_short(hi)}): {_short(count)}</title></rect>')
    body.append("</g>")
    total = sum(count for _, _, count in rows)
    label += f": {len(rows)} bin{'s' if len(rows) != 1 else ''}, {_short(total)} values"
    return _svg("histogram", width, height, label, body)
