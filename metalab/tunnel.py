"""``metalab tunnel``: forward the services on a compute node to localhost with ``ssh -N -L``.

The local ports are all chosen (distinct, free) before anything is printed; "tunnel open" is
printed only once every forward answers end to end (a PostgreSQL login, Atlas's health with its
token). While it runs, ``tunnel.json`` beside the workstation's bundle records which local port
each service got, so ``store="discover"`` on this machine reaches PostgreSQL through it. Ctrl+C,
SIGTERM and SIGHUP all close it: ssh is stopped and reaped, the record removed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import MetalabError, UsageError
from .net import connect_tcp, port_is_free
from .procs import interrupts, is_alive, process_start, stop_child

__all__ = [
    "RECORD_NAME",
    "TunnelRecord",
    "choose_local_ports",
    "forwarded_port",
    "printable",
    "run_tunnel",
    "stop_recorded",
    "tunnel_command",
]

SSH_CONFIG_ENV_VAR = "METALAB_SSH_CONFIG"  # an explicit ssh_config (tests, unusual setups)
RECORD_NAME = "tunnel.json"
TUNNEL_COMMAND = ("tunnel",)  # on the command line of `metalab tunnel`: a pid's new owner lacks it
SSH_COMMAND = ("ssh",)
READY_TIMEOUT = 60.0
LOCALHOST = "127.0.0.1"


class TunnelError(MetalabError):
    """The forwards never answered."""


def choose_local_ports(
    forwards: list[Mapping[str, Any]], pinned: Mapping[str, int], *,
    is_free: Callable[[str, int], bool] = port_is_free,
) -> dict[str, int]:
    """One distinct free local port per forward: a pinned one as configured (an error when it is
    taken), every other its planned port or the next free one above it."""
    chosen: dict[str, int] = {}
    for forward in forwards:
        service = forward["service"]
        if service in pinned:
            port = pinned[service]
            if not is_free(LOCALHOST, port):
                raise UsageError(f"local port {port} for {service} is already in use; free it or change [services.{service}] port")
            chosen[service] = port
    for forward in forwards:
        service = forward["service"]
        if service in chosen:
            continue
        port = int(forward["local_port"])
        while port in chosen.values() or not is_free(LOCALHOST, port):
            port = port + 1 if port < 65535 else 1024
        chosen[service] = port
    return {forward["service"]: chosen[forward["service"]] for forward in forwards}


def tunnel_command(plan: Mapping[str, Any], local_ports: Mapping[str, int], environ: Mapping[str, str]) -> list[str]:
    """``ssh -N`` with one ``-L`` per service, through the gateway to the node (no password, ever)."""
    argv = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=30", "-o", "BatchMode=yes"]
    if environ.get(SSH_CONFIG_ENV_VAR):
        argv += ["-F", environ[SSH_CONFIG_ENV_VAR]]
    if plan.get("ssh_key"):
        argv += ["-i", os.path.expanduser(plan["ssh_key"])]
    for forward in plan["forwards"]:
        local = local_ports[forward["service"]]
        argv += ["-L", f"{LOCALHOST}:{local}:{forward['remote_host']}:{forward['remote_port']}"]
    argv.append(f"{plan['user']}@{plan['gateway']}" if plan.get("user") else plan["gateway"])
    return argv


def printable(argv: list[str]) -> str:
    return shlex.join(argv)


# -- the record of a running tunnel ---------------------------------------------------------


class TunnelRecord(NamedTuple):
    """``tunnel.json``: the ``metalab tunnel`` process, its ssh, and each service's local port."""

    pid: int
    start: float
    ssh_pid: int
    ssh_start: float
    ports: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(self._asdict(), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> TunnelRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), start=float(data["start"]), ssh_pid=int(data["ssh_pid"]),
                       ssh_start=float(data["ssh_start"]), ports={str(k): int(v) for k, v in data["ports"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def live(self) -> bool:
        return is_alive(self.pid, self.start, TUNNEL_COMMAND) and is_alive(self.ssh_pid, self.ssh_start, SSH_COMMAND)


def forwarded_port(bundle_path: Path, service: str, planned: int | None) -> int | None:
    """The local port forwarding ``service`` now: a running ``metalab tunnel``'s, else ``planned``
    when something listens there (a forward started by hand from ``tunnel --print``); else None."""
    record = TunnelRecord.read(bundle_path.with_name(RECORD_NAME))
    if record is not None and record.live and service in record.ports:
        return record.ports[service]
    if planned is not None:
        try:
            connect_tcp(LOCALHOST, planned, 0.5).close()
            return planned
        except OSError:
            pass
    return None


def stop_recorded(bundle_path: Path) -> bool:
    """Close the ``metalab tunnel`` recorded beside ``bundle_path`` (``services down`` does); True if one ran."""
    from .procs import stop_process

    record = TunnelRecord.read(bundle_path.with_name(RECORD_NAME))
    if record is None or not is_alive(record.pid, record.start, TUNNEL_COMMAND):
        return False
    return stop_process(record.pid, record.start, command=TUNNEL_COMMAND, sig=signal.SIGTERM, kill_after=10.0)


# -- running it -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the ssh child (Linux): a SIGKILLed ``metalab tunnel`` takes its ssh with it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_tunnel(
    argv: list[str], *, record_path: Path, answering: Callable[[Mapping[str, int]], bool], ports: Mapping[str, int],
    on_ready: Callable[[], None], ready_timeout: float = READY_TIMEOUT,
) -> int:
    """Run ssh until Ctrl+C, SIGTERM or SIGHUP (then 0) or until ssh itself ends (its code).

    ``on_ready`` is called once ``answering(ports)`` holds; the record is written then and
    removed on the way out.
    """
    from .remote import LocalRunner

    # `metalab` already does this for every command; `inv tunnel` (a user's tasks file) does not.
    with interrupts(signal.SIGTERM, signal.SIGHUP):
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=preexec)  # noqa: PLW1509
        written = False
        try:
            deadline = time.monotonic() + ready_timeout
            while not answering(ports):
                if process.poll() is not None:
                    return process.returncode
                if time.monotonic() > deadline:
                    raise TunnelError(f"the forwards did not answer within {ready_timeout:.0f} s: {printable(argv)}")
                time.sleep(0.02)
            record = TunnelRecord(pid=os.getpid(), start=process_start(os.getpid()) or 0, ssh_pid=process.pid,
                                  ssh_start=process_start(process.pid) or 0, ports=dict(ports))
            LocalRunner().write_text(str(record_path), record.to_json())
            written = True
            on_ready()
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if process.poll() is None:
                stop_child(process)
            if written:
                record_path.unlink(missing_ok=True)
