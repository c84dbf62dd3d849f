"""Atlas's pages: server-rendered HTML from the same reads as the API (templates/, static/)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import charts, files
from .api import Atlas, bind, histogram_data, plot_data
from .asks import differing, run_columns, runs_query, value_of
from .query import COLUMNS, STATUSES, Field, where_text

__all__ = ["page_routes", "render", "render_error"]

HERE = Path(__file__).parent


def _number(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant figures, the rest as they are."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if value is None:
        return ""
    return str(value)


@functools.cache
def _templates() -> Any:
    """The template environment, built at the first page (Atlas answers /api/health sooner)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(num=_number, seg=lambda s: quote(str(s), safe=""), path=lambda s: quote(str(s), safe="/"))
    env.globals.update(value_of=value_of)
    return env


def render(template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates().get_template(template).render(**context), status_code=status)


def render_error(status: int, message: str) -> HTMLResponse:
    return render("error.html", status, status_code=status, message=message)


def _query(request: Request, **changes: Any) -> str:
    """This page's query string with some parameters replaced (None removes one)."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None:
            continue
        pairs.extend((key, item) for item in (value if isinstance(value, list) else [value]))
    return urlencode(pairs)


# -- pages ---------------------------------------------------------------------------------------


def experiments_page(atlas: Atlas, request: Request) -> Response:
    search = request.query_params.get("q") or ""
    return render("experiments.html", experiments=atlas.index.experiments(search), search=search,
                   index_lag=atlas.index_lag())


def experiment_page(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    experiment = atlas.experiment(experiment_id)
    catalogue = atlas.index.catalogue(experiment_id)
    summaries = {s["name"]: s for s in atlas.index.summaries(experiment, catalogue)}
    return render("experiment.html", e=experiment, catalogue=catalogue, summaries=summaries)


STATUS_CLASS = {"success": "ok", "running": "live", "interrupted": "muted"}  # else "bad"


def runs_rows(experiment_id: str, runs: list[dict[str, Any]], columns: list[Field],
              label: Callable[[dict[str, Any]], str] | None = None) -> Markup:
    """The runs table's rows: written here rather than in the template, because this is the part
    of a page that grows with its size (a 50-row page renders in a fifth of the time). Each run
    is named by ``label`` (the id on hover and in the link)."""
    if not runs:
        return Markup(f'<tr><td colspan="{len(columns) + 3}" id="no-runs">No runs match.</td></tr>')
    base = f"/experiments/{quote(experiment_id, safe='')}/runs/"
    refs = [escape(field.ref) for field in columns]
    rows = []
    for run in runs:
        run_id = escape(run["run_id"])
        status = escape(run["status"])
        name = escape(label(run) if label is not None else run["run_id"][:10])
        cells = "".join(f'<td class="n" data-field="{ref}">{escape(_number(value_of(run, field)))}</td>'
                        for ref, field in zip(refs, columns))
        rows.append(
            f'<tr data-run="{run_id}" data-status="{status}"><td><input type="checkbox" name="run" value="{run_id}" '
            f'aria-label="compare {name}"></td><td><a class="run-label" href="{base}{quote(run["run_id"], safe="")}" '
            f'title="{run_id}">{name}</a></td><td class="{STATUS_CLASS.get(run["status"], "bad")}">{status}</td>'
            f"{cells}</tr>"
        )
    return Markup("\n".join(rows))


def runs_page(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    experiment = atlas.experiment(experiment_id)
    catalogue = atlas.index.catalogue(experiment_id)
    columns = run_columns(catalogue, request.query_params)
    query = runs_query(experiment_id, catalogue, request.query_params)
    runs, cursor = atlas.index.page(query)
    q = request.query_params
    order = "desc" if query.descending else "asc"
    return render(
        "runs.html", e=experiment, catalogue=catalogue, columns=columns,
        rows=runs_rows(experiment_id, runs, columns, atlas.labeller(experiment_id)), query=query,
        statuses=STATUSES, sort_columns=list(COLUMNS),
        # the live refresh asks for the sort this page applied (a default sort can change as the
        # catalogue grows: the Sort box must keep saying what the table shows)
        refresh_url=f"?{_query(request, sort=query.sort.ref, order=order)}",
        where=where_text(q.getlist("where")), status=q.get("status") or "",
        next_url=f"?{_query(request, cursor=cursor)}" if cursor else None,
        first_url=f"?{_query(request, cursor=None)}" if q.get("cursor") else None,
        csv_url=f"/api/experiments/{quote(experiment_id, safe='')}/runs.csv?{_query(request, cursor=None)}",
        sort_url=lambda field: "?" + _query(request, cursor=None, sort=field.ref, order=(
            "desc" if query.sort == field and not query.descending else "asc")),
        chosen={field.ref for field in columns},
    )


def run_page(atlas: Atlas, request: Request) -> Response:
    experiment_id, run_id = request.path_params["experiment_id"], request.path_params["run_id"]
    experiment = atlas.experiment(experiment_id)
    run = atlas.run(experiment_id, run_id)
    steps = {name: [(s, v) for s, v in points] for name, points in run["steps"].items()}
    chart = Markup(charts.line_chart(steps, x_label="step", y_label="value")) if steps else None
    log = None
    if run["log"] is not None and atlas.file_root is not None:
        try:
            with files.open_log(atlas.file_root, experiment_id, run_id) as handle:
                log = files.tail(handle, lines=200)
        except FileNotFoundError:
            run["log"] = None  # gone since it was measured: the page still opens
    error = (run.get("error") or "").rstrip()
    headline = error.splitlines()[-1] if error else None  # the exception, as its traceback ends
    steps_so_far = max((len(points) for points in run["steps"].values()), default=0)
    return render("run.html", e=experiment, run=run, chart=chart, log=log, headline=headline,
                  steps_so_far=steps_so_far, live=run["status"] == "running")


def artifact_page(atlas: Atlas, request: Request) -> Response:
    p = request.path_params
    experiment = atlas.experiment(p["experiment_id"])
    with files.open_artifact(atlas.root(), p["experiment_id"], p["run_id"], p["name"]) as handle:
        preview = files.read_preview(handle, p["name"])
    return render("artifact.html", e=experiment, run_id=p["run_id"], name=p["name"], preview=preview)


def plot_page(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    experiment = atlas.experiment(experiment_id)
    catalogue = atlas.index.catalogue(experiment_id)
    q = request.query_params
    plot = histogram = None
    if q.get("x") and q.get("y"):
        data = plot_data(atlas, experiment_id, request)
        label = f"{data['y']} (mean ± sd)"
        plot = Markup(charts.error_bar_chart(data["groups"], x_label=data["x"], y_label=label))
    if q.get("field"):
        data = histogram_data(atlas, experiment_id, request)
        histogram = Markup(charts.histogram(data["bins"], x_label=data["field"]))
    numeric = [f for f in catalogue.fields if f.numeric]
    return render("plot.html", e=experiment, catalogue=catalogue, numeric=numeric, q=q, plot=plot,
                   histogram=histogram, where=where_text(q.getlist("where")))


def compare_page(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    experiment = atlas.experiment(experiment_id)
    result = atlas.compare(experiment_id, request.query_params.getlist("run"))
    catalogue = atlas.index.catalogue(experiment_id)
    fields = catalogue.fields
    from .sweep_api import stepped_metrics
    from .sweep_pages import PLOTLY_PATH

    return render("compare.html", e=experiment, runs=result["runs"], fields=fields,
                  differs=differing(result["runs"], fields), stepped=stepped_metrics(atlas, experiment_id),
                  plotly=PLOTLY_PATH)


def page_routes(atlas: Atlas) -> list[Route]:
    pages = {
        "/": experiments_page,
        "/experiments/{experiment_id}": experiment_page,
        "/experiments/{experiment_id}/runs": runs_page,
        "/experiments/{experiment_id}/runs/{run_id}": run_page,
        "/experiments/{experiment_id}/runs/{run_id}/artifacts/{name:path}": artifact_page,
        "/experiments/{experiment_id}/plot": plot_page,
        "/experiments/{experiment_id}/compare": compare_page,
    }
    return [Route(path, bind(handler, atlas)) for path, handler in pages.items()]

