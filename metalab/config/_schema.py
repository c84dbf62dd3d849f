"""Typed, frozen mirrors of `.metalab.toml`: what the files say, nothing more.

Every optional key defaults to ``None`` so that printed profiles show exactly what was
configured; the code that consumes a value owns its default (``DEFAULT_*`` constants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..secret import Secret

__all__ = [
    "AtlasServiceConfig",
    "ENVIRONMENT_TYPES",
    "EnvironmentProfile",
    "LocalExecutorDefaults",
    "LocalProfile",
    "MetalabConfig",
    "POSTGRES_AUTH_METHODS",
    "PostgresServiceConfig",
    "ProjectSection",
    "ServicesSection",
    "SlurmExecutorDefaults",
    "SlurmProfile",
    "SlurmServicesResources",
    "UNSUPPORTED_TYPES",
]


@dataclass(frozen=True, kw_only=True)
class ProjectSection:
    """``[project]``: the project's name and its default environment."""

    name: str | None = None
    default_env: str | None = None


@dataclass(frozen=True, kw_only=True)
class PostgresServiceConfig:
    """``[services.postgres]``: ports, auth and database, the same on every backend."""

    port: int | None = None
    user: str | None = None
    database: str | None = None
    password: Secret | None = None
    auth_method: str | None = None
    bin_dir: str | None = None
    run_as: str | None = None


@dataclass(frozen=True, kw_only=True)
class AtlasServiceConfig:
    """``[services.atlas]``: the dashboard's port and whether it asks for a token on loopback."""

    port: int | None = None
    require_token: bool | None = None


@dataclass(frozen=True, kw_only=True)
class ServicesSection:
    """``[services]``: the declared services; an absent table means "not provisioned"."""

    postgres: PostgresServiceConfig | None = None
    atlas: AtlasServiceConfig | None = None


@dataclass(frozen=True, kw_only=True)
class SlurmServicesResources:
    """``[environments.X.services]``: the allocation for the node that hosts the services."""

    partition: str | None = None
    time: str | None = None
    memory: str | None = None
    cpus: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch_args: list[str] | None = None
    modules: list[str] | None = None
    setup: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class SlurmExecutorDefaults:
    """``[environments.X.executor]`` for SLURM: defaults for experiment array jobs."""

    partition: str | None = None
    time: str | None = None
    cpus: int | None = None
    memory: str | None = None
    gpus: int | None = None
    max_concurrent: int | None = None
    modules: list[str] | None = None
    conda_env: str | None = None
    setup: list[str] | None = None
    mail_user: str | None = None
    mail_type: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None


@dataclass(frozen=True, kw_only=True)
class LocalExecutorDefaults:
    """``[environments.X.executor]`` for a local profile: how many worker processes."""

    workers: int | None = None


@dataclass(frozen=True, kw_only=True)
class LocalProfile:
    """A ``type = "local"`` profile: services as subprocesses on this machine."""

    type: str
    file_root: Path | None = None
    executor: LocalExecutorDefaults | None = None


@dataclass(frozen=True, kw_only=True)
class SlurmProfile:
    """A ``type = "slurm"`` profile: identity, connectivity and resources on a cluster."""

    type: str
    gateway: str | None = None
    user: str | None = None
    ssh_key: Path | None = None
    file_root: Path | None = None
    services: SlurmServicesResources | None = None
    executor: SlurmExecutorDefaults | None = None


EnvironmentProfile = LocalProfile | SlurmProfile

# What pg_hba.conf may require of TCP logins; "trust" is deliberately not offered.
POSTGRES_AUTH_METHODS = ("scram-sha-256", "md5", "password")

# Backends as data: the profile schema each supported ``type`` is validated against.
ENVIRONMENT_TYPES: dict[str, type] = {"local": LocalProfile, "slurm": SlurmProfile}
UNSUPPORTED_TYPES = ("kubernetes", "cloud")


@dataclass(frozen=True, kw_only=True)
class MetalabConfig:
    """The whole merged configuration (base file, then the local overrides)."""

    project: ProjectSection = field(default_factory=ProjectSection)
    services: ServicesSection = field(default_factory=ServicesSection)
    environments: dict[str, EnvironmentProfile] = field(default_factory=dict)
