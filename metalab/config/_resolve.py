"""Pick the active environment: ``--env``, then ``METALAB_ENV``, then ``default_env``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError
from ._load import LoadedConfig
from ._schema import EnvironmentProfile, ProjectSection, ServicesSection

__all__ = ["ENV_VAR", "ResolvedEnvironment", "resolve_environment", "select_environment"]

ENV_VAR = "METALAB_ENV"


class ResolvedEnvironment(NamedTuple):
    """Everything a command needs about the selected profile, fully merged."""

    name: str
    selected_by: str
    profile: EnvironmentProfile
    services: ServicesSection
    project: ProjectSection
    project_name: str
    config_path: Path

    @property
    def type(self) -> str:
        return self.profile.type

    @property
    def file_root(self) -> Path | None:
        return self.profile.file_root

    @property
    def behind_gateway(self) -> bool:
        """True on a workstation: the profile's cluster (and its file_root) is reached only
        through a gateway that is another machine."""
        gateway = getattr(self.profile, "gateway", None)
        if self.type != "slurm" or not gateway:
            return False
        from ..remote import is_this_host

        return not is_this_host(gateway)


def select_environment(
    names: Sequence[str],
    *,
    flag: str | None,
    environ: Mapping[str, str],
    default_env: str | None,
    config_path: Path,
) -> tuple[str | None, str]:
    """Return ``(profile name, what selected it)``; flags win over variables over the file.

    The name is ``None`` when nothing selects a profile and there are several to choose from.
    """
    for value, source in ((flag, "--env"), (environ.get(ENV_VAR), ENV_VAR), (default_env, "default_env")):
        if not value:
            continue
        if value not in names:
            where = f"{config_path}: [project] default_env = {value!r}" if source == "default_env" else f"{source} {value!r}"
            raise ConfigError(f"{where} names no environment profile (profiles: {_names(names)})")
        return value, source
    if len(names) == 1:
        return names[0], "the only profile"
    return None, ""


def resolve_environment(loaded: LoadedConfig, *, flag: str | None, environ: Mapping[str, str]) -> ResolvedEnvironment:
    """Select a profile from ``loaded`` and bundle it with the project and services sections."""
    config = loaded.config
    name, source = select_environment(
        list(config.environments),
        flag=flag,
        environ=environ,
        default_env=config.project.default_env,
        config_path=loaded.path,
    )
    if name is None:
        if not config.environments:
            raise ConfigError(f"{loaded.path}: no [environments.*] profile; add one, e.g. [environments.local] type = \"local\"")
        raise ConfigError(
            f"no environment selected: pass --env, set {ENV_VAR}, or set default_env in [project] of {loaded.path} "
            f"(profiles: {_names(list(config.environments))})"
        )
    return ResolvedEnvironment(
        name=name,
        selected_by=source,
        profile=config.environments[name],
        services=config.services,
        project=config.project,
        project_name=loaded.project_name,
        config_path=loaded.path,
    )


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none defined"
