"""An experiment: a named, versioned operation over parameter points and seed replicates.

A run's id is a pure function of the experiment's name and version, its parameters and its
seed, so rerunning the same experiment finds the runs it already finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .operations import Operation
from .params import Manual, ParamSource
from .seeding import SeedPlan

__all__ = ["Experiment", "RunSpec", "canonical_json", "run_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _plain(value: Any) -> Any:
    """Numbers as Python numbers (numpy scalars included), containers as lists and dicts."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # An integral float hashes like the equal int, as Python's own == says they are equal.
        return int(value) if value.is_integer() and math.isfinite(value) else value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if getattr(value, "ndim", 0) > 0 and callable(getattr(value, "tolist", None)):  # numpy arrays
        return _plain(value.tolist())
    item = getattr(value, "item", None)  # numpy scalars and 0-d arrays
    if callable(item):
        return _plain(item())
    raise TypeError(f"parameter value {value!r} of type {type(value).__name__} cannot be recorded; use numbers, strings, lists or dicts")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, numpy scalars as the equal Python numbers."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def run_id(experiment_key: str, params: Mapping[str, Any], seed_base: int, replicate: int) -> str:
    """The run's id: 20 hex digits of SHA-256 over everything that defines the run."""
    text = f"{experiment_key}\x00{canonical_json(params)}\x00{seed_base}\x00{replicate}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RunSpec:
    """One run to execute: which parameters, which replicate."""

    run_id: str
    params: dict[str, Any]
    replicate: int
    index: int  # position in the experiment's expansion


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """``Experiment(name=, version=, context=, operation=, params=, seeds=)``."""

    name: str
    version: str
    operation: Operation
    params: ParamSource | Sequence[Mapping[str, Any]]
    seeds: SeedPlan = field(default_factory=lambda: SeedPlan(base=0, replicates=1))
    context: Mapping[str, Any] = field(default_factory=dict)
    hash_source: bool = False  # opt-in: a changed operation body then means new runs

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("Experiment(name=...) must be a non-empty string")
        object.__setattr__(self, "version", str(self.version))
        if not isinstance(self.operation, Operation):
            if callable(self.operation):
                object.__setattr__(self, "operation", Operation(self.operation))
            else:
                raise TypeError("Experiment(operation=...) must be a function decorated with @metalab.operation")
        if not isinstance(self.params, ParamSource):
            object.__setattr__(self, "params", Manual(self.params))

    @property
    def experiment_id(self) -> str:
        """A folder-safe id: ``{name}-{version}``."""
        return f"{_UNSAFE.sub('_', self.name)}-{_UNSAFE.sub('_', self.version)}"

    @property
    def key(self) -> str:
        """What run ids are derived from: name and version, plus the source digest if opted in."""
        key = f"{self.name}\x00{self.version}"
        return f"{key}\x00{self.operation.source_hash()}" if self.hash_source else key

    def __len__(self) -> int:
        return len(self.params) * self.seeds.replicates

    def runs(self) -> Iterator[RunSpec]:
        """Every run, parameter point by point, replicates innermost."""
        key, base, replicates = self.key, self.seeds.base, self.seeds.replicates
        index = 0
        for params in self.params:
            for replicate in range(replicates):
                yield RunSpec(run_id=run_id(key, params, base, replicate), params=params, replicate=replicate, index=index)
                index += 1

    def describe(self) -> dict[str, Any]:
        """What the store records about the experiment itself."""
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "version": self.version,
            "operation": self.operation.reference,
            "params": self.params.describe(),
            "seeds": self.seeds.describe(),
            "context": _plain(dict(self.context)),
            "runs": len(self),
        }
