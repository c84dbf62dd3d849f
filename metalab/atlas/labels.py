"""Short, stable names for runs: the parameters that vary across the experiment, and the replicate.

    lr=0.01 width=64 #2

Pure: a label depends only on the experiment's description (``experiment.json``: which params
its grid or random search varies, how many replicates it has), the names in its catalogue and
the run's own params and replicate, never on which other runs a page happens to show, so a run
has the same label on every page and at every moment. The run id stays in links and in titles
(shown on hover).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["labeller", "params_label", "run_label", "varying_params"]

VALUE_CHARS = 24  # a longer value (a string, a list) is cut, with an ellipsis


def varying_params(description: Mapping[str, Any], param_names: Iterable[str]) -> list[str]:
    """The params whose value differs between the experiment's runs, sorted by name: a grid's
    axes with more than one value, a random search's distributions except a one-option choice;
    for a manual list (or an unknown description) every param the catalogue has."""
    params = description.get("params") if isinstance(description, Mapping) else None
    params = params if isinstance(params, Mapping) else {}
    kind = params.get("kind")
    if kind == "grid" and isinstance(params.get("axes"), Mapping):
        names = [name for name, values in params["axes"].items()
                 if not isinstance(values, (list, tuple)) or len(values) > 1]
    elif kind == "random" and isinstance(params.get("distributions"), Mapping):
        names = [name for name, spec in params["distributions"].items() if not _constant(spec)]
    else:
        names = list(param_names)
    return sorted(str(name) for name in names)


def _constant(spec: Any) -> bool:
    """A distribution that always gives the same value (a choice of one option)."""
    if not isinstance(spec, Mapping):
        return False
    options = spec.get("options")
    return spec.get("distribution") == "choice" and isinstance(options, (list, tuple)) and len(options) == 1


def run_label(params: Mapping[str, Any], replicate: Any, varying: Iterable[str], replicates: int | None,
              run_id: str) -> str:
    """``name=value`` for each varying param the run has, then ``#replicate`` when the experiment
    has several replicates (or its count is unknown and this is not replicate 0); the start of
    the run id when that leaves nothing."""
    parts = [params_label(params, varying)] if any(name in params for name in varying) else []
    if isinstance(replicate, int) and (replicates is None and replicate != 0 or (replicates or 0) > 1):
        parts.append(f"#{replicate}")
    return " ".join(parts) or run_id[:10]


def params_label(params: Mapping[str, Any], names: Iterable[str]) -> str:
    """``lr=0.01 width=64``: the named params the run has (a group of runs' name too)."""
    return " ".join(f"{name}={_value(params[name])}" for name in names if name in params)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def labeller(description: Mapping[str, Any], param_names: Iterable[str]) -> Callable[[Mapping[str, Any]], str]:
    """A run (a dict with ``run_id``, ``params``, ``replicate``, as the index gives it) to its label."""
    varying = varying_params(description, param_names)
    seeds = description.get("seeds") if isinstance(description, Mapping) else None
    replicates = seeds.get("replicates") if isinstance(seeds, Mapping) else None
    replicates = replicates if type(replicates) is int else None

    def label(run: Mapping[str, Any]) -> str:
        return run_label(run.get("params") or {}, run.get("replicate"), varying, replicates, str(run.get("run_id", "")))

    return label
