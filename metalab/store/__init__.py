"""Where run records go: FileStore on disk, PostgresStore (an index over files) in PostgreSQL.

``open_store`` turns every form ``metalab.run(store=...)`` accepts into a store:

    None                      FileStore at ./experiments/
    "runs/" or a Path         FileStore there
    "postgresql://..."        PostgresStore (``?file_root=DIR`` names its files)
    "discover"                the running services' store, from their bundle
    StoreConfig(locator)      that locator
    a store object            itself
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import FileStore
from .locator import SCHEMES as POSTGRES_SCHEMES
from .locator import mask_postgres_locator

__all__ = ["DEFAULT_ROOT", "FileStore", "StoreConfig", "mask_locator", "open_store", "shareable_locator"]

DEFAULT_ROOT = "experiments"


@dataclass(frozen=True)
class StoreConfig:
    """A store named by its locator (a path, a ``postgresql://`` URI, or ``"discover"``)."""

    locator: str

    def __repr__(self) -> str:
        return f"StoreConfig({mask_locator(self.locator)!r})"


def open_store(value: Any, *, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """The store for ``metalab.run(store=value)``."""
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ
    if value is None:
        return FileStore(cwd / DEFAULT_ROOT)
    if isinstance(value, StoreConfig):
        return open_store(value.locator, cwd=cwd, environ=environ)
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if text == "discover":
            return _discovered(cwd, environ)
        if text.startswith(POSTGRES_SCHEMES):
            from .postgres import PostgresStore

            return PostgresStore.from_locator(text)
        path = Path(text).expanduser()
        return FileStore(path if path.is_absolute() else cwd / path)
    if hasattr(value, "sink") and hasattr(value, "files"):
        return value
    raise TypeError(f"store={value!r} is not a path, a postgresql:// locator, 'discover' or a StoreConfig")


def shareable_locator(value: Any) -> str | None:
    """``metalab.run(store=value)`` as text another process can open (``None`` stays the default).
    A store object gives its locator without the password: the other side finds it itself."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, StoreConfig):
        return value.locator
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if getattr(value, "kind", None) == "postgres":
        from .locator import without_password

        return without_password(value.locator)
    if getattr(value, "kind", None) == "file":
        return str(value.root)
    raise TypeError(f"store={value!r} is not a path, a postgresql:// locator, 'discover' or a StoreConfig")


def _discovered(cwd: Path, environ: Mapping[str, str]) -> Any:
    """The running services' store. A workstation's copy of the bundle (its locator names the
    tunnel's end on 127.0.0.1) needs a forward that runs, and reads the files through the gateway."""
    from ..bundle import discover
    from ..net import is_loopback
    from .locator import parse_locator
    from .postgres import PostgresStore

    found = discover(cwd, environ)
    bundle = found.bundle
    postgres = bundle.services.get("postgres", {})
    password_file = postgres.get("password_file")
    locator, files = bundle.store_locator, None
    target = parse_locator(locator)
    if bundle.tunnel is not None and target.host is not None and is_loopback(target.host):
        from ..errors import NotFoundError
        from ..tunnel import forwarded_port
        from .gateway import GatewayFiles
        from .locator import locator_at

        port = forwarded_port(found.path, "postgres", target.port)
        if port is None:
            where = f"on {postgres.get('node') or 'a compute node'} behind the gateway {bundle.tunnel['gateway']}"
            raise NotFoundError(
                f"the services of environment {bundle.environment} run {where}, and no tunnel to them is open here: "
                f"run `metalab tunnel --env {bundle.environment}` (it stays in the foreground), then try again"
            )
        locator = locator_at(locator, "127.0.0.1", port)
        files = GatewayFiles(target.file_root, bundle.tunnel)
    # The services' Atlas follows their file_root into the index: runs never connect themselves.
    return PostgresStore.from_locator(locator, password_file=Path(password_file) if password_file else None,
                                      files=files, followed="atlas" in bundle.services)


def mask_locator(locator: str) -> str:
    """A locator fit for logs and errors: any password replaced by ``***``."""
    import re

    if locator.startswith(POSTGRES_SCHEMES):
        return mask_postgres_locator(locator)  # parses as PostgresStore does
    return re.sub(r"(://[^/:@\s]*:)[^@\s/]*(@)", r"\1***\2", locator)
