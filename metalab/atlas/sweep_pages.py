"""The sweep views' pages (curves, parallel coordinates, scatter, which parameters matter) and
plotly.js, served from the installed ``plotly`` package: nothing is fetched from the network."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .api import Atlas, bind
from .pages import render
from .query import where_text
from .sweep_api import AGGREGATES, importance_data, stepped_metrics

__all__ = ["PLOTLY_PATH", "sweep_routes"]

PLOTLY_PATH = "/static/vendor/plotly.min.js"
_BANDS = (("sd", "± one standard deviation"), ("ci95", "95% confidence interval"), ("minmax", "min to max"))


@functools.cache
def _plotly_js() -> Path:
    """plotly.min.js inside the installed plotly package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed: pip install plotly")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError("the installed plotly package has no package_data/plotly.min.js")
    return path


def plotly_js(request: Request) -> Response:
    return FileResponse(_plotly_js(), media_type="text/javascript",
                        headers={"cache-control": "public, max-age=86400"})


def _context(atlas: Atlas, request: Request) -> dict[str, Any]:
    experiment_id = request.path_params["experiment_id"]
    catalogue = atlas.index.catalogue(experiment_id)
    q = request.query_params
    return {"e": atlas.experiment(experiment_id), "catalogue": catalogue, "q": q, "where": where_text(q.getlist("where")),
            "params": list(catalogue.params.values()), "numeric": [f for f in catalogue.fields if f.numeric],
            "metrics": [f for f in catalogue.metrics.values() if f.numeric], "plotly": PLOTLY_PATH,
            "query": str(request.query_params)}


def curves_page(atlas: Atlas, request: Request) -> Response:
    context = _context(atlas, request)
    stepped = stepped_metrics(atlas, request.path_params["experiment_id"])
    return render("curves.html", **context, stepped=stepped, aggregates=AGGREGATES, bands=_BANDS)


def parallel_page(atlas: Atlas, request: Request) -> Response:
    return render("parallel.html", **_context(atlas, request))


def scatter_page(atlas: Atlas, request: Request) -> Response:
    return render("scatter.html", **_context(atlas, request))


def importance_page(atlas: Atlas, request: Request) -> Response:
    context = _context(atlas, request)
    metric = request.query_params.get("metric") or (context["metrics"][0].ref if context["metrics"] else "")
    result = importance_data(atlas, request.path_params["experiment_id"], request.query_params, metric) if metric else None
    return render("importance.html", **context, metric=metric, result=result)


def sweep_routes(atlas: Atlas) -> list[Route]:
    pages = {
        "/experiments/{experiment_id}/curves": curves_page,
        "/experiments/{experiment_id}/parallel": parallel_page,
        "/experiments/{experiment_id}/scatter": scatter_page,
        "/experiments/{experiment_id}/importance": importance_page,
    }
    return [Route(PLOTLY_PATH, plotly_js), *(Route(path, bind(handler, atlas)) for path, handler in pages.items())]
