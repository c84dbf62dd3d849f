"""The Atlas web application: health, the experiment list (JSON and HTML)."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg_pool import ConnectionPool

from ..store.index_schema import INDEX_SCHEMA
from .settings import AtlasSettings

__all__ = ["create_app"]

_EXPERIMENTS_SQL = f"""
SELECT e.experiment_id, e.name, e.version,
       count(r.run_id)                               AS runs,
       count(r.run_id) FILTER (WHERE r.status = 'success') AS succeeded,
       count(r.run_id) FILTER (WHERE r.status = 'failed')  AS failed,
       greatest(e.updated_at, max(r.finished_at))    AS last_activity
FROM {INDEX_SCHEMA}.experiments e
LEFT JOIN {INDEX_SCHEMA}.runs r USING (experiment_id)
GROUP BY e.experiment_id
ORDER BY last_activity DESC, e.name
"""


def create_app(settings: AtlasSettings) -> FastAPI:
    """Build the app; the pool connects in the background, so Atlas starts before PostgreSQL."""
    pool = ConnectionPool(settings.conninfo(), min_size=1, max_size=4, open=False, name="atlas")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        yield
        pool.close()

    app = FastAPI(title="metalab Atlas", docs_url=None, redoc_url=None, lifespan=lifespan)
    if settings.token is not None:
        _require_token(app, settings.token.reveal())

    @app.get("/api/health")
    def health() -> JSONResponse:
        """200 only when PostgreSQL answers a query."""
        try:
            with pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception:  # any failure to reach the database means "not healthy"
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/api/experiments")
    def experiments() -> list[dict[str, Any]]:
        """Every indexed experiment with run counts by status; empty before any run."""
        return _list_experiments(pool)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _experiments_page(_list_experiments(pool))

    return app


TOKEN_COOKIE = "metalab_atlas_token"


def _require_token(app: FastAPI, token: str) -> None:
    """Every request shows the access token (as Jupyter does): ``Authorization: token T``,
    ``?token=T`` (which also sets a cookie, so links work afterwards), or that cookie."""
    import hmac

    from starlette.responses import JSONResponse as PlainJSON

    @app.middleware("http")
    async def check_token(request, call_next):  # type: ignore[no-untyped-def]
        header = request.headers.get("authorization", "")
        offered = (
            header[len("token "):] if header.lower().startswith("token ") else None
        ) or request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
        if not offered or not hmac.compare_digest(offered.encode(), token.encode()):
            return PlainJSON({"detail": "an access token is required; open the URL that `metalab tunnel` prints"},
                             status_code=403)  # fmt: skip
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response


def _list_experiments(pool: ConnectionPool) -> list[dict[str, Any]]:
    with pool.connection(timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{INDEX_SCHEMA}.experiments",)).fetchone()[0]
        if exists is None:
            return []
        rows = conn.execute(_EXPERIMENTS_SQL).fetchall()
    return [
        {
            "experiment_id": row[0],
            "name": row[1],
            "version": row[2],
            "runs": row[3],
            "succeeded": row[4],
            "failed": row[5],
            "last_activity": row[6].isoformat() if row[6] else None,
        }
        for row in rows
    ]


def _experiments_page(experiments: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(e[key]))}</td>" for key in ("name", "version", "runs", "succeeded", "failed"))
        + f"<td>{html.escape(e['last_activity'] or '')}</td></tr>"
        for e in experiments
    )
    body = (
        f"<table id='experiments'><thead><tr><th>Experiment</th><th>Version</th><th>Runs</th><th>Succeeded</th>"
        f"<th>Failed</th><th>Last activity</th></tr></thead><tbody>{rows}</tbody></table>"
        if experiments
        else "<p id='empty'>No experiments yet. Run one with <code>store=\"discover\"</code>.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Atlas · metalab</title></head>"
        f"<body><h1>Experiments</h1>{body}</body></html>"
    )
