"""The services job on a compute node: ``python -m metalab.services.node SERVICES_DIR``.

Runs PostgreSQL (and Atlas, when declared) with the same code as the local environment, but
listening on the node's address: PostgreSQL with a password (scram-sha-256 by default),
Atlas with an access token on its configured port (another, said in the log, when that one is
taken on the node). Secrets come only from 0600 files in the services dir; nothing secret is in
the job script, on a command line or in the job's environment. Once both answer, it writes
``ready-{job id}.json`` (host and ports, no secret) and watches them; SIGTERM (scancel,
walltime) stops Atlas, then PostgreSQL with a fast shutdown, and the job ends COMPLETED. When a
service dies on its own, the job logs which one and how, stops the other and exits 1 (FAILED).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ..net import free_port, port_is_free
from ..procs import exit_reason
from ..secret import Secret
from . import atlas, postgres

__all__ = ["NODE_SETTINGS", "main", "readiness_path"]

NODE_SETTINGS = "node.json"  # written by `metalab services up`; holds no secret
STARTUP_TIMEOUT = 300.0
KILL_AFTER = 20.0  # well inside SLURM's default KillWait of 30 s


def readiness_path(services_dir: Path, job_id: str) -> Path:
    return services_dir / f"ready-{job_id}.json"


def node_address() -> str:
    """The address other machines reach this node on (its hostname's IPv4 address)."""
    return socket.gethostbyname(socket.gethostname())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


PROGRESS_PREFIX = "metalab-progress: "  # lines the waiting `up` relays from the job's log


def _say(message: str) -> None:
    print(f"{PROGRESS_PREFIX}{message}", flush=True)


def run(services_dir: Path, job_id: str) -> int:
    settings = json.loads((services_dir / NODE_SETTINGS).read_text())
    address = node_address()
    password = Secret((services_dir / settings["password_file"]).read_text().strip())
    layout = postgres.PostgresLayout(services_dir=services_dir)
    plan = postgres.PostgresPlan(
        layout=layout,
        bin_dir=postgres.find_bin_dir(settings.get("bin_dir"), os.environ),
        port=settings.get("postgres_port") or free_port(address),
        user=settings["user"],
        database=settings["database"],
        auth_method=settings["auth_method"],
        run_as=postgres.choose_run_as(settings.get("run_as")),
        listen=address,
    )
    stopping: list[bool] = []

    def on_term(signum: int, frame: Any) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    postgres.prepare_directories(plan)
    if not layout.initialized():
        postgres.initialize(plan)
    postgres.write_config_files(plan)
    server = postgres.start_server(plan, timeout=STARTUP_TIMEOUT)
    atlas_process = None
    try:
        postgres.run_checked(plan, plan.psql_command(), what="creating the role and database", stdin=plan.setup_sql(password))
        _say(f"postgres ready on {address}:{plan.port}")
        ready: dict[str, Any] = {"job_id": job_id, "node": socket.gethostname(), "host": address,
                                 "postgres_port": plan.port, "postgres_pid": server.pid}
        if settings.get("atlas") is not None:
            atlas_process = _start_atlas(services_dir, settings, plan, address, password)
            ready.update(atlas_port=atlas_process.port, atlas_pid=atlas_process.pid)
            _say(f"atlas ready on {address}:{atlas_process.port}")
        _write_json(readiness_path(services_dir, job_id), ready)
        watched = [("postgres", server.pid, layout.log_file)]
        if atlas_process is not None:
            watched.append(("atlas", atlas_process.pid, atlas.AtlasLayout(services_dir=services_dir).log_file))
        while not stopping:
            for name, pid, log_file in watched:
                reason = exit_reason(pid)
                if reason is not None:
                    print(f"{name} log, last lines:\n{_tail(log_file)}", flush=True)
                    print(f"metalab: {name} (pid {pid}) {reason}; stopping the services job (see {log_file})", flush=True)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        if atlas_process is not None:
            atlas_process.stop(kill_after=KILL_AFTER)
        postgres.stop(server, kill_after=KILL_AFTER)
        postgres.remove_socket_dir(layout)
        readiness_path(services_dir, job_id).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def atlas_port(configured: int | None, address: str) -> int:
    """The configured port when it is free on this node, else any free one (and the log says so)."""
    if configured and port_is_free(address, configured):
        return configured
    port = free_port(address)
    if configured:
        _say(f"atlas: port {configured} is taken on {socket.gethostname()}; using {port} (the tunnel still forwards it to {configured})")
    return port


def _start_atlas(services_dir: Path, settings: dict[str, Any], plan: Any, address: str, password: Secret) -> Any:
    from ..atlas.settings import AtlasSettings, settings_document

    token = Secret((services_dir / settings["atlas"]["token_file"]).read_text().strip())
    port = atlas_port(settings["atlas"].get("port"), address)
    atlas_settings = AtlasSettings(
        db_host=address, db_port=plan.port, db_user=plan.user, db_name=plan.database, db_password=password,
        file_root=settings.get("file_root"), token=token,
    )
    layout = atlas.AtlasLayout(services_dir=services_dir)
    process = atlas.spawn(layout, host=address, port=port, settings_json=settings_document(atlas_settings))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not atlas.check_health(address, port, token=token.reveal(), timeout=1.0):
        if not process.alive():
            raise ServiceError(f"Atlas exited during start-up; see {layout.log_file}")
        if time.monotonic() > deadline:
            raise ServiceError(f"Atlas did not answer within {STARTUP_TIMEOUT:g} s; see {layout.log_file}")
        time.sleep(0.1)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalab.services.node", description=__doc__.splitlines()[0])
    parser.add_argument("services_dir", type=Path)
    args = parser.parse_args(argv)
    return run(args.services_dir, os.environ.get("SLURM_JOB_ID", "local"))


if __name__ == "__main__":
    sys.exit(main())
