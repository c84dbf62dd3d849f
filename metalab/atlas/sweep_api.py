"""The sweep views' JSON: curves of many runs, parallel coordinates, scatter, and which
parameters matter. Declared with ``api.endpoint`` like every endpoint (routes and OpenAPI from
one declaration); the pages draw them with plotly.js (static/sweeps.js)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import QueryError
from .api import EXPERIMENT, STATUS, WHERE, Atlas, Param, endpoint
from .asks import bounded_int, conditions_from
from .labels import params_label
from .query import Catalogue, Field
from .sweep_queries import STEPS, columns_sql, count_sql, curves_sql, variance_sql

__all__ = ["curves_data", "importance_data", "parallel_data", "scatter_data", "stepped_metrics"]

AGGREGATES = ("none", "replicates", "color")
MAX_CURVE_RUNS = 5000
MAX_COLUMN_RUNS = 100_000


class FastJSON(Response):
    """JSON by orjson: numpy arrays as they are, NaN as null, several times faster than the
    standard library for the hundreds of thousands of numbers a view sends (measured: the curves'
    and parallel coordinates' budgets)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        import orjson

        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def floats(packed: bytes | None, count: int | None = None) -> Any:
    """Packed big-endian float8s (``float8send``) as a numpy array; ``None`` with a ``count``:
    0, 1, ..., count - 1 (how the index stores steps that are just that)."""
    import numpy as np

    if packed is None:
        return np.arange(count or 0, dtype=float)
    return np.frombuffer(packed, dtype=">f8").astype(float)


def float_array(sent: bytes | None) -> Any:
    """``array_send`` of a one-dimensional float8[] without NULLs, as a numpy array."""
    import numpy as np

    if not sent:
        return np.zeros(0)
    count = int.from_bytes(sent[12:16], "big") if int.from_bytes(sent[0:4], "big") else 0
    # header: dimensions, has-nulls, element type, then length and lower bound of the dimension
    items = np.frombuffer(sent, dtype=[("size", ">i4"), ("value", ">f8")], offset=20 if count else 12, count=count)
    return items["value"].astype(float)


def _rows(atlas: Atlas, statement: str, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return atlas.index.rows(statement, args, binary=True)  # packed floats and arrays, without text


def stepped_metrics(atlas: Atlas, experiment_id: str) -> list[str]:
    """The metrics recorded with steps (as the first few thousand series say: a bounded look)."""
    statement = f"SELECT DISTINCT name FROM (SELECT name FROM {STEPS} WHERE experiment_id = %(e)s LIMIT 5000) s ORDER BY 1"
    return [name for (name,) in _rows(atlas, statement, {"e": experiment_id})]


def _order(value: Any) -> tuple:
    """Numbers before text, each in its own order (values of one parameter may mix types)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, str(value))


def _param(catalogue: Catalogue, ref: str | None, role: str) -> Field | None:
    if not ref:
        return None
    field = catalogue.field(ref)
    if field.kind != "param":
        raise QueryError(f"{role} takes a parameter; {field.ref} is a {field.kind}")
    return field


def _varying(catalogue: Catalogue, runs: Sequence[tuple[Any, ...]]) -> list[str]:
    """The parameters whose values differ among ``runs`` (rows with params third)."""
    return [name for name in catalogue.params if len({repr(row[2].get(name)) for row in runs}) > 1]


@endpoint("/api/experiments/{experiment_id}/curves",
          "a stepped metric of many runs: one series per run or aggregated (mean and a band), reduced to `points`",
          EXPERIMENT, Param("metric", "a metric recorded with steps", required=True), WHERE, STATUS,
          Param("color", "a param: one colour per value"), Param("facet", "a param: one chart per value"),
          Param("aggregate", "none (a line per run), replicates (per parameter combination) or color (per colour)"),
          Param("band", "sd, ci95 or minmax"), Param("points", "points per series, 2 to 2000", type="integer"),
          Param("limit", f"runs at most, 1 to {MAX_CURVE_RUNS}", type="integer"),
          Param("run", "only these run ids (repeated)", repeated=True))
def curves(atlas: Atlas, request: Request) -> Response:
    return FastJSON(curves_data(atlas, request.path_params["experiment_id"], request.query_params))


@dataclass(frozen=True)
class CurvesAsk:
    """What a curves request asks, checked against the catalogue."""

    metric: str
    color: Field | None
    facet: Field | None
    aggregate: str
    band: str

    @classmethod
    def read(cls, catalogue: Catalogue, q: Any) -> CurvesAsk:
        from .sweeps import BANDS

        metric = q.get("metric") or ""
        if metric not in catalogue.metrics:
            raise QueryError(f"metric must name a metric of this experiment ({', '.join(catalogue.metrics) or 'none'}), not {metric!r}")
        aggregate, band = q.get("aggregate") or "none", q.get("band") or "sd"
        if aggregate not in AGGREGATES:
            raise QueryError(f"aggregate is one of {', '.join(AGGREGATES)}, not {aggregate!r}")
        if band not in BANDS:
            raise QueryError(f"band is one of {', '.join(BANDS)}, not {band!r}")
        return cls(metric, _param(catalogue, q.get("color"), "color"), _param(catalogue, q.get("facet"), "facet"),
                   aggregate, band)

    def value(self, params: Mapping[str, Any], field: Field | None) -> Any:
        return params.get(field.name) if field else None

    def group(self, run_id: str, params: Mapping[str, Any], names: Sequence[str]) -> Hashable:
        """The runs one series aggregates: itself, its parameter combination, or its colour and facet."""
        if self.aggregate == "none":
            return run_id
        fields = names if self.aggregate == "replicates" else [f.name for f in (self.color, self.facet) if f]
        return tuple(repr(params.get(name)) for name in fields)


def curves_data(atlas: Atlas, experiment_id: str, q: Any) -> dict[str, Any]:
    from .sweeps import RunCurve, curves

    catalogue = atlas.index.catalogue(experiment_id)
    ask = CurvesAsk.read(catalogue, q)
    limit = bounded_int(q, "limit", 1000, 1, MAX_CURVE_RUNS)
    statement, args = curves_sql(experiment_id, ask.metric, conditions_from(q, catalogue), limit, q.getlist("run") or None)
    rows = _rows(atlas, statement, args)
    truncated, rows = len(rows) > limit, rows[:limit]
    varying = _varying(catalogue, rows)
    names = varying if ask.aggregate != "color" else [f.name for f in (ask.color, ask.facet) if f]
    run_label = atlas.labeller(experiment_id)
    ranges: dict[int, Any] = {}  # steps 0..n-1: one array per length, so runs sharing it need no comparing
    runs = []
    for run_id, replicate, params, packed_steps, packed_vals in rows:
        values = floats(packed_vals)
        steps = floats(packed_steps) if packed_steps is not None else ranges.setdefault(len(values), floats(None, len(values)))
        runs.append(RunCurve(run_id=run_id, steps=steps, values=values, group=ask.group(run_id, params, list(catalogue.params)),
                             color=ask.value(params, ask.color), facet=ask.value(params, ask.facet),
                             label=run_label({"run_id": run_id, "params": params, "replicate": replicate})
                             if ask.aggregate == "none" else params_label(params, names)))
    series = curves(runs, points=bounded_int(q, "points", 400, 2, 2000), aggregate=ask.aggregate != "none", band=ask.band)
    series.sort(key=lambda s: (_order(s["facet"]), _order(s["color"]), s["label"]))  # a stable legend
    return {"metric": ask.metric, "aggregate": ask.aggregate, "band": ask.band if ask.aggregate != "none" else None,
            "color": ask.color.name if ask.color else None, "facet": ask.facet.name if ask.facet else None,
            "runs": len(rows), "truncated": truncated, "varying": varying, "series": series}


@endpoint("/api/experiments/{experiment_id}/parallel",
          "every parameter and a metric over the matching runs, column by column, for parallel coordinates",
          EXPERIMENT, Param("metric", "a numeric metric"), WHERE, STATUS,
          Param("limit", f"runs at most, 1 to {MAX_COLUMN_RUNS} (by run id: an unbiased sample)", type="integer"))
def parallel(atlas: Atlas, request: Request) -> Response:
    return FastJSON(parallel_data(atlas, request.path_params["experiment_id"], request.query_params))


def parallel_data(atlas: Atlas, experiment_id: str, q: Any) -> dict[str, Any]:
    catalogue = atlas.index.catalogue(experiment_id)
    metrics = [catalogue.numeric_field(q["metric"], "parallel coordinates")] if q.get("metric") else [
        f for f in catalogue.metrics.values() if f.numeric][:1]
    fields = [*catalogue.params.values(), *metrics]
    return _columns(atlas, experiment_id, q, fields, bounded_int(q, "limit", 10_000, 1, MAX_COLUMN_RUNS))


@endpoint("/api/experiments/{experiment_id}/scatter", "a metric against a parameter or another metric, run by run",
          EXPERIMENT, Param("x", "a numeric param or metric", required=True),
          Param("y", "a numeric metric or param", required=True), Param("color", "a param or metric to colour by"),
          WHERE, STATUS, Param("limit", f"runs at most, 1 to {MAX_COLUMN_RUNS}", type="integer"))
def scatter(atlas: Atlas, request: Request) -> Response:
    return FastJSON(scatter_data(atlas, request.path_params["experiment_id"], request.query_params))


def scatter_data(atlas: Atlas, experiment_id: str, q: Any) -> dict[str, Any]:
    catalogue = atlas.index.catalogue(experiment_id)
    x = catalogue.numeric_field(q.get("x") or "", "x")
    y = catalogue.numeric_field(q.get("y") or "", "y")
    extra = [catalogue.field(q["color"])] if q.get("color") else []
    params = [f for f in catalogue.params.values() if f not in (x, y, *extra)]
    return _columns(atlas, experiment_id, q, [x, y, *extra, *params], bounded_int(q, "limit", 10_000, 1, MAX_COLUMN_RUNS))


def _columns(atlas: Atlas, experiment_id: str, q: Any, fields: list[Field], limit: int) -> dict[str, Any]:
    catalogue = atlas.index.catalogue(experiment_id)
    conditions = conditions_from(q, catalogue)
    ((total,),) = _rows(atlas, *count_sql(experiment_id, conditions))
    sample = limit if total > limit else None
    count, joined, replicates, *values = _rows(atlas, *columns_sql(experiment_id, fields, conditions, sample))[0]
    run_ids = joined.split("\n") if joined is not None else []
    if len(run_ids) != count:  # an id with a newline in it: the ids as an array instead
        _, run_ids, replicates, *values = _rows(atlas, *columns_sql(experiment_id, fields, conditions, sample,
                                                                    joined_ids=False))[0]
    columns = [{"ref": f.ref, "name": f.name, "kind": f.kind, "numeric": f.numeric,
                "values": float_array(v) if f.numeric else list(v or [])} for f, v in zip(fields, values)]
    return {"total": total, "runs": len(run_ids or []), "run_ids": list(run_ids or []),
            "replicates": list(replicates or []), "columns": columns}


@endpoint("/api/experiments/{experiment_id}/importance",
          "which parameters matter: each one's share of a metric's variance (eta squared), the replicates' "
          "and the interactions'", EXPERIMENT, Param("metric", "a numeric metric", required=True), WHERE, STATUS)
def importance(atlas: Atlas, request: Request) -> Response:
    q = request.query_params
    return FastJSON(importance_data(atlas, request.path_params["experiment_id"], q, q.get("metric") or ""))


def importance_data(atlas: Atlas, experiment_id: str, q: Any, metric_ref: str) -> dict[str, Any]:
    """``metric_ref``'s shares of variance over the runs ``q``'s filters select."""
    from .sweeps import importance as shares_of

    catalogue = atlas.index.catalogue(experiment_id)
    metric = catalogue.numeric_field(metric_ref, "importance")
    if metric.kind != "metric":
        raise QueryError(f"importance takes a metric; {metric.ref} is a {metric.kind}")
    params = list(catalogue.params.values())
    statement, args = variance_sql(experiment_id, metric, params, conditions_from(q, catalogue))
    groups: dict[str, list[tuple[int, float, float]]] = {p.name: [] for p in params}
    cells: list[tuple[int, float, float]] = []
    total = (0, 0.0, 0.0)
    everything = (1 << len(params)) - 1
    for bits, count, mean, variance, *_ in _rows(atlas, statement, args):
        row = (int(count), float(mean), float(variance or 0.0))
        if bits == everything:
            total = row
        elif bits == 0:
            cells.append(row)
        else:  # one parameter grouped: its bit is clear (the first parameter's is the highest)
            groups[params[len(params) - (everything ^ bits).bit_length()].name].append(row)
    if len(params) == 1:  # its own set and the set of every parameter are the same set
        groups[params[0].name] = cells
    shares = shares_of(groups, cells, total)
    return {"metric": metric.name, "runs": total[0],
            "shares": [{"source": s.source, "share": s.share, "groups": s.groups} for s in shares]}
