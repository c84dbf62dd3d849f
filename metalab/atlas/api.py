"""Atlas's JSON API: everything the pages show, under ``/api/``, described by ``/api/openapi.json``.

Each endpoint is declared once with its parameters; the routes and the OpenAPI description are
both made from those declarations, so they cannot drift apart.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import QueryError
from . import files
from .asks import (
    bounded_int,
    conditions_from,
    differing,
    run_columns,
    runs_query,
    value_of,
)
from .index import Index
from .labels import labeller
from .records import find_record

__all__ = ["ENDPOINTS", "Atlas", "api_routes", "bind", "openapi"]

MAX_COMPARE = 10


LAG_SHOWN_FROM = 1.0  # seconds: a sweep's newest lines are always a pass (half a second) from the index


@dataclass(frozen=True)
class Atlas:
    """What every handler needs: the index, the files, and the indexer that follows them."""

    index: Index
    file_root: Path | None
    follower: Any = None  # store.indexer.IndexFollower, with a file_root

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        """The experiment as the index lists it, and how fresh its index is: ``index_lag`` says
        (in words) how far the index may be behind the files, or is None when it holds them all."""
        found = self.index.experiment(experiment_id)
        found["index_lag"] = self.index_lag(experiment_id)
        return found

    def index_lag(self, experiment_id: str | None = None) -> str | None:
        """How far the index is behind the files (one experiment's, or any), in words; None when
        up to date, or when this Atlas follows no files."""
        if self.follower is None:
            return None
        freshness = self.follower.freshness(experiment_id) if experiment_id else self.follower.overall()
        if freshness.error is None and (freshness.behind is None or freshness.behind < LAG_SHOWN_FROM):
            return None
        return freshness.text

    def labeller(self, experiment_id: str) -> Callable[[dict[str, Any]], str]:
        """A run to its short label (``labels``: the params the experiment varies, the replicate)."""
        description = self.index.experiment(experiment_id).get("description") or {}
        return labeller(description, self.index.catalogue(experiment_id).params)

    def root(self) -> Path:
        if self.file_root is None:
            raise FileNotFoundError("this Atlas was started without a file_root, so it has no files to show")
        return self.file_root

    def run(self, experiment_id: str, run_id: str) -> dict[str, Any]:
        """A run's row and what its record adds (steps, captured data, artifacts, log)."""
        rows = self.index.runs(experiment_id, [run_id])
        if not rows:
            raise LookupError(f"no run {run_id!r} in experiment {experiment_id!r}")
        run = rows[0]
        run.update(label=self.labeller(experiment_id)(run), steps={}, data={}, artifacts=[], data_files=[], log=None,
                   heartbeat=None)
        if self.file_root is not None:
            record = find_record(self.file_root, experiment_id, run_id)  # a run in progress: its latest line
            if record is not None:
                run.update(steps=record.steps, data=record.data, heartbeat=record.heartbeat)
            run["artifacts"] = files.list_artifacts(self.file_root, experiment_id, run_id)
            run["data_files"] = files.list_data(self.file_root, experiment_id, run_id)
            try:
                with files.open_log(self.file_root, experiment_id, run_id) as log:
                    run["log"] = {"size": os.fstat(log.fileno()).st_size}
            except FileNotFoundError:
                pass
        return run

    def compare(self, experiment_id: str, run_ids: list[str]) -> dict[str, Any]:
        catalogue = self.index.catalogue(experiment_id)
        if not 2 <= len(run_ids) <= MAX_COMPARE:
            raise QueryError(f"compare takes 2 to {MAX_COMPARE} runs (run=ID, repeated), not {len(run_ids)}")
        runs = self.index.runs(experiment_id, run_ids)
        missing = [run_id for run_id in run_ids if run_id not in {run["run_id"] for run in runs}]
        if missing:
            raise LookupError(f"no run {missing[0]!r} in experiment {experiment_id!r}")
        label = self.labeller(experiment_id)
        for run in runs:
            run["label"] = label(run)
        fields = catalogue.fields
        return {"runs": runs, "fields": [f.ref for f in fields], "differing": sorted(differing(runs, fields))}


# -- declarations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    where: str = "query"  # or "path"
    type: str = "string"  # or "integer"
    repeated: bool = False
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    path: str
    summary: str
    handler: Callable[[Atlas, Request], Response]
    params: tuple[Param, ...] = ()
    media: str = "application/json"


EXPERIMENT = Param("experiment_id", "the experiment's id", where="path", required=True)
RUN = Param("run_id", "the run's id", where="path", required=True)
NAME = Param("name", "a file name under the run's folder (may contain /)", where="path", required=True)
WHERE = Param("where", "a filter: conditions FIELD OP VALUE (OP: = != < <= > >= ~) or FIELD in (V, ...) / "
              "FIELD not in (V, ...), joined by and (also && or ;) and or (also ||), and binding tighter; "
              "not and parentheses group, e.g. `loss < 0.2 and (opt in (adam, sgd) or not lr = 0.1)`; "
              "quote a value ('..' or \"..\") that holds a keyword, comma or parenthesis; "
              "several are ANDed", repeated=True)
STATUS = Param("status", "only runs with this status: success, failed, running, or interrupted (stopped "
               "before it ended, or running without a heartbeat for a minute)")
RUNS_PARAMS = (
    EXPERIMENT, WHERE, STATUS,
    Param("sort", "the field to sort by (a param, a metric, or run_id, status, started_at, duration, replicate, seed)"),
    Param("order", "asc or desc"),
    Param("columns", "param and metric names to include (comma-separated or repeated)", repeated=True),
)

ENDPOINTS: list[Endpoint] = []


def endpoint(path: str, summary: str, *params: Param, media: str = "application/json") -> Callable:
    def register(handler: Callable[[Atlas, Request], Response]) -> Callable[[Atlas, Request], Response]:
        ENDPOINTS.append(Endpoint(path, summary, handler, params, media))
        return handler

    return register


# -- handlers ------------------------------------------------------------------------------------


@endpoint("/api/health", "200 when Atlas and its database answer, 503 otherwise")
def health(atlas: Atlas, request: Request) -> Response:
    if atlas.index.healthy():
        return JSONResponse({"status": "ok", "database": "ok"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)


@endpoint("/api/experiments", "every experiment: version, run counts by status, last activity",
          Param("search", "only experiments whose name or id contains this"))
def experiments(atlas: Atlas, request: Request) -> Response:
    return JSONResponse(atlas.index.experiments(request.query_params.get("search") or ""))


@endpoint("/api/experiments/{experiment_id}", "an experiment, its catalogue and a summary of each metric", EXPERIMENT)
def experiment(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    found = atlas.experiment(experiment_id)
    catalogue = atlas.index.catalogue(experiment_id)
    found["params"] = [{"name": f.name, "type": f.type} for f in catalogue.params.values()]
    found["metrics"] = [{"name": f.name, "type": f.type} for f in catalogue.metrics.values()]
    found["summaries"] = atlas.index.summaries(found, catalogue)
    return JSONResponse(found)


@endpoint("/api/experiments/{experiment_id}/runs", "a page of runs, sorted and filtered (keyset pagination)",
          *RUNS_PARAMS, Param("limit", "runs per page, 1 to 500", type="integer"),
          Param("cursor", "the next_cursor of the previous page"))
def runs(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    catalogue = atlas.index.catalogue(experiment_id)
    query = runs_query(experiment_id, catalogue, request.query_params)
    page, cursor = atlas.index.page(query)
    label = atlas.labeller(experiment_id)
    for run in page:
        run["label"] = label(run)
    return JSONResponse({"runs": page, "next_cursor": cursor, "sort": query.sort.ref,
                         "order": "desc" if query.descending else "asc"})


@endpoint("/api/experiments/{experiment_id}/runs.csv", "every matching run as CSV, streamed", *RUNS_PARAMS,
          media="text/csv")
def runs_csv(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    catalogue = atlas.index.catalogue(experiment_id)
    query = runs_query(experiment_id, catalogue, request.query_params)
    columns = run_columns(catalogue, request.query_params) if request.query_params.getlist("columns") else catalogue.fields
    head = ["run_id", "status", "replicate", "seed", "started_at", "duration", *(c.ref for c in columns)]

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(head)
        for number, run in enumerate(atlas.index.export(query), 1):
            writer.writerow([run["run_id"], run["status"], run["replicate"], run["seed"], run["started_at"],
                             run["duration"], *(_cell(value_of(run, c)) for c in columns)])
            if number % 500 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    filename = f"{experiment_id}-runs.csv".replace('"', "")
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{filename}"'})


@endpoint("/api/experiments/{experiment_id}/runs/{run_id}",
          "a run: params, metrics, stepped metrics, captured data, artifacts and its log's size", EXPERIMENT, RUN)
def run(atlas: Atlas, request: Request) -> Response:
    return JSONResponse(atlas.run(request.path_params["experiment_id"], request.path_params["run_id"]))


@endpoint("/api/experiments/{experiment_id}/runs/{run_id}/artifacts/{name}",
          "an artifact: the file, or with preview=1 a preview (text, JSON or image)", EXPERIMENT, RUN, NAME,
          Param("preview", "1 for a JSON preview instead of the file"))
def artifact(atlas: Atlas, request: Request) -> Response:
    p = request.path_params
    handle = files.open_artifact(atlas.root(), p["experiment_id"], p["run_id"], p["name"])
    return _file(handle, p["name"], request.query_params.get("preview") == "1")


@endpoint("/api/experiments/{experiment_id}/runs/{run_id}/data/{name}", "a captured data file (.npy or .json)",
          EXPERIMENT, RUN, NAME, Param("preview", "1 for a JSON preview instead of the file"))
def data(atlas: Atlas, request: Request) -> Response:
    p = request.path_params
    handle = files.open_data(atlas.root(), p["experiment_id"], p["run_id"], p["name"])
    return _file(handle, p["name"], request.query_params.get("preview") == "1")


@endpoint("/api/experiments/{experiment_id}/runs/{run_id}/log", "the end of a run's log (or all of it, download=1)",
          EXPERIMENT, RUN, Param("lines", "how many lines from the end, 1 to 10000", type="integer"),
          Param("download", "1 for the whole file"))
def log(atlas: Atlas, request: Request) -> Response:
    p = request.path_params
    try:
        handle = files.open_log(atlas.root(), p["experiment_id"], p["run_id"])
    except FileNotFoundError:
        raise FileNotFoundError(f"run {p['run_id']!r} has no log") from None
    if request.query_params.get("download") == "1":
        return _file(handle, f"{p['run_id']}.log", preview=False)
    with handle:
        return JSONResponse(files.tail(handle, lines=bounded_int(request.query_params, "lines", 200, 1, 10_000)))


@endpoint("/api/experiments/{experiment_id}/plot",
          "a metric against a parameter, grouped by another: mean, standard deviation and count per point",
          EXPERIMENT, Param("x", "a numeric param (or metric)", required=True),
          Param("y", "a numeric metric (or param)", required=True), Param("group", "a param to group by"), WHERE,
          STATUS)
def plot(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    return JSONResponse(plot_data(atlas, experiment_id, request))


def plot_data(atlas: Atlas, experiment_id: str, request: Request) -> dict[str, Any]:
    catalogue = atlas.index.catalogue(experiment_id)
    q = request.query_params
    x = catalogue.numeric_field(_required(q, "x"), "x")
    y = catalogue.numeric_field(_required(q, "y"), "y")
    group = catalogue.field(q["group"]) if q.get("group") else None
    groups = atlas.index.plot(experiment_id, x, y, group, conditions_from(q, catalogue))
    return {"x": x.ref, "y": y.ref, "group": group.ref if group else None, "groups": groups}


@endpoint("/api/experiments/{experiment_id}/histogram", "a histogram of a metric", EXPERIMENT,
          Param("field", "a numeric metric (or param)", required=True),
          Param("bins", "number of bins, 1 to 200", type="integer"), WHERE, STATUS)
def histogram(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    return JSONResponse(histogram_data(atlas, experiment_id, request))


def histogram_data(atlas: Atlas, experiment_id: str, request: Request) -> dict[str, Any]:
    catalogue = atlas.index.catalogue(experiment_id)
    q = request.query_params
    field_ = catalogue.numeric_field(_required(q, "field"), "a histogram")
    bins = bounded_int(q, "bins", 30, 1, 200)
    return {"field": field_.ref, "bins": atlas.index.histogram(experiment_id, field_, bins, conditions_from(q, catalogue))}


@endpoint("/api/experiments/{experiment_id}/compare", "two to ten runs side by side, with the fields that differ",
          EXPERIMENT, Param("run", "a run id (2 to 10 of them)", repeated=True, required=True))
def compare(atlas: Atlas, request: Request) -> Response:
    experiment_id = request.path_params["experiment_id"]
    return JSONResponse(atlas.compare(experiment_id, request.query_params.getlist("run")))


# -- helpers -------------------------------------------------------------------------------------


def _required(params: Any, name: str) -> str:
    value = params.get(name)
    if not value:
        raise QueryError(f"{name} is required")
    return value


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _file(handle: BinaryIO, name: str, preview: bool) -> Response:
    """An opened file as a preview or a download, read from that descriptor alone."""
    if preview:
        with handle:
            return JSONResponse(files.read_preview(handle, name))
    size = os.fstat(handle.fileno()).st_size
    filename = PurePosixPath(name).name
    # Served as a download: a stored HTML or SVG file must not run as this site's page.
    headers = {"content-length": str(size), "content-security-policy": "sandbox", "x-content-type-options": "nosniff",
               "content-disposition": f"attachment; filename*=utf-8''{quote(filename, safe='')}"}
    return StreamingResponse(_chunks(handle, size), media_type=files.media_type(name), headers=headers)


def _chunks(handle: BinaryIO, size: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The file's first ``size`` bytes (as many as Content-Length promised), then closed."""
    with handle:
        left = size
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data


def api_routes(atlas: Atlas) -> list[Route]:
    routes = [Route("/api/openapi.json", lambda request: JSONResponse(openapi()))]
    for ep in ENDPOINTS:
        path = ep.path.replace("{name}", "{name:path}")
        routes.append(Route(path, bind(ep.handler, atlas)))
    return routes


def bind(handler: Callable[[Atlas, Request], Response], atlas: Atlas) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:  # a plain function: Starlette runs it in a thread
        with atlas.index.snapshot():  # every read of one answer sees the index at one moment
            return handler(atlas, request)

    endpoint.__name__ = handler.__name__
    return endpoint


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint declared above."""
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        parameters = []
        for p in ep.params:
            schema: dict[str, Any] = {"type": p.type}
            if p.repeated:
                schema = {"type": "array", "items": schema}
            parameters.append({"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                               "description": p.description, "schema": schema,
                               **({"style": "form", "explode": True} if p.repeated else {})})
        ok = {"description": "OK", "content": {ep.media: {"schema": {} if ep.media != "text/csv" else {"type": "string"}}}}
        errors = {
            "400": {"description": "the request names a field, condition or path Atlas cannot accept"},
            "404": {"description": "no such experiment, run or file"},
        }
        if ep.path == "/api/health":
            errors = {"503": {"description": "the database does not answer"}}
        paths[ep.path] = {"get": {"summary": ep.summary, "operationId": ep.handler.__name__,
                                  "parameters": parameters, "responses": {"200": ok, **errors}}}
    return {"openapi": "3.1.0", "info": {"title": "metalab Atlas", "version": "1"}, "paths": paths}
