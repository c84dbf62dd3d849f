"""Atlas as a service: how it is started, found again and checked, wherever it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from ..net import connect_tcp
from ..procs import is_alive, process_start, stop_process
from . import DEFAULT_ATLAS_PORT, LOOPBACK

__all__ = ["DEFAULT_PORT", "AtlasProcess", "AtlasLayout", "check_health", "spawn"]

DEFAULT_PORT = DEFAULT_ATLAS_PORT
LISTEN_HOST = LOOPBACK


class AtlasLayout(NamedTuple):
    """Atlas's files under the profile's services dir."""

    services_dir: Path

    @property
    def log_file(self) -> Path:
        return self.services_dir / "atlas.log"

    @property
    def pid_file(self) -> Path:
        return self.services_dir / "atlas.pid"


class AtlasProcess(NamedTuple):
    """A running Atlas, as recorded in its pid file."""

    pid: int
    start: float
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def command(self) -> tuple[str, ...]:
        """What its command line holds (see :func:`command`): a process without it is not this Atlas."""
        return ("metalab.atlas", f"--port {self.port}")

    def alive(self) -> bool:
        return is_alive(self.pid, self.start, self.command)

    def stop(self, *, kill_after: float) -> bool:
        return stop_process(self.pid, self.start, command=self.command, sig=signal.SIGTERM, kill_after=kill_after)


def command(host: str, port: int) -> list[str]:
    """The argv that serves Atlas; its settings (with the password) arrive on stdin, not here."""
    return [sys.executable, "-m", "metalab.atlas", "--host", host, "--port", str(port)]


def spawn(layout: AtlasLayout, *, host: str, port: int, settings_json: str) -> AtlasProcess:
    """Start Atlas detached from this terminal (it outlives ``metalab``), logging to its log file."""
    layout.services_dir.mkdir(parents=True, exist_ok=True)
    log = os.open(layout.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            command(host, port),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            text=True,
            close_fds=True,
        )
    finally:
        os.close(log)
    assert proc.stdin is not None
    proc.stdin.write(settings_json + "\n")
    proc.stdin.close()
    start = process_start(proc.pid) or 0.0
    record = AtlasProcess(pid=proc.pid, start=start, host=host, port=port)
    _write_pid_file(layout, record)
    return record


def _write_pid_file(layout: AtlasLayout, record: AtlasProcess) -> None:
    tmp = layout.pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": record.pid, "start": record.start, "host": record.host, "port": record.port}))
    os.replace(tmp, layout.pid_file)


def find_running(layout: AtlasLayout) -> AtlasProcess | None:
    """The Atlas this services dir started, if it still runs."""
    try:
        data = json.loads(layout.pid_file.read_text())
        record = AtlasProcess(pid=int(data["pid"]), start=float(data["start"]), host=data["host"], port=int(data["port"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return record if record.alive() else None


def forget(layout: AtlasLayout) -> None:
    layout.pid_file.unlink(missing_ok=True)


def check_health(host: str, port: int, *, token: str | None = None, timeout: float = 2.0) -> bool:
    """True when ``GET /api/health`` answers 200 (Atlas up and its database reachable).

    A bare HTTP/1.0 exchange on a socket: ``status`` and a warm ``up`` call this, and
    importing http.client would cost more than the request itself.
    """
    auth = f"Authorization: token {token}\r\n" if token else ""
    request = f"GET /api/health HTTP/1.0\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
    try:
        with connect_tcp(host, port, timeout) as conn:
            conn.sendall(request)
            status_line = conn.makefile("rb").readline(256)
    except OSError:
        return False
    parts = status_line.split()
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"
