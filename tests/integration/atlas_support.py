"""A real Atlas over a real index for the Atlas tests: a throwaway database on the suite's
PostgreSQL, experiments written by metalab.run() through PostgresStore, and ``python -m
metalab.atlas`` serving them on loopback (as ``metalab services up`` starts it)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest

import metalab
from metalab.atlas.settings import AtlasSettings, settings_document
from metalab.net import free_port
from metalab.procs import stop_child
from metalab.secret import Secret

REPO = Path(__file__).resolve().parents[2]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5"
    "d6d2a50000000049454e44ae426082"
)  # a 1x1 PNG


@metalab.operation
def probe(params, seeds, capture):
    """Known values: loss = lr * width (+ replicate / 1000); lr = 0.5 fails."""
    if params["lr"] == 0.5:
        capture.log("about to fail")
        raise RuntimeError("lr too large")
    loss = params["lr"] * params["width"] + seeds.replicate / 1000
    for step in range(5):
        capture.metric("loss", loss * (5 - step), step=step)
    capture.metric("final", loss)
    capture.data("shape", {"width": params["width"]})
    capture.artifact("notes.txt", f"notes for lr={params['lr']}\nsecond line\n".encode())
    capture.artifact("config.json", json.dumps(params).encode())
    capture.artifact("dot.png", PNG)
    capture.log(f"lr={params['lr']} width={params['width']} final={loss}")


PROBE = metalab.Experiment(name="probe", version="1", operation=probe,
                           params=metalab.grid(lr=[0.01, 0.1, 0.5], width=[1, 2, 4], opt=["sgd", "adam"]),
                           seeds=metalab.seeds(base=5, replicates=2))


def tour_experiment() -> metalab.Experiment:
    """examples/atlas/sweep.py's experiment (the one the README points researchers to)."""
    spec = importlib.util.spec_from_file_location("atlas_tour_example", REPO / "examples/atlas/sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["atlas_tour_example"] = module
    spec.loader.exec_module(module)
    return module.exp


@dataclasses.dataclass(kw_only=True)
class Site:
    """A running Atlas and what it serves."""

    url: str
    database: str
    locator: str = dataclasses.field(repr=False)  # the store, with the password
    file_root: Path
    log_file: Path
    password: str
    token: str | None
    process: subprocess.Popen
    probe_records: dict[str, Any]
    seen: list[str] = dataclasses.field(default_factory=list)  # every body served, for the secrets check

    def get(self, path: str, params: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        url = self.url + path + (("?" + urlencode(params, doseq=True)) if params else "")
        request = urllib.request.Request(url, headers=headers or {})
        if self.token and "authorization" not in {k.lower() for k in (headers or {})}:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, head, body = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, head, body = error.code, dict(error.headers), error.read()
        self.seen.append(body.decode("utf-8", "replace"))
        return status, {k.lower(): v for k, v in head.items()}, body

    def json(self, path: str, params: Any = None, status: int = 200) -> Any:
        code, _, body = self.get(path, params)
        assert code == status, (code, body[:500])
        return json.loads(body)

    def runs_path(self, experiment_id: str) -> str:
        return f"/api/experiments/{quote(experiment_id, safe='')}/runs"


def wait_healthy(url: str, process: subprocess.Popen, token: str | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url + "/api/health", headers={"Authorization": f"token {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"Atlas did not become healthy (exit code {process.poll()})")
        time.sleep(0.05)


def start_atlas(settings: AtlasSettings, log_file: Path, host: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    port = free_port(host)
    with log_file.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "metalab.atlas", "--host", host, "--port", str(port)],
                                   stdin=subprocess.PIPE, stdout=log, stderr=log, text=True)
    process.stdin.write(settings_document(settings) + "\n")
    process.stdin.close()
    return process, f"http://{host}:{port}"


def stop(process: subprocess.Popen) -> None:
    stop_child(process, kill_after=10)


def settings_for(pg_server: Any, database: str, file_root: Path, token: str | None = None,
                 port: int | None = None) -> AtlasSettings:
    return AtlasSettings(db_host=pg_server.host, db_port=port or pg_server.port, db_user=pg_server.user,
                         db_name=database, db_password=Secret(pg_server.password), file_root=str(file_root),
                         token=Secret(token) if token else None)


def records_of(experiment: metalab.Experiment) -> Callable[[str], dict[str, Any]]:
    """An ``atlas_over`` writer: ``experiment`` run into the store, its records by run id."""

    def write(locator: str) -> dict[str, Any]:
        return {r.run_id: r for r in metalab.run(experiment, store=locator, progress=False).result()}

    return write


@contextlib.contextmanager
def atlas_over(pg_server: Any, work: Path, write: Callable[[str], dict[str, Any]]) -> Iterator[Site]:
    """A throwaway database on the suite's PostgreSQL, the runs ``write(locator)`` puts in it
    (it returns the records the Site keeps), and ``python -m metalab.atlas`` serving them; the
    server and the database are gone afterwards."""
    name = f"atlas_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{pg_server.user}"')
    file_root = work / "file_root"
    locator = (f"postgresql://{pg_server.user}:{pg_server.password}@{pg_server.host}:{pg_server.port}/{name}"
               f"?file_root={file_root}")
    process = None
    try:
        records = write(locator)
        log_file = work / "atlas.log"
        process, url = start_atlas(settings_for(pg_server, name, file_root), log_file)
        wait_healthy(url, process)
        yield Site(url=url, database=name, locator=locator, file_root=file_root, log_file=log_file,
                   password=pg_server.password, token=None, process=process, probe_records=records)
    finally:
        if process is not None:
            stop(process)
        with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def site(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Atlas over two experiments: PROBE (known values, some failures, artifacts) and the tour example."""

    def write(locator: str) -> dict[str, Any]:
        records = {record.run_id: record for record in metalab.run(PROBE, store=locator, progress=False).result()}
        metalab.run(tour_experiment(), store=locator, progress=False)
        return records

    with atlas_over(pg_server, tmp_path_factory.mktemp("atlas"), write) as found:
        yield found


def screenshots_dir() -> Path:
    """Where the browser test keeps its screenshots (CI can pick them up from here)."""
    directory = Path(os.environ.get("METALAB_SCREENSHOTS", REPO / "test-screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# -- a real browser: Playwright driving Debian's Chromium ---------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, url: str) -> Iterator[Any]:
    """A page on ``url`` (1280x900) that fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert errors == []  # no script error on any page


def shot(page: Any, name: str) -> None:
    path = screenshots_dir() / f"atlas-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
