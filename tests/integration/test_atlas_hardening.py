"""Atlas against a run that attacks it from inside file_root, and a web page that attacks it
through DNS rebinding: the real Atlas process, real files, a real race."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from atlas_support import PROBE, Site

pytestmark = pytest.mark.integration

RACE_SECONDS = 20.0

# Swaps ``path`` between a plain file and a symlink to ``secret`` as fast as it can, each swap
# atomic (rename over it), as a run's code could while Atlas serves the file.
SWAPPER = textwrap.dedent("""
    import os, sys, time
    path, secret, plain, seconds = sys.argv[1], sys.argv[2], sys.argv[3].encode(), float(sys.argv[4])
    link, copy = path + ".swap-link", path + ".swap-file"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for stale in (link, copy):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        os.symlink(secret, link)
        os.replace(link, path)
        with open(copy, "wb") as handle:
            handle.write(plain)
        os.replace(copy, path)
""")


def get(site: Site, path: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(site.url + path, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except http.client.IncompleteRead as cut:  # the file changed under the server: what did it send?
        return 200, cut.partial


def plant_password(site: Site) -> tuple[str, Path]:
    """A fresh password in ``file_root/services/postgres.password``, as the services keep it."""
    secret = "pw-" + secrets.token_hex(16)
    path = site.file_root / "services" / "postgres.password"
    path.parent.mkdir(exist_ok=True)
    path.write_text(secret + "\n")
    return secret, path


def a_successful_run(site: Site):
    return next(r for r in site.probe_records.values() if r.status == "success")


def test_no_download_preview_page_or_log_gives_the_password_while_a_run_swaps_symlinks(site: Site) -> None:
    secret, password_file = plant_password(site)
    run = a_successful_run(site)
    experiment = site.file_root / PROBE.experiment_id
    artifact = experiment / "artifacts" / run.run_id / "notes.txt"
    log = experiment / "logs" / f"{run.run_id}.log"
    swappers = [
        subprocess.Popen([sys.executable, "-c", SWAPPER, str(artifact), str(password_file),
                          "plain artifact\n", str(RACE_SECONDS)]),
        subprocess.Popen([sys.executable, "-c", SWAPPER, str(log), "../../services/postgres.password",
                          "plain log\n", str(RACE_SECONDS)]),
    ]
    base = f"/api/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}"
    paths = [f"{base}/artifacts/notes.txt", f"{base}/artifacts/notes.txt?preview=1", f"{base}/log",
             f"{base}/log?download=1", f"/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}/artifacts/notes.txt",
             f"/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}", base]
    served = leaks = refused = 0
    try:
        while any(swapper.poll() is None for swapper in swappers):
            for path in paths:
                status, body = get(site, path)
                leaks += secret.encode() in body
                served += status == 200 and b"plain" in body
                refused += status in (400, 404)
    finally:
        for swapper in swappers:
            swapper.wait(timeout=30)
    assert leaks == 0
    assert served > 100 and refused > 10, (served, refused)  # both sides of the race were met, many times


@pytest.mark.parametrize("host", ["rebind.evil.example", "rebind.evil.example:8000", "127.0.0.1.evil.example",
                                  "localhost.evil.example"])
def test_a_host_header_atlas_is_not_served_as_is_refused(site: Site, host: str) -> None:
    for path in ("/", "/api/experiments", f"/api/experiments/{quote(PROBE.experiment_id)}", "/api/health"):
        status, body = get(site, path, host=host)
        assert status == 421, (path, status)
        assert "own names" in json.loads(body)["detail"] and PROBE.experiment_id.encode() not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "{port}", "{hostname}"])
def test_the_names_atlas_is_served_as_are_answered(site: Site, host: str) -> None:
    port = site.url.rsplit(":", 1)[1]
    name = host.format(port=f"127.0.0.1:{port}", hostname=os.uname().nodename)
    status, body = get(site, "/api/experiments", host=name)
    assert status == 200 and PROBE.experiment_id in {e["experiment_id"] for e in json.loads(body)}


def test_a_fifo_planted_as_an_artifact_is_refused_at_once(site: Site) -> None:
    """A FIFO planted as an artifact is no file: refused without hanging the server."""
    run = a_successful_run(site)
    fifo = site.file_root / PROBE.experiment_id / "artifacts" / run.run_id / "pipe"
    os.mkfifo(fifo)
    try:
        began = time.monotonic()
        status, _ = get(site, f"/api/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}/artifacts/pipe")
        assert status == 404 and time.monotonic() - began < 5
    finally:
        fifo.unlink()


def test_a_hard_link_to_the_password_is_refused(site: Site) -> None:
    secret, password_file = plant_password(site)
    run = a_successful_run(site)
    linked = site.file_root / PROBE.experiment_id / "artifacts" / run.run_id / "linked.txt"
    os.link(password_file, linked)
    try:
        for suffix in ("", "?preview=1"):
            status, body = get(site, f"/api/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}/artifacts/linked.txt{suffix}")
            assert status == 400 and secret.encode() not in body
        status, body = get(site, f"/api/experiments/{quote(PROBE.experiment_id)}/runs/{run.run_id}")
        assert status == 200 and b"linked.txt" not in body and secret.encode() not in body
    finally:
        linked.unlink()
