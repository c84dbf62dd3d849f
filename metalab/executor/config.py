"""Executors from configuration: ``executor_from_config("slurm", {...})`` and the registry.

TOML (``[environments.X.executor]``) gives the defaults, an experiment only what differs;
both arrive here as one dict. New executor types register themselves through the
``metalab.executors`` entry-point group (value: a ``module:factory`` taking the dict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import is_slurm_memory, is_slurm_time
from ..errors import ConfigError, did_you_mean

__all__ = [
    "ExecutorOptionError",
    "LocalExecutorConfig",
    "SlurmExecutorConfig",
    "create_executor",
    "executor_from_config",
    "executor_settings",
    "executor_types",
    "register_executor",
]


@dataclass(frozen=True, kw_only=True)
class LocalExecutorConfig:
    """``local``: ``workers=1`` runs in this process; more start a ProcessExecutor."""

    workers: int = 1

    def __post_init__(self) -> None:
        _require(isinstance(self.workers, int) and not isinstance(self.workers, bool) and self.workers >= 1,
                 "workers", self.workers, "a whole number of at least 1")


@dataclass(frozen=True, kw_only=True)
class SlurmExecutorConfig:
    """``slurm``: the documented fields and defaults, plus setup lines, mail and the gateway."""

    partition: str = "default"
    time: str = "1:00:00"
    cpus: int = 1
    memory: str = "4G"
    gpus: int = 0
    max_concurrent: int | None = None
    runs_per_task: int = 1
    modules: list[str] = field(default_factory=list)
    conda_env: str | None = None
    setup: list[str] = field(default_factory=list)
    mail_user: str | None = None
    mail_type: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gateway: str | None = None
    user: str | None = None
    ssh_key: str | None = None
    python: str | None = None  # the cluster's interpreter with metalab (default: this one on the login node)
    file_root: str | None = None  # the profile's, where store="discover" is looked for on the cluster

    def __post_init__(self) -> None:
        _require(isinstance(self.time, str) and is_slurm_time(self.time), "time", self.time,
                 "a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)")
        _require(isinstance(self.memory, str) and is_slurm_memory(self.memory), "memory", self.memory,
                 "a SLURM memory size such as 512M or 10G")
        for name, least in (("cpus", 1), ("gpus", 0), ("runs_per_task", 1)):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= least, name, value,
                     f"a whole number of at least {least}")
        _require(self.max_concurrent is None or (isinstance(self.max_concurrent, int) and self.max_concurrent >= 1),
                 "max_concurrent", self.max_concurrent, "a whole number of at least 1")
        for name in ("modules", "setup"):
            value = getattr(self, name)
            _require(isinstance(value, list) and all(isinstance(v, str) for v in value), name, value, "a list of strings")
      


class ExecutorOptionError(ConfigError):
    """One executor option is unknown or holds a bad value; ``key`` names it, ``reason`` says
    what to change (so an experiment file can point at the line that set it)."""

    def __init__(self, message: str, *, key: str, reason: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ExecutorOptionError(f"executor option {key} = {value!r} must be {expected}", key=key,
                                  reason=f"{value!r} must be {expected}")


def _local(options: Mapping[str, Any]) -> Any:
    config = _build(LocalExecutorConfig, options, "local")
    if config.workers == 1:
        return None  # metalab runs in-process
    from .process import ProcessExecutor

    return ProcessExecutor(max_workers=config.workers)


def _slurm(options: Mapping[str, Any]) -> Any:
    from .slurm import SlurmExecutor

    return SlurmExecutor(_build(SlurmExecutorConfig, options, "slurm"))


_REGISTRY: dict[str, Callable[[Mapping[str, Any]], Any]] = {"local": _local, "slurm": _slurm}
_SCHEMAS: dict[str, type] = {"local": LocalExecutorConfig, "slurm": SlurmExecutorConfig}


def register_executor(name: str, factory: Callable[[Mapping[str, Any]], Any]) -> None:
    """Make ``executor_from_config(name, options)`` call ``factory(options)``."""
    _REGISTRY[name] = factory


def executor_types() -> list[str]:
    """Every executor type: built in, registered, and from installed entry points."""
    _load_entry_points()
    return sorted(_REGISTRY)


def executor_from_config(kind: str, options: Mapping[str, Any] | None = None) -> Any:
    """Create an executor of type ``kind`` (``None`` means in-process): inside a project the
    profile's ``[environments.*.executor]`` are the defaults and ``options`` win."""
    from .defaults import plan_executor

    _factory(kind)  # an unknown type fails before the project is read
    return create_executor(plan_executor(kind, dict(options or {})))


def create_executor(plan: Any) -> Any:
    """The executor an :class:`~metalab.executor.defaults.ExecutorPlan` describes."""
    return _factory(plan.kind)(dict(plan.settings))


def executor_settings(plan: Any) -> list[tuple[str, Any, str]]:
    """Every setting of a built-in executor type as ``(key, value, origin)``, defaults included,
    in the schema's order (checked as :func:`create_executor` would); a plugin type's as given."""
    _factory(plan.kind)
    schema = _SCHEMAS.get(plan.kind)
    if schema is None:
        return [(key, value, plan.origins.get(key, "given")) for key, value in plan.settings.items()]
    from .defaults import DEFAULT_ORIGIN

    config = _build(schema, plan.settings, plan.kind)
    return [(f.name, getattr(config, f.name), plan.origins.get(f.name, DEFAULT_ORIGIN)) for f in dataclasses.fields(config)]


def _factory(kind: str) -> Callable[[Mapping[str, Any]], Any]:
    if kind not in _REGISTRY:
        _load_entry_points()
    if kind not in _REGISTRY:
        hint = did_you_mean(kind, list(_REGISTRY))
        raise ConfigError(f"unknown executor type {kind!r}{hint} (types: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[kind]


def _build(cls: type, options: Mapping[str, Any], kind: str) -> Any:
    known = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in known:
            hint = did_you_mean(key, known)
            raise ExecutorOptionError(f"unknown {kind} executor option {key!r}{hint} (options: {', '.join(known)})",
                                      key=key, reason=f"unknown {kind} executor option{hint} (options: {', '.join(known)})")
    return cls(**options)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group="metalab.executors"):
        if entry.name not in _REGISTRY:
            _REGISTRY[entry.name] = entry.load()
