"""Plain data and text views of profiles for ``env list`` / ``env show``; secrets masked."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..secret import MASK, Secret
from ._load import LoadedConfig
from ._schema import EnvironmentProfile, ServicesSection

__all__ = ["describe_profile", "format_profile", "format_profile_list", "list_profiles", "set_values"]

# Keys printed on their own lines above "Config:" rather than inside it.
_HEADLINE_KEYS = ("type", "file_root")


def set_values(obj: Any) -> dict[str, Any]:
    """The keys a dataclass actually has set, in schema order, as JSON-able data."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if value is None:
            continue
        out[field.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return set_values(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def describe_profile(name: str, profile: EnvironmentProfile, services: ServicesSection) -> dict[str, Any]:
    """The ``env show`` view of one profile: headline fields, its config, the services."""
    values = set_values(profile)
    return {
        "environment": name,
        "type": profile.type,
        "file_root": values.get("file_root"),
        "config": {key: value for key, value in values.items() if key not in _HEADLINE_KEYS},
        "services": set_values(services),
    }


def format_profile(view: dict[str, Any]) -> str:
    """Render :func:`describe_profile`'s data the way the documentation shows it."""
    lines = [
        f"Environment: {view['environment']}",
        f"Type: {view['type']}",
        f"File root: {view['file_root'] or '(not set)'}",
        "Config:",
        *(f"  {key}: {_show(value)}" for key, value in view["config"].items()),
        "Services:",
        *(f"  {key}: {_show(value)}" for key, value in view["services"].items()),
    ]
    if not view["config"]:
        lines.insert(4, "  (nothing set)")
    if not view["services"]:
        lines.append("  (none declared)")
    return "\n".join(lines)


def _show(value: Any) -> str:
    # Tables and arrays print as Python literals (as the documentation shows); scalars bare.
    return repr(value) if isinstance(value, (dict, list)) else str(value)


def list_profiles(loaded: LoadedConfig, active: str | None) -> list[dict[str, Any]]:
    """One row per profile, in file order, with the active one flagged."""
    rows = []
    for name, profile in loaded.config.environments.items():
        values = set_values(profile)
        rows.append(
            {
                "name": name,
                "type": profile.type,
                "file_root": values.get("file_root"),
                "gateway": values.get("gateway"),
                "active": name == active,
            }
        )
    return rows


def format_profile_list(rows: list[dict[str, Any]]) -> str:
    """Aligned columns: marker, name, type, where it runs."""
    if not rows:
        return "(no environments defined)"
    width = max(len(row["name"]) for row in rows)
    type_width = max(len(row["type"]) for row in rows)
    lines = []
    for row in rows:
        marker = "*" if row["active"] else " "
        where = " ".join(
            part for part in (
                f"gateway={row['gateway']}" if row["gateway"] else "",
                f"file_root={row['file_root']}" if row["file_root"] else "",
            ) if part
        )
        lines.append(f"{marker} {row['name']:<{width}}  {row['type']:<{type_width}}  {where}".rstrip())
    return "\n".join(lines)
