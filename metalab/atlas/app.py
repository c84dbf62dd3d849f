"""The Atlas web application: pages, the JSON API, the access-token gate.

Starlette rather than FastAPI: the API's OpenAPI description is made from its own declarations
(api.py), and leaving out pydantic halves the start-up time (Atlas answers /api/health in well
under half a second).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import DatabaseUnavailable, QueryError, UnsafePath
from .api import Atlas, api_routes
from .index import Index
from .pages import HERE, page_routes, render_error
from .settings import AtlasSettings
from .sweep_pages import sweep_routes

__all__ = ["TOKEN_COOKIE", "create_app"]

TOKEN_COOKIE = "metalab_atlas_token"


def create_app(settings: AtlasSettings, *, served_as: str = "127.0.0.1") -> Starlette:
    """Build the app; the pool connects in the background, so Atlas starts before PostgreSQL.
    With a file_root, Atlas also keeps the index up with the files there (its indexer thread).
    ``served_as``: the address it listens on; requests must name it (or loopback, or this
    machine) in their Host header."""
    index = Index(settings)
    follower = index_follower(settings) if settings.file_root else None
    atlas = Atlas(index, Path(settings.file_root) if settings.file_root else None, follower)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        index.open()
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        index.close()

    middleware = [Middleware(ServerTiming), Middleware(KnownHostsOnly, hosts=served_names(served_as)),
                  Middleware(RefuseUnreadable)]
    if settings.token is not None:
        middleware.append(Middleware(TokenGate, token=settings.token.reveal()))
    routes = [*api_routes(atlas), *page_routes(atlas), *sweep_routes(atlas),
              Mount("/static", StaticFiles(directory=HERE / "static"))]
    handlers: dict[Any, Any] = {
        QueryError: _failure(400), UnsafePath: _failure(400), LookupError: _failure(404), OSError: _failure(404),
        DatabaseUnavailable: _failure(503),
    }
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers=handlers)


def index_follower(settings: AtlasSettings) -> Any:
    """The indexer that follows every experiment under the settings' file_root, over its own
    (writable) connection: Atlas's pool only reads."""
    from ..store.indexer import IndexFollower
    from ..store.locator import PostgresLocator
    from ..store.postgres import PostgresStore

    s = settings
    target = PostgresLocator(
        file_root=Path(s.file_root or "."), host=s.db_host, port=s.db_port, user=s.db_user, dbname=s.db_name,
        password=s.db_password, display=f"postgresql://{s.db_user}@{s.db_host}:{s.db_port}/{s.db_name}",
    )
    store = PostgresStore(target)
    return IndexFollower(store, store.file_store.experiment_ids, sort_indexes=True)


def _failure(status: int) -> Any:
    """An error a request caused, as one line: JSON under /api/, a page elsewhere."""

    def handle(request: Request, error: Exception) -> Response:
        message = str(error.args[0]) if error.args else type(error).__name__
        if isinstance(error, OSError) and (error.filename is not None or not isinstance(error, FileNotFoundError)):
            # the operating system's message names a server path: say what happened, not where
            message = "no such file" if isinstance(error, FileNotFoundError) else "that file cannot be read"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=status)
        return render_error(status, message)

    return handle


class ServerTiming:
    """``Server-Timing: app;dur=MS`` on every response: the time Atlas spent until the response
    started (what bench/atlas.py reports; browsers show it in their network panel)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - began) * 1000
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={took:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)


def served_names(address: str) -> frozenset[str]:
    """The names a request may call Atlas by: loopback's, this machine's and its address's (a
    tunnel's end is on loopback). Any other name reached this server through DNS rebinding."""
    import socket

    names = {"localhost", "127.0.0.1", "::1", address.strip("[]").lower()}
    try:
        hostname = socket.gethostname()
        names.update({hostname.lower(), socket.getfqdn().lower(), socket.gethostbyname(hostname)})
    except OSError:
        pass
    return frozenset(names)


def _host_name(header: str) -> str:
    """``Host: name[:port]`` (or ``[v6]:port``) as the bare, lower-case name."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


class KnownHostsOnly:
    """421 for a request whose Host header is not a name this Atlas is served as, as Jupyter
    refuses them: a web page whose name was made to resolve to 127.0.0.1 cannot read it.
    (Starlette's TrustedHostMiddleware answers 400 without saying why; this says which names.)"""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.hosts:
                detail = "this Atlas answers only when called by its own names: open the URL `metalab services up` printed"
                await JSONResponse({"detail": detail}, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RefuseUnreadable:
    """400 for a path or query that cannot be text (NUL, invalid UTF-8): PostgreSQL would refuse
    it later, as a server error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _readable(scope):
            await PlainTextResponse("the URL holds a NUL byte or is not UTF-8", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _readable(scope: Scope) -> bool:
    try:
        query = scope.get("query_string", b"").decode("ascii")
        texts = [scope["path"], *(value for pair in parse_qsl(query, errors="strict") for value in pair)]
        for text in texts:
            text.encode("utf-8")  # lone surrogates (undecodable bytes) fail here
            if "\x00" in text:
                return False
    except (UnicodeError, ValueError):
        return False
    return True


class TokenGate:
    """Every request shows the access token, as Jupyter does: ``Authorization: token T``, the
    ``metalab_atlas_token`` cookie, or ``?token=T`` (which sets the cookie; a page opened that
    way is redirected to its URL without the token, so the token leaves the address bar)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        from_query = request.query_params.get("token")
        offered = (header[6:] if header.lower().startswith("token ") else None) or from_query or request.cookies.get(
            TOKEN_COOKIE
        )
        if not offered or not hmac.compare_digest(offered.encode(), self.token):
            response: Response = JSONResponse(
                {"detail": "an access token is required: open the URL that `metalab services up` or `metalab tunnel` prints"},
                status_code=403,
            )
            await response(scope, receive, send)
            return
        if from_query and not scope["path"].startswith("/api/") and scope["method"] == "GET":
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token.decode(), httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
