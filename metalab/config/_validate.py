"""Check a merged configuration against the schema, naming the key of the first problem.

Pure functions: they take plain TOML data and return either nothing or a
:class:`Problem` that names the key path and what to change.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import did_you_mean
from ..secret import Secret
from ._schema import ENVIRONMENT_TYPES, POSTGRES_AUTH_METHODS, UNSUPPORTED_TYPES, MetalabConfig

__all__ = ["Problem", "find_problem", "is_slurm_memory", "is_slurm_time", "format_key"]

KeyPath = tuple[str, ...]


class Problem(NamedTuple):
    """The first thing wrong with a configuration: where it is and what to do."""

    path: KeyPath
    message: str


_SLURM_TIME = re.compile(
    r"""^(?:
        (?P<m>\d+)                                   # MM
      | (?P<ms>\d+):(?P<ms_s>\d{1,2})                  # MM:SS
      | (?P<h>\d+):(?P<h_m>\d{1,2}):(?P<h_s>\d{1,2})   # HH:MM:SS
      | (?P<d>\d+)-(?P<d_h>\d{1,2})(?::(?P<d_m>\d{1,2})(?::(?P<d_s>\d{1,2}))?)?  # D-HH[:MM[:SS]]
    )$""",
    re.VERBOSE,
)
_SLURM_MEMORY = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_UNLIMITED = {"unlimited", "infinite"}


def is_slurm_time(value: str) -> bool:
    """True for every walltime format SLURM accepts (``MM`` … ``D-HH:MM:SS``, ``UNLIMITED``)."""
    if value.strip().lower() in _UNLIMITED:
        return True
    match = _SLURM_TIME.match(value.strip())
    if not match:
        return False
    groups = match.groupdict()
    bounded = [groups[k] for k in ("ms_s", "h_m", "h_s", "d_m", "d_s") if groups[k] is not None]
    if any(int(part) >= 60 for part in bounded):
        return False
    return groups["d_h"] is None or int(groups["d_h"]) < 24


def is_slurm_memory(value: str) -> bool:
    """True for SLURM memory sizes: a whole number with an optional K, M, G or T suffix."""
    return bool(_SLURM_MEMORY.match(value.strip()))


def format_key(path: KeyPath) -> str:
    """``("environments", "slurm", "time")`` → ``[environments.slurm] time``."""
    if len(path) == 1:
        return f"[{path[0]}]"
    return f"[{'.'.join(path[:-1])}] {path[-1]}"


def find_problem(data: Mapping[str, Any]) -> Problem | None:
    """Return the first schema or value problem in ``data``, or ``None`` when it is valid."""
    return _check_table(MetalabConfig, data, ())


def _check_table(schema: type, data: Any, path: KeyPath) -> Problem | None:
    if not isinstance(data, Mapping):
        return Problem(path, f"must be a table, not {_describe(data)}")
    hints = _hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]
    for key in data:
        if key not in known:
            return Problem((*path, key), _unknown_key_message(key, known))
    for field in dataclasses.fields(schema):
        if field.name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                return Problem((*path, field.name), "is required")
            continue
        problem = _check_value(hints[field.name], data[field.name], (*path, field.name))
        if problem:
            return problem
    return _check_values(schema, data, path)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(schema: type) -> dict[str, Any]:
    """The schema's resolved annotations, computed once per class."""
    if schema not in _HINTS:
        _HINTS[schema] = typing.get_type_hints(schema)
    return _HINTS[schema]


def _check_value(hint: Any, value: Any, path: KeyPath) -> Problem | None:
    if path == ("environments",):
        return _check_environments(value)
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] if _is_union(hint) else [hint]
    if len(options) != 1:
        raise TypeError(f"unsupported schema type {hint!r}")
    target = options[0]
    if dataclasses.is_dataclass(target):
        return _check_table(target, value, path)
    if typing.get_origin(target) is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return Problem(path, f"must be a list of strings, not {_describe(value)}")
        return None
    expected = {str: str, Secret: str, Path: str, int: int, bool: bool}[target]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return Problem(path, f"must be {_article(expected)}, not {_describe(value)}")
    return None


def _check_environments(value: Any) -> Problem | None:
    path: KeyPath = ("environments",)
    if not isinstance(value, Mapping):
        return Problem(path, f"must be a table of profiles, not {_describe(value)}")
    for name, profile in value.items():
        where = (*path, name)
        if not isinstance(profile, Mapping):
            return Problem(where, f"must be a table, not {_describe(profile)}")
        kind = profile.get("type")
        supported = ", ".join(ENVIRONMENT_TYPES)
        if kind is None:
            return Problem((*where, "type"), f"is missing; set type = one of: {supported}")
        if kind in UNSUPPORTED_TYPES:
            return Problem((*where, "type"), f"{kind!r} is not supported yet (supported: {supported})")
        if kind not in ENVIRONMENT_TYPES:
            hint = did_you_mean(str(kind), list(ENVIRONMENT_TYPES))
            return Problem((*where, "type"), f"unknown type {kind!r}{hint} (supported: {supported})")
        problem = _check_table(ENVIRONMENT_TYPES[kind], profile, where)
        if problem:
            return problem
    return None


def _check_values(schema: type, data: Mapping[str, Any], path: KeyPath) -> Problem | None:
    """Value rules that types cannot express: SLURM walltimes, memory sizes, counts."""
    for key, value in data.items():
        where = (*path, key)
        if key == "time" and isinstance(value, str) and not is_slurm_time(value):
            return Problem(where, f"{value!r} is not a SLURM time (use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)")
        if key == "memory" and isinstance(value, str) and not is_slurm_memory(value):
            return Problem(where, f"{value!r} is not a SLURM memory size (a number with an optional K, M, G or T suffix, e.g. 512M or 10G)")
        if key == "auth_method" and isinstance(value, str) and value not in POSTGRES_AUTH_METHODS:
            return Problem(where, f"{value!r} is not supported (use one of: {', '.join(POSTGRES_AUTH_METHODS)})")
        if key in {"port"} and isinstance(value, int) and not 0 < value < 65536:
            return Problem(where, f"{value} is not a TCP port (1-65535)")
        if key in {"cpus", "gpus", "max_concurrent", "runs_per_task", "workers"} and isinstance(value, int) and value < (0 if key == "gpus" else 1):
            return Problem(where, f"{value} is too small")
    return None


def _unknown_key_message(key: str, known: list[str]) -> str:
    return f"unknown key{did_you_mean(key, known)} (valid keys: {', '.join(known)})"




def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _article(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false"}[kind]


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, Mapping) else "a table"
