"""How this machine reaches the running services' index with a researcher's own tools: the
locator, the libpq password file (``PGPASSFILE``), and psql started with it.

The password never travels on a command line or in an environment variable: psql, psycopg and
pandas read it from the 0600 ``postgres.pgpass`` beside the password file. On a workstation the
index is reached through ``metalab tunnel``'s forward on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import NotFoundError

__all__ = ["IndexAccess", "index_access", "psql_argv"]


@dataclass(frozen=True)
class IndexAccess:
    """The index as this machine reaches it."""

    locator: str  # postgresql://user@host:port/db?file_root=...; no password
    host: str
    port: int
    database: str
    user: str
    password_file: str
    pgpass_file: str  # PGPASSFILE=this psql ...

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def index_access(bundle: Any, bundle_path: Path) -> IndexAccess:
    """From the services' bundle: the forwarded port on a workstation (a tunnel must be open)."""
    from .net import is_loopback
    from .services.postgres import PostgresLayout, sync_password_file
    from .store.locator import locator_at, parse_locator, read_password_file
    from .tunnel import forwarded_port

    pg = bundle.services.get("postgres")
    if pg is None or not bundle.store_locator:
        raise NotFoundError(f"the services of environment {bundle.environment} run no PostgreSQL")
    target = parse_locator(bundle.store_locator)
    host, port = target.host or "127.0.0.1", target.port or 5432
    if bundle.tunnel is not None and is_loopback(host):
        forwarded = forwarded_port(bundle_path, "postgres", port)
        if forwarded is None:
            raise NotFoundError(f"no tunnel to the services of environment {bundle.environment} is open here: run "
                                f"`metalab tunnel --env {bundle.environment}` (it stays in the foreground), then try again")
        port = forwarded
    password_file = Path(pg["password_file"])
    layout = PostgresLayout(services_dir=password_file.parent)
    if not layout.pgpass_file.exists():  # services started by an older metalab: made from the password file
        password = read_password_file(password_file)
        if password is not None:
            sync_password_file(layout, password)
    return IndexAccess(locator=locator_at(bundle.store_locator, host, port), host=host, port=port,
                       database=pg["database"], user=pg["user"], password_file=str(password_file),
                       pgpass_file=str(layout.pgpass_file))


def psql_argv(access: IndexAccess, environ: Mapping[str, str], command: str | None = None) -> list[str]:
    """psql on the index: connection settings on argv (none of them secret), the password from
    ``PGPASSFILE`` (set by the caller in psql's environment only)."""
    from .services.postgres import find_bin_dir

    psql = shutil.which("psql", path=environ.get("PATH", os.defpath))
    if psql is None:
        try:
            psql = str(find_bin_dir(None, environ) / "psql")
        except Exception:
            raise NotFoundError("psql is not installed here: install PostgreSQL's client (Debian: postgresql-client)") from None
    argv = [psql, "-h", access.host, "-p", str(access.port), "-U", access.user, "-d", access.database]
    return argv + (["-c", command] if command else [])
