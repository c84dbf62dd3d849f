"""Typed, frozen mirrors of `.metalab.toml`: what the files say, nothing more.

Every optional key defaults to ``None`` so that printed profiles show exactly what was
configured; the code that consumes a value owns its default (``DEFAULT_*`` constants).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..secret import Secret

# Every command loads these, and generating methods is most of a dataclass's creation cost:
# configurations are never compared (``eq=False``), and one shared ``__repr__`` serves all.
frozen = dataclass(frozen=True, kw_only=True, eq=False, repr=False)


class _Section:
    """Base of every schema class: a repr listing the fields (secrets mask themselves)."""

    __slots__ = ()

    def __repr__(self) -> str:
        values = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({values})"

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


@frozen
class ProjectSection(_Section):
    """``[project]``: the project's name and its default environment."""

    name: str | None = None
    default_env: str | None = None


@frozen
class PostgresServiceConfig(_Section):
    """``[services.postgres]``: ports, auth and database, the same on every backend."""

    port: int | None = None
    user: str | None = None
    database: str | None = None
    password: Secret | None = None
    auth_method: str | None = None
    bin_dir: str | None = None
    run_as: str | None = None


@frozen
class AtlasServiceConfig(_Section):
    """``[services.atlas]``: the dashboard's port and whether it asks for a token on loopback."""

    port: int | None = None
    require_token: bool | None = None


@frozen
class ServicesSection(_Section):
    """``[services]``: the declared services; an absent table means "not provisioned"."""

    postgres: PostgresServiceConfig | None = None
    atlas: AtlasServiceConfig | None = None


@frozen
class SlurmServicesResources(_Section):
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


@frozen
class SlurmExecutorDefaults(_Section):
    """``[environments.X.executor]`` for SLURM: defaults for experiment array jobs."""

    partition: str | None = None
    time: str | None = None
    cpus: int | None = None
    memory: str | None = None
    gpus: int | None = None
    max_concurrent: int | None = None
    runs_per_task: int | None = None
    modules: list[str] | None = None
    conda_env: str | None = None
    setup: list[str] | None = None
    mail_user: str | None = None
    mail_type: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None


@frozen
class LocalExecutorDefaults(_Section):
    """``[environments.X.executor]`` for a local profile: how many worker processes."""

    workers: int | None = None


@frozen
class LocalProfile(_Section):
    """A ``type = "local"`` profile: services as subprocesses on this machine."""

    type: str
    file_root: Path | None = None
    executor: LocalExecutorDefaults | None = None


@frozen
class SlurmProfile(_Section):
    """A ``type = "slurm"`` profile: identity, connectivity and resources on a cluster."""

    type: str
    gateway: str | None = None
    user: str | None = None
    ssh_key: Path | None = None
    file_root: Path | None = None
    python: str | None = None  # the interpreter (with metalab) that jobs run on the cluster
    services: SlurmServicesResources | None = None
    executor: SlurmExecutorDefaults | None = None


EnvironmentProfile = LocalProfile | SlurmProfile

# What pg_hba.conf may require of TCP logins; "trust" is deliberately not offered.
POSTGRES_AUTH_METHODS = ("scram-sha-256", "md5", "password")

# Backends as data: the profile schema each supported ``type`` is validated against.
ENVIRONMENT_TYPES: dict[str, type] = {"local": LocalProfile, "slurm": SlurmProfile}
UNSUPPORTED_TYPES = ("kubernetes", "cloud")


@frozen
class MetalabConfig(_Section):
    """The whole merged configuration (base file, then the local overrides)."""

    project: ProjectSection = field(default_factory=ProjectSection)
    services: ServicesSection = field(default_factory=ServicesSection)
    environments: dict[str, EnvironmentProfile] = field(default_factory=dict)
