"""Seeds: a base and replicates; every random stream is a pure function of (base, replicate, name).

The derivation uses SHA-256 of a fixed text, never Python's salted ``hash()``, so a run draws
the same numbers on every executor, machine and Python version.
"""

from __future__ import annotations

import hashlib
import random as _random
from dataclasses import dataclass
from typing import Any

__all__ = ["SeedPlan", "Seeds", "derive_seed", "seeds"]

DEFAULT_STREAM = "default"


def derive_seed(base: int, replicate: int, name: str = DEFAULT_STREAM) -> int:
    """A 64-bit seed for stream ``name`` of replicate ``replicate`` under ``base``."""
    digest = hashlib.sha256(f"metalab-seed:{base}:{replicate}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class SeedPlan:
    """How many replicates each parameter point runs, and the base they derive from."""

    base: int
    replicates: int

    def __post_init__(self) -> None:
        if self.replicates < 1:
            raise ValueError("seeds(replicates=...) must be at least 1")

    def describe(self) -> dict[str, Any]:
        return {"base": self.base, "replicates": self.replicates}


def seeds(base: int = 0, replicates: int = 1) -> SeedPlan:
    """``seeds(base=123, replicates=3)``: every parameter point runs three times."""
    return SeedPlan(base=int(base), replicates=int(replicates))


class Seeds:
    """What an operation receives: independent, reproducible random streams by name."""

    __slots__ = ("base", "replicate")

    def __init__(self, base: int, replicate: int) -> None:
        self.base = base
        self.replicate = replicate

    def seed(self, name: str = DEFAULT_STREAM) -> int:
        """The integer seed of stream ``name`` (for libraries that take one)."""
        return derive_seed(self.base, self.replicate, name)

    def rng(self, name: str = DEFAULT_STREAM) -> _random.Random:
        """A ``random.Random`` for stream ``name``."""
        return _random.Random(self.seed(name))

    def numpy(self, name: str = DEFAULT_STREAM) -> Any:
        """A ``numpy.random.Generator`` for stream ``name`` (numpy must be installed)."""
        import numpy as np

        return np.random.Generator(np.random.PCG64(self.seed(name)))

    def __repr__(self) -> str:
        return f"Seeds(base={self.base}, replicate={self.replicate})"
