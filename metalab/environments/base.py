"""What every deployment target offers the lifecycle: provision, check, stop, find orphans.

``local`` runs services as subprocesses; ``slurm`` runs them in one batch job. The lifecycle
(``metalab.lifecycle``) drives either through this interface and never asks which it is.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..bundle import ServiceBundle, bundle_path_for, new_bundle
from ..config import ResolvedEnvironment
from ..errors import ConfigError
from ..progress import Progress
from ..services import DEFAULT_ATLAS_PORT, DEFAULT_DATABASE, DEFAULT_USER

__all__ = ["Orphan", "Provisioned", "ServiceEnvironment", "ServiceState", "declared_services", "start_order"]

RUNNING, UNHEALTHY, STOPPED = "running", "unhealthy", "stopped"
# Dependencies first: Atlas needs PostgreSQL, so it starts after it and stops before it.
SERVICE_ORDER = ("postgres", "atlas")


def start_order(names) -> list[str]:
    """``names`` sorted so that every service comes after what it depends on."""
    return sorted(names, key=lambda name: SERVICE_ORDER.index(name) if name in SERVICE_ORDER else len(SERVICE_ORDER))


# Records below are NamedTuples: immutable and typed like frozen dataclasses, but created in
# a fraction of the time, which `status` and a warm `up` (both on the import path) notice.


class Provisioned(NamedTuple):
    """One service that is up, as it goes into the bundle."""

    name: str
    entry: dict[str, Any]
    started: bool  # by this invocation (so a failure later stops it again)


class ServiceState(NamedTuple):
    """What ``status`` reports about one service."""

    name: str
    state: str
    host: str
    port: int
    pid: int | None = None
    job_id: str | None = None
    uptime: float | None = None
    url: str | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {key: value for key, value in self._asdict().items() if value is not None}
        if self.uptime is not None:
            data["uptime"] = round(self.uptime, 1)
        return data


class Orphan(NamedTuple):
    """A service running for this profile that no bundle records."""

    name: str
    description: str


def declared_services(resolved: ResolvedEnvironment) -> list[str]:
    """The services to provision, in start order; Atlas without PostgreSQL is a config error."""
    services = resolved.services
    if services.atlas is not None and services.postgres is None:
        raise ConfigError(
            f"{resolved.config_path}: [services.atlas] needs a PostgreSQL backend; add [services.postgres]"
        )
    names = [name for name in SERVICE_ORDER if getattr(services, name) is not None]
    if not names:
        raise ConfigError(f"{resolved.config_path}: no services declared; add [services.postgres] (and [services.atlas])")
    pg_port = services.postgres.port if services.postgres else None
    # (On a SLURM node Atlas falls back to a free port when its own is taken, and says so.)
    if (resolved.type == "local" and services.atlas is not None and pg_port is not None
            and pg_port == (services.atlas.port or DEFAULT_ATLAS_PORT)):
        raise ConfigError(f"{resolved.config_path}: [services.postgres] port and [services.atlas] port are both {pg_port}; "
                          "give them different ports")
    _check_file_root(resolved)
    return names


def _check_file_root(resolved: ResolvedEnvironment) -> None:
    """A file_root on this machine must be a folder this user can write (or not exist yet)."""
    root = resolved.file_root
    if root is None or resolved.behind_gateway:
        return
    fix = f"fix file_root in [environments.{resolved.name}] of {resolved.config_path}"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"file_root {root} is a file, not a folder; {fix}")
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"file_root {root} cannot be written by this user ({existing} is not writable); "
                          f"give it write access or {fix}")


class ServiceEnvironment(ABC):
    """One profile's services: subclasses say how they start, answer and stop."""

    def __init__(
        self, *, resolved: ResolvedEnvironment, progress: Progress, dry: bool = False, environ: Mapping[str, str]
    ) -> None:
        self.resolved = resolved
        self.progress = progress
        self.dry = dry
        self.environ = environ
        self._started: list[Provisioned] = []

    @property
    def bundle_path(self) -> Path:
        """This machine's bundle of the profile (a workstation keeps its own copy, per project)."""
        return bundle_path_for(self.resolved)

    @property
    def services_dir(self) -> Path:
        """Where the services keep their state: beside the bundle."""
        return self.bundle_path.parent

    @property
    def records_root(self) -> Path:
        """Where runs against these services keep their records (the store locator's file_root):
        the profile's file_root, else ``runs/`` beside the bundle (a ``store="discover"`` needs
        somewhere to write, and the indexer somewhere to read)."""
        return self.resolved.file_root if self.resolved.file_root is not None else self.services_dir / "runs"

    # -- provisioning ---------------------------------------------------------------

    def preflight(self) -> None:
        """Refuse, before anything is created, what would make ``up`` fail half-way (optional)."""

    def head_start(self) -> None:
        """Start what can overlap with PostgreSQL's start-up (optional)."""

    @abstractmethod
    def provision_postgres(self) -> Provisioned: ...

    @abstractmethod
    def provision_atlas(self) -> Provisioned:
        """Start Atlas; call after provision_postgres, whose server it uses."""

    def remember(self, provisioned: Provisioned) -> Provisioned:
        if provisioned.started:
            self._started.append(provisioned)
        return provisioned

    def rollback(self) -> None:
        """Stop, newest first, everything this invocation started."""
        while self._started:
            service = self._started.pop()
            self.stop_service(service.name, service.entry)

    def commit(self) -> None:
        """What was started now belongs to the bundle; a later failure must not stop it."""
        self._started.clear()

    # -- the bundle -----------------------------------------------------------------

    def make_bundle(self, services: list[Provisioned]) -> ServiceBundle:
        entries = {service.name: service.entry for service in services}
        return new_bundle(
            project=self.resolved.project_name,
            environment=self.resolved.name,
            type=self.resolved.type,
            services=entries,
            store_locator=self.store_locator(entries),
            tunnel=self.tunnel_plan(entries),
        )

    def store_locator(self, services: Mapping[str, Mapping[str, Any]]) -> str | None:
        """``postgresql://user@host:port/db?file_root=...``: no password, that stays in its file."""
        pg = services.get("postgres")
        if pg is None:
            return None
        from urllib.parse import quote

        locator = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{pg['database']}"
        return locator + f"?file_root={quote(str(self.records_root), safe='/')}"

    def tunnel_plan(self, services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
        return None

    def publish(self, bundle: ServiceBundle) -> None:
        """Also put the bundle where the cluster reads it, when that is another machine."""

    def unpublish(self) -> None:
        """Remove what :meth:`publish` put elsewhere."""

    # -- checking and stopping ------------------------------------------------------

    @abstractmethod
    def states(self, bundle: ServiceBundle) -> list[ServiceState]: ...

    @abstractmethod
    def stop_service(self, name: str, entry: Mapping[str, Any]) -> bool: ...

    @abstractmethod
    def orphans(self) -> list[Orphan]: ...

    @abstractmethod
    def stop_orphans(self) -> list[str]: ...

    def logs(self, bundle: ServiceBundle | None) -> dict[str, str]:
        """Each service's log as ``{name: path}``, on the machine the services run on (read
        with :meth:`read_log`)."""
        return {}

    def read_log(self, path: str) -> str | None:
        """A log's text (None when it does not exist)."""
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return None

    def to_restart(self, states: list[ServiceState]) -> list[str]:
        """Which services a stale bundle's ``up`` stops and starts again: by default all of them
        (they run as one unit, as a SLURM job does)."""
        return [state.name for state in states]

    def drift(self, bundle: ServiceBundle) -> list[str]:
        """How the running services differ from what the configuration now asks for."""
        changes = []
        declared = set(declared_services(self.resolved))
        running = set(bundle.services)
        for name in sorted(declared - running):
            changes.append(f"[services.{name}] is declared but not running")
        for name in sorted(running - declared):
            changes.append(f"{name} runs but [services.{name}] is no longer declared")
        for name, key, wanted in self.wanted_settings():
            have = bundle.services.get(name, {}).get(key)
            if name in running and wanted is not None and have != wanted:
                changes.append(f"[services.{name}] {key}: running with {have!r}, configured {wanted!r}")
        return changes

    def wanted_settings(self) -> list[tuple[str, str, Any]]:
        """(service, bundle key, configured value) triples compared by :meth:`drift`."""
        pg, atlas = self.resolved.services.postgres, self.resolved.services.atlas
        triples: list[tuple[str, str, Any]] = []
        if pg is not None:
            triples += [
                ("postgres", "port", pg.port),  # unset means "any free port", which never drifts
                ("postgres", "database", pg.database or DEFAULT_DATABASE),
                ("postgres", "user", pg.user or DEFAULT_USER),
            ]
        if atlas is not None:
            triples.append(("atlas", "port", atlas.port or DEFAULT_ATLAS_PORT))
        return triples

