"""What an experiment file may say, checked strictly: pure functions over the parsed data.

``check(data)`` returns the first :class:`Problem` (the key path and what to change) or
``None``; ``apply_override`` lays a ``key.path=value`` from the command line on the data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import did_you_mean
from ._yaml import KeyPath

__all__ = ["DISTRIBUTIONS", "PARAM_KINDS", "TOP_KEYS", "Problem", "apply_override", "check", "dotted"]

TOP_KEYS = ("name", "version", "operation", "params", "seeds", "context", "store", "executor", "env", "resume",
            "hash_source")
_REQUIRED = ("name", "version", "operation", "params")
PARAM_KINDS = ("grid", "random", "manual")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "normal", "choice")
_SEED_KEYS = ("base", "replicates")
_RANDOM_KEYS = ("count", "seed")


class Problem(NamedTuple):
    """The first thing wrong with an experiment file: where, and what to do."""

    path: KeyPath
    message: str


def dotted(path: KeyPath) -> str:
    """``("params", "grid", "lr")`` → ``params.grid.lr``; list items as ``[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def check(data: Any) -> Problem | None:
    """The first problem in an experiment file's data, or ``None`` when it is valid."""
    if not isinstance(data, Mapping):
        return Problem((), f"must be a mapping of keys (name, version, operation, params, ...), not {_kind(data)}")
    problem = _unknown_keys(data, TOP_KEYS, ())
    if problem:
        return problem
    for key in _REQUIRED:
        if key not in data:
            return Problem((key,), "is required")
    return (_check_text(data, "name") or _check_version(data) or _check_operation(data) or _check_params(data["params"])
            or _check_seeds(data) or _check_mapping(data, "context") or _check_text(data, "store")
            or _check_text(data, "env") or _check_bool(data, "resume") or _check_bool(data, "hash_source")
            or _check_executor(data))


def apply_override(data: Mapping[str, Any], path: tuple[str, ...], value: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``data`` with ``path`` set to ``value``, and the path as stored. ``params.lr`` is short for
    the axis ``lr`` of the file's one parameter source (``params.grid.lr``, ``params.random.lr``)."""
    params = data.get("params")
    if path[:1] == ("params",) and len(path) == 2 and path[1] not in PARAM_KINDS and isinstance(params, Mapping):
        kinds = [kind for kind in PARAM_KINDS if kind in params]
        if len(kinds) == 1 and kinds[0] != "manual":
            path = ("params", kinds[0], path[1])
    out = copy.deepcopy(dict(data))
    node = out
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
    return out, path


# --------------------------------------------------------------------------- the parts


def _check_version(data: Mapping[str, Any]) -> Problem | None:
    value = data["version"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return Problem(("version",), f"must be a string or a number, not {_kind(value)}")
    return None


def _check_operation(data: Mapping[str, Any]) -> Problem | None:
    value = data["operation"]
    module, _, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not module or not name or not all(p.isidentifier() for p in (*module.split("."), *name.split("."))):
        return Problem(("operation",), f"must be module:function (e.g. train:train), not {_kind(value)}")
    return None


def _check_params(params: Any) -> Problem | None:
    where: KeyPath = ("params",)
    if not isinstance(params, Mapping):
        return Problem(where, f"must be a mapping with one of {', '.join(PARAM_KINDS)}, not {_kind(params)}")
    problem = _unknown_keys(params, PARAM_KINDS, where)
    if problem:
        return problem
    kinds = [kind for kind in PARAM_KINDS if kind in params]
    if len(kinds) != 1:
        return Problem(where, f"needs exactly one of {', '.join(PARAM_KINDS)} (has {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    check_kind = {"grid": _check_grid, "random": _check_random, "manual": _check_manual}[kind]
    return check_kind(params[kind], (*where, kind))


def _check_grid(grid: Any, where: KeyPath) -> Problem | None:
    if not isinstance(grid, Mapping) or not grid:
        return Problem(where, f"must map each parameter to its list of values, not {_kind(grid)}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            return Problem((*where, name), f"must be a non-empty list of values, not {_kind(values)}")
    return None


def _check_random(space: Any, where: KeyPath) -> Problem | None:
    if not isinstance(space, Mapping):
        return Problem(where, f"must be a mapping (count, seed, and a distribution per parameter), not {_kind(space)}")
    if "count" not in space:
        return Problem((*where, "count"), "is required: how many points to draw")
    problem = _check_whole(space, "count", where, least=1) or _check_whole(space, "seed", where, least=0)
    if problem:
        return problem
    names = [key for key in space if key not in _RANDOM_KEYS]
    if not names:
        return Problem(where, "names no parameter to draw (e.g. lr: {loguniform: [1e-4, 1e-1]})")
    for name in names:
        problem = _check_distribution(space[name], (*where, name))
        if problem:
            return problem
    return None


def _check_distribution(spec: Any, where: KeyPath) -> Problem | None:
    if isinstance(spec, list):
        return None if spec else Problem(where, "must list at least one choice")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        return Problem(where, f"must be a list of choices or one of {', '.join(DISTRIBUTIONS)}: [a, b], not {_kind(spec)}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        return Problem((*where, kind), f"unknown distribution{did_you_mean(str(kind), DISTRIBUTIONS)} (distributions: {', '.join(DISTRIBUTIONS)})")
    here = (*where, kind)
    if kind == "choice":
        return None if isinstance(args, list) and args else Problem(here, f"must be a non-empty list, not {_kind(args)}")
    if not isinstance(args, list) or len(args) != 2 or not all(_is_number(a) for a in args):
        wanted = "[mean, std]" if kind == "normal" else "[low, high]"
        return Problem(here, f"must be two numbers {wanted}, not {_kind(args)}")
    a, b = args
    if kind == "uniform" and not a < b:
        return Problem(here, f"needs low < high, not [{a}, {b}]")
    if kind == "loguniform" and not 0 < a < b:
        return Problem(here, f"needs 0 < low < high, not [{a}, {b}]")
    if kind == "randint" and not (_is_int(a) and _is_int(b) and a <= b):
        return Problem(here, f"needs whole numbers low <= high, not [{a}, {b}]")
    if kind == "normal" and not b > 0:
        return Problem(here, f"needs std > 0, not {b}")
    return None


def _check_manual(points: Any, where: KeyPath) -> Problem | None:
    if not isinstance(points, list) or not points:
        return Problem(where, f"must be a non-empty list of parameter mappings, not {_kind(points)}")
    for index, point in enumerate(points):
        if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
            return Problem((*where, index), f"must be a mapping of parameter names to values, not {_kind(point)}")
    return None


def _check_seeds(data: Mapping[str, Any]) -> Problem | None:
    if "seeds" not in data:
        return None
    seeds = data["seeds"]
    if not isinstance(seeds, Mapping):
        return Problem(("seeds",), f"must be a mapping with base and replicates, not {_kind(seeds)}")
    problem = _unknown_keys(seeds, _SEED_KEYS, ("seeds",))
    if problem:
        return problem
    return _check_whole(seeds, "base", ("seeds",)) or _check_whole(seeds, "replicates", ("seeds",), least=1)


def _check_whole(section: Mapping[str, Any], key: str, where: KeyPath, least: int | None = None) -> Problem | None:
    """``section[key]``, when present, is a whole number (of at least ``least``)."""
    if key not in section:
        return None
    value = section[key]
    if _is_int(value) and (least is None or value >= least):
        return None
    wanted = "a whole number" if least is None else f"a whole number of at least {least}"
    return Problem((*where, key), f"must be {wanted}, not {_kind(value)}")


def _check_executor(data: Mapping[str, Any]) -> Problem | None:
    """The shape only; each option is checked against the executor type's own schema later."""
    if "executor" not in data:
        return None
    executor = data["executor"]
    if not isinstance(executor, Mapping):
        return Problem(("executor",), f"must be a mapping (type, and the options that differ), not {_kind(executor)}")
    if "type" in executor and not isinstance(executor["type"], str):
        return Problem(("executor", "type"), f"must be a string (local, slurm), not {_kind(executor['type'])}")
    return None


def _check_text(data: Mapping[str, Any], key: str) -> Problem | None:
    if key in data and (not isinstance(data[key], str) or not data[key]):
        return Problem((key,), f"must be a non-empty string, not {_kind(data[key])}")
    return None


def _check_bool(data: Mapping[str, Any], key: str) -> Problem | None:
    if key in data and not isinstance(data[key], bool):
        return Problem((key,), f"must be true or false, not {_kind(data[key])}")
    return None


def _check_mapping(data: Mapping[str, Any], key: str) -> Problem | None:
    if key in data and not isinstance(data[key], Mapping):
        return Problem((key,), f"must be a mapping, not {_kind(data[key])}")
    return None


def _unknown_keys(data: Mapping[str, Any], known: tuple[str, ...], where: KeyPath) -> Problem | None:
    for key in data:
        if key not in known:
            return Problem((*where, key), f"unknown key{did_you_mean(str(key), known)} (valid keys: {', '.join(known)})")
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    if isinstance(value, Mapping):
        return "a mapping"
    if value is None:
        return "nothing"
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
