"""``metalab tunnel``: forward the services on a compute node to localhost with ``ssh -N -L``."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from typing import Any

from .errors import UsageError
from .net import port_is_free
from .procs import stop_child

__all__ = ["choose_local_ports", "run_tunnel", "tunnel_command", "with_local_store_port"]

SSH_CONFIG_ENV_VAR = "METALAB_SSH_CONFIG"  # an explicit ssh_config (tests, unusual setups)


def choose_local_ports(forwards: list[Mapping[str, Any]], pinned: Mapping[str, int]) -> dict[str, int]:
    """Each service's local port: its planned one, else the next free one; a pinned port in use is an error."""
    chosen: dict[str, int] = {}
    for forward in forwards:
        service, port = forward["service"], int(forward["local_port"])
        if service in pinned:
            port = pinned[service]
            if not port_is_free("127.0.0.1", port):
                raise UsageError(f"local port {port} for {service} is already in use; free it or change [services.{service}] port")
        else:
            while not port_is_free("127.0.0.1", port) or port in chosen.values():
                port += 1
        chosen[service] = port
    return chosen


def tunnel_command(plan: Mapping[str, Any], local_ports: Mapping[str, int], environ: Mapping[str, str]) -> list[str]:
    """``ssh -N`` with one ``-L`` per service, through the gateway to the node (no password, ever)."""
    argv = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=30", "-o", "BatchMode=yes"]
    if environ.get(SSH_CONFIG_ENV_VAR):
        argv += ["-F", environ[SSH_CONFIG_ENV_VAR]]
    if plan.get("ssh_key"):
        argv += ["-i", os.path.expanduser(plan["ssh_key"])]
    for forward in plan["forwards"]:
        local = local_ports[forward["service"]]
        argv += ["-L", f"127.0.0.1:{local}:{forward['remote_host']}:{forward['remote_port']}"]
    argv.append(f"{plan['user']}@{plan['gateway']}" if plan.get("user") else plan["gateway"])
    return argv


def run_tunnel(argv: list[str]) -> int:
    """Run ssh in the foreground until Ctrl+C (then exit 0) or until ssh itself fails."""
    process = subprocess.Popen(argv)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_child(process)
        return 0


def printable(argv: list[str]) -> str:
    return shlex.join(argv)


def with_local_store_port(bundle: Any, port: int) -> Any:
    """The bundle with its store locator pointing at the tunnel's local PostgreSQL port."""
    import dataclasses
    from urllib.parse import urlsplit

    parts = urlsplit(bundle.store_locator)
    locator = f"{parts.scheme}://{parts.username}@127.0.0.1:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return dataclasses.replace(bundle, store_locator=locator)
