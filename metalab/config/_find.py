"""Where the configuration lives: walk up from a directory, or ``METALAB_CONFIG``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError

__all__ = ["CONFIG_NAME", "CONFIG_ENV_VAR", "LOCAL_CONFIG_NAME", "find_config", "local_config_for"]

CONFIG_NAME = ".metalab.toml"
LOCAL_CONFIG_NAME = ".metalab.local.toml"
CONFIG_ENV_VAR = "METALAB_CONFIG"


def find_config(start: Path, environ: Mapping[str, str]) -> Path | None:
    """Return the project's ``.metalab.toml``, or ``None`` when there is none.

    ``METALAB_CONFIG`` wins when set (and must exist); otherwise the nearest
    ``.metalab.toml`` in ``start`` or one of its parents.
    """
    explicit = environ.get(CONFIG_ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            path = start / path
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV_VAR}={explicit}: no such file; unset it or point it at a .metalab.toml")
        return path.resolve()
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def local_config_for(config_path: Path) -> Path:
    """The personal overrides file that sits beside ``config_path``."""
    return config_path.with_name(LOCAL_CONFIG_NAME)
