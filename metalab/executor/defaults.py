"""Executor settings as documented: the project's ``[environments.*.executor]`` under what is given.

One path for ``executor_from_config``, ``resolve_executor`` and experiment files. Inside a
project the chosen profile's executor table (local overrides included) and, for SLURM, its
identity (gateway, user, ssh_key, python, file_root) are the defaults; the given values win.
Without a ``.metalab.toml`` only the given values count. Every setting keeps where it came from,
for ``metalab run --dry``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULT_ORIGIN", "ExecutorPlan", "plan_executor", "profile_for_executor"]

DEFAULT_ORIGIN = "metalab's default"
# A SLURM profile's identity, which its executor needs to reach the cluster.
_IDENTITY_KEYS = ("gateway", "user", "ssh_key", "python", "file_root")


@dataclass(frozen=True)
class ExecutorPlan:
    """What an executor will be made from: its type, the profile that gave defaults, every
    setting, and where each came from (a file and key, "given", or metalab's default)."""

    kind: str
    profile: str | None
    settings: dict[str, Any]
    origins: dict[str, str]


def plan_executor(
    kind: str | None,
    given: Mapping[str, Any],
    *,
    profile: str | None = None,
    given_origin: Mapping[str, str] | str = "given",
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExecutorPlan:
    """Merge the project's defaults for ``kind`` under ``given``.

    ``profile`` names the profile to take defaults from (its type must be ``kind``; ``kind``
    may then be ``None``); without it the active profile (``METALAB_ENV``, ``default_env``)
    serves if it is of type ``kind``, else the only profile of that type.
    """
    from ..config import find_config, load_config

    environ = os.environ if environ is None else environ
    path = find_config(start or Path.cwd(), environ)
    loaded = load_config(path) if path is not None else None
    if loaded is None and profile is not None:
        raise ConfigError(f"profile {profile!r} named, but there is no .metalab.toml in {start or Path.cwd()} or above")
    name = profile_for_executor(loaded, kind, profile, environ) if loaded is not None else None
    if kind is None:
        kind = loaded.config.environments[name].type if name is not None else "local"
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if name is not None:
        settings, origins = _profile_defaults(loaded, name)
    for key, value in given.items():
        settings[key] = value
        origins[key] = given_origin if isinstance(given_origin, str) else given_origin.get(key, "given")
    return ExecutorPlan(kind=kind, profile=name, settings=settings, origins=origins)


def profile_for_executor(loaded: Any, kind: str | None, named: str | None, environ: Mapping[str, str]) -> str | None:
    """The profile whose defaults an executor of type ``kind`` takes (see :func:`plan_executor`)."""
    from ..config import ENV_VAR

    profiles = loaded.config.environments
    if named is not None:
        if named not in profiles:
            raise ConfigError(f"{loaded.path}: no environment profile {named!r} (profiles: {', '.join(profiles) or 'none'})")
        if kind is not None and profiles[named].type != kind:
            raise ConfigError(f"executor type {kind!r} does not match profile {named!r}, whose type is {profiles[named].type!r}")
        return named
    active = environ.get(ENV_VAR) or loaded.config.project.default_env
    if active in profiles and profiles[active].type == kind:
        return active
    of_kind = [name for name, p in profiles.items() if p.type == kind]
    if len(of_kind) > 1:
        raise ConfigError(f"{loaded.path}: several {kind} profiles ({', '.join(of_kind)}); choose one with --env "
                          f"(or env: in an experiment file, or {ENV_VAR})")
    return of_kind[0] if of_kind else None


def _profile_defaults(loaded: Any, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    profile = loaded.config.environments[name]
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def take(key: str, value: Any, keypath: tuple[str, ...]) -> None:
        settings[key] = str(value) if isinstance(value, Path) else value
        section = ".".join(keypath[:-1])
        origins[key] = f"{loaded.origin(keypath).name} [{section}]"

    if profile.type == "slurm":
        for key in _IDENTITY_KEYS:
            value = getattr(profile, key)
            if value is not None:
                take(key, value, ("environments", name, key))
    if profile.executor is not None:
        for field in dataclasses.fields(profile.executor):
            value = getattr(profile.executor, field.name)
            if value is not None:
                take(field.name, list(value) if isinstance(value, list) else value,
                     ("environments", name, "executor", field.name))
    return settings, origins
