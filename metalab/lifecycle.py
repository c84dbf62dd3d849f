"""The service lifecycle — up, status, down — over any :class:`ServiceEnvironment`.

    resolve-config → provision-postgres → provision-atlas → write-bundle (→ tunnel)

``up`` and ``down`` hold the bundle's lock from start to end, so concurrent calls start one
set of services and all report the same bundle. A failure or Ctrl+C half-way through ``up``
stops what it started and writes no bundle.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import bundle as bundles
from .config import ResolvedEnvironment
from .environments.base import (
    RUNNING,
    Orphan,
    Provisioned,
    ServiceEnvironment,
    ServiceState,
    declared_services,
    start_order,
)
from .errors import EXIT_FAILURE, EXIT_NOT_FOUND
from .progress import Progress

__all__ = [
    "StatusReport",
    "down",
    "open_environment",
    "own_bundle",
    "provision",
    "record_in_bundle",
    "report_lock_wait",
    "status",
    "up",
    "write_bundle",
]

# Backends as data: the class that runs each environment type.
ENVIRONMENT_CLASSES = {
    "local": "metalab.environments.local:LocalEnvironment",
    "slurm": "metalab.environments.slurm:SlurmEnvironment",
}


def open_environment(
    resolved: ResolvedEnvironment, *, progress: Progress, dry: bool = False, environ: Mapping[str, str] | None = None
) -> ServiceEnvironment:
    """The environment object for ``resolved``'s type (imported only when needed)."""
    declared_services(resolved)  # Atlas without PostgreSQL fails here, before anything starts
    module_name, _, class_name = ENVIRONMENT_CLASSES[resolved.type].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(resolved=resolved, progress=progress, dry=dry, environ=dict(os.environ if environ is None else environ))


def provision(env: ServiceEnvironment) -> list[Provisioned]:
    """Start (or adopt) every declared service, in dependency order."""
    declared = declared_services(env.resolved)
    env.head_start()
    services = [env.provision_postgres()]
    if "atlas" in declared:
        services.append(env.provision_atlas())
    return services


def write_bundle(env: ServiceEnvironment, services: list[Provisioned]) -> bundles.ServiceBundle:
    """Record the services in the bundle (printed instead under ``--dry``)."""
    bundle = env.make_bundle(services)
    if env.dry:
        env.progress.line("bundle", f"would write {env.bundle_path} (mode 0600):\n{bundle.to_json(mask_secrets=True)}")
    else:
        bundles.save(env.bundle_path, bundle)
        env.publish(bundle)
        env.progress.line("bundle", f"wrote {env.bundle_path}")
    return bundle


class UpOutcome(NamedTuple):
    bundle: bundles.ServiceBundle
    reused: bool


def up(env: ServiceEnvironment) -> UpOutcome:
    """Reuse healthy services; with a stale bundle, restart what is down and adopt the rest."""
    if env.dry:
        existing = own_bundle(env.resolved, env.bundle_path) if env.bundle_path.exists() else None
        if existing is not None and all(state.state == RUNNING for state in env.states(existing)):
            _report_reuse(env, existing, would=True)  # as the real `up` decides: nothing to start
            return UpOutcome(existing, reused=True)
        return UpOutcome(write_bundle(env, provision(env)), reused=False)
    if not env.bundle_path.exists():
        env.preflight()  # nothing of this profile runs yet: a taken port fails before anything is made
    with bundles.lock(env.bundle_path, on_wait=report_lock_wait(env)):
        existing = _load_setting_corrupt_aside(env)
        if existing is not None:
            states = env.states(existing)
            if all(state.state == RUNNING for state in states):
                _report_reuse(env, existing)
                return UpOutcome(existing, reused=True)
            _discard_stale(env, existing, states)
        try:
            services = provision(env)
            written = write_bundle(env, services)
        except BaseException as error:  # Ctrl+C included: stop what this call started, leave no bundle
            env.rollback()
            if isinstance(error, KeyboardInterrupt):
                env.progress.warn("interrupted", "stopped what this `up` had started; no bundle written")
            raise
        env.commit()
        return UpOutcome(written, reused=False)


def report_lock_wait(env: ServiceEnvironment) -> Any:
    """What the bundle lock calls when another holder makes this command wait: it says so."""
    return lambda text: env.progress.warn("bundle", text)


def _load_setting_corrupt_aside(env: ServiceEnvironment) -> bundles.ServiceBundle | None:
    try:
        return own_bundle(env.resolved, env.bundle_path)
    except bundles.BundleCorrupt as error:
        moved = bundles.move_aside(env.bundle_path)
        env.progress.warn("bundle", f"{error}; moved it to {moved}")
        return None


def own_bundle(resolved: ResolvedEnvironment, path: Any) -> bundles.ServiceBundle | None:
    """The bundle at ``path`` (None when there is none), unless it records another project's
    services: those are never reused, replaced or stopped from this project."""
    bundle = bundles.load(path)
    if bundle is None or bundle.project == resolved.project_name:
        return bundle
    from .errors import ConfigError

    raise ConfigError(
        f"{path} records the services of project {bundle.project!r}, not {resolved.project_name!r}; "
        f"give this project a file_root of its own in {resolved.config_path}, "
        f"or stop them with `metalab services down` in project {bundle.project!r}"
    )


def _report_reuse(env: ServiceEnvironment, existing: bundles.ServiceBundle, *, would: bool = False) -> None:
    names = ", ".join(start_order(existing.services))
    verb = "would reuse" if would else "reusing"
    env.progress.line("services", f"{verb} the running {names} ({env.bundle_path})" + ("; nothing to start" if would else ""))
    changes = env.drift(existing)
    for change in changes:
        env.progress.warn("config changed", change)
    if changes:
        env.progress.warn("config changed", f"run `metalab services down --env {env.resolved.name}` then `up` to apply")


def _discard_stale(env: ServiceEnvironment, existing: bundles.ServiceBundle, states: list[ServiceState]) -> None:
    """Stop what is down or broken (as the environment decides: a SLURM job goes whole) and
    forget the bundle; what still runs healthy is adopted again by the provisioning that follows."""
    gone = ", ".join(f"{s.name} {s.state}" for s in states if s.state != RUNNING)
    restart = env.to_restart(states)
    kept = [s.name for s in states if s.name not in restart]
    env.progress.warn("bundle", f"stale ({gone}); restarting {', '.join(restart) or 'nothing'}"
                      + (f", keeping the running {', '.join(kept)}" if kept else ""))
    for name in reversed(start_order(existing.services)):
        if name in restart:
            env.stop_service(name, existing.services[name])
    bundles.remove(env.bundle_path)


def record_in_bundle(env: ServiceEnvironment, provisioned: Provisioned) -> None:
    """After one provisioning step on its own (``inv services.provision-postgres``): the bundle,
    if there is one, records the service as it now runs, so ``status`` and ``up`` see it."""
    existing = own_bundle(env.resolved, env.bundle_path)
    if env.dry or existing is None:
        return
    entries = {**existing.services, provisioned.name: provisioned.entry}
    write_bundle(env, [provisioned if name == provisioned.name else Provisioned(name=name, entry=entries[name], started=False)
                       for name in start_order(entries)])


class StatusReport(NamedTuple):
    environment: str
    bundle_path: str
    states: tuple[ServiceState, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    problem: str | None = None

    @property
    def exit_code(self) -> int:
        if self.problem or self.orphans or any(s.state != RUNNING for s in self.states):
            return EXIT_FAILURE
        return 0 if self.states else EXIT_NOT_FOUND

    def as_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "bundle": self.bundle_path,
            "healthy": self.exit_code == 0,
            "services": [state.as_json() for state in self.states],
            "orphans": [{"name": o.name, "description": o.description} for o in self.orphans],
            "problem": self.problem,
        }


def status(env: ServiceEnvironment) -> StatusReport:
    """Each service's state, or the orphans running without a bundle."""
    common = {"environment": env.resolved.name, "bundle_path": str(env.bundle_path)}
    try:
        existing = own_bundle(env.resolved, env.bundle_path)
    except bundles.BundleCorrupt as error:
        return StatusReport(**common, problem=f"{error} (the next `metalab services up` moves it aside)")
    if existing is None:
        return StatusReport(**common, orphans=tuple(env.orphans()))
    return StatusReport(**common, states=tuple(env.states(existing)))


def down(env: ServiceEnvironment) -> list[str]:
    """Stop every service (dependents first) and remove the bundle; the data stays."""
    if env.dry:
        existing = own_bundle(env.resolved, env.bundle_path)
        names = list(existing.services) if existing else [o.name for o in env.orphans()]
        for name in reversed(start_order(names)):
            env.progress.line(name, "would stop")
        env.progress.line("bundle", f"would remove {env.bundle_path}")
        return []
    stopped = []
    with bundles.lock(env.bundle_path, on_wait=report_lock_wait(env)):
        try:
            existing = own_bundle(env.resolved, env.bundle_path)
        except bundles.BundleCorrupt as error:
            env.progress.warn("bundle", str(error))
            existing = None
        if existing is not None:
            for name in reversed(start_order(existing.services)):
                began = time.perf_counter()
                if env.stop_service(name, existing.services[name]):
                    stopped.append(name)
                    env.progress.line(name, "stopped", time.perf_counter() - began)
        for orphan in env.stop_orphans():
            stopped.append(orphan)
            env.progress.line("orphan", f"stopped {orphan}")
        from .tunnel import stop_recorded

        if stop_recorded(env.bundle_path):
            env.progress.line("tunnel", "closed the tunnel to them")
        bundles.remove(env.bundle_path)
        env.unpublish()
    return stopped


def format_status(report: StatusReport) -> str:
    """Human-readable status: one line per service."""
    if report.problem:
        return report.problem
    if not report.states and not report.orphans:
        return f"no services running for environment {report.environment} (start them with `metalab services up`)"
    lines = [f"environment {report.environment}: {report.bundle_path}"]
    for s in report.states:
        where = f"{s.host}:{s.port}"
        who = f"pid {s.pid}" if s.pid is not None else f"job {s.job_id}"
        up_for = f"up {_duration(s.uptime)}" if s.uptime is not None else ""
        parts = (f"{s.name:<9}", f"{s.state:<9}", where, who, up_for, s.url or "", s.detail or "")
        lines.append("  " + "  ".join(part for part in parts if part))
    for orphan in report.orphans:
        lines.append(f"  orphan: {orphan.description} runs without a bundle; `metalab services up` adopts it, `down` stops it")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def dumps(report: StatusReport) -> str:
    return json.dumps(report.as_json(), indent=2)
