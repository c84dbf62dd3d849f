"""Project configuration: find, load and merge ``.metalab.toml``, then select a profile."""

from __future__ import annotations

from . import _render as render
from ._find import CONFIG_ENV_VAR, CONFIG_NAME, LOCAL_CONFIG_NAME, find_config, local_config_for
from ._load import LoadedConfig, load_config, locate_and_load
from ._merge import deep_merge
from ._resolve import ENV_VAR, ResolvedEnvironment, resolve_environment, select_environment
from ._schema import (
    ENVIRONMENT_TYPES,
    AtlasServiceConfig,
    EnvironmentProfile,
    LocalExecutorDefaults,
    LocalProfile,
    MetalabConfig,
    PostgresServiceConfig,
    ProjectSection,
    ServicesSection,
    SlurmExecutorDefaults,
    SlurmProfile,
    SlurmServicesResources,
)
from ._validate import is_slurm_memory, is_slurm_time

__all__ = [
    "CONFIG_ENV_VAR",
    "CONFIG_NAME",
    "ENVIRONMENT_TYPES",
    "ENV_VAR",
    "LOCAL_CONFIG_NAME",
    "AtlasServiceConfig",
    "EnvironmentProfile",
    "LoadedConfig",
    "LocalExecutorDefaults",
    "LocalProfile",
    "MetalabConfig",
    "PostgresServiceConfig",
    "ProjectSection",
    "ResolvedEnvironment",
    "ServicesSection",
    "SlurmExecutorDefaults",
    "SlurmProfile",
    "SlurmServicesResources",
    "deep_merge",
    "render",
    "find_config",
    "is_slurm_memory",
    "is_slurm_time",
    "load_config",
    "local_config_for",
    "locate_and_load",
    "resolve_environment",
    "select_environment",
]

