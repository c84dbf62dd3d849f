"""Load ``.metalab.toml`` and ``.metalab.local.toml``, merge them, validate into dataclasses."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import dacite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from ..errors import ConfigError, NotFoundError
from ..secret import Secret
from ._find import CONFIG_NAME, find_config, local_config_for
from ._merge import deep_merge
from ._schema import ENVIRONMENT_TYPES, MetalabConfig, ProjectSection, ServicesSection
from ._validate import KeyPath, find_problem, format_key

__all__ = ["LoadedConfig", "load_config", "locate_and_load"]

_PATH_KEYS = ("file_root", "ssh_key")


class LoadedConfig(NamedTuple):
    """A validated configuration and the files it came from."""

    path: Path
    local_path: Path | None
    config: MetalabConfig
    local_keys: frozenset[KeyPath] = frozenset()  # every key path the local overrides set (no values)

    def origin(self, key: KeyPath) -> Path:
        """The file that set ``key``: the local overrides, else ``.metalab.toml``."""
        return self.local_path if self.local_path is not None and key in self.local_keys else self.path

    @property
    def root(self) -> Path:
        """The project root: the directory that holds ``.metalab.toml``."""
        return self.path.parent

    @property
    def project_name(self) -> str:
        """``[project] name``, else the project directory's name."""
        return self.config.project.name or self.root.name


def locate_and_load(start: Path, environ: Mapping[str, str]) -> LoadedConfig:
    """Find the project's config from ``start`` and load it; :class:`NotFoundError` if none."""
    path = find_config(start, environ)
    if path is None:
        raise NotFoundError(
            f"no {CONFIG_NAME} in {start.resolve()} or any parent directory; "
            f"run `metalab init` there to create one"
        )
    return load_config(path)


def load_config(path: Path) -> LoadedConfig:
    """Read ``path`` and the overrides beside it; raise :class:`ConfigError` on the first problem."""
    local_path = local_config_for(path)
    base = _read_toml(path)
    local = _read_toml(local_path) if local_path.is_file() else {}
    merged = deep_merge(base, local)

    def origin(key: KeyPath) -> Path:
        return local_path if _has_path(local, key) else path

    problem = find_problem(merged)
    if problem:
        where = problem.path
        # Point at the file that set the offending key (or, for a missing key, its table).
        source = origin(where) if _has_path(merged, where) else origin(where[:-1])
        raise ConfigError(f"{source}: {format_key(where)}: {problem.message}")
    _resolve_paths(merged, path.parent)
    config = _build(merged)
    return LoadedConfig(path=path, local_path=local_path if local_path.is_file() else None, config=config,
                        local_keys=frozenset(_key_paths(local)))


def _key_paths(data: Mapping[str, Any], prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key path in ``data``, tables and leaves."""
    paths: list[KeyPath] = []
    for key, value in data.items():
        paths.append((*prefix, key))
        if isinstance(value, Mapping):
            paths.extend(_key_paths(value, (*prefix, key)))
    return paths


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _has_path(data: Mapping[str, Any], key: KeyPath) -> bool:
    node: Any = data
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _resolve_paths(merged: dict[str, Any], root: Path) -> None:
    """Expand ``~`` and anchor relative paths at the project root, never the cwd."""
    for profile in merged.get("environments", {}).values():
        for key in _PATH_KEYS:
            if key in profile:
                value = Path(profile[key]).expanduser()
                profile[key] = value if value.is_absolute() else (root / value).resolve()


def _build(merged: dict[str, Any]) -> MetalabConfig:
    """Construct the dataclasses; each profile by the schema its ``type`` names."""
    strict = dacite.Config(strict=True, type_hooks={Secret: Secret})
    environments = {
        name: dacite.from_dict(ENVIRONMENT_TYPES[profile["type"]], profile, config=strict)
        for name, profile in merged.get("environments", {}).items()
    }
    return MetalabConfig(
        project=dacite.from_dict(ProjectSection, merged.get("project", {}), config=strict),
        services=dacite.from_dict(ServicesSection, merged.get("services", {}), config=strict),
        environments=environments,
    )
