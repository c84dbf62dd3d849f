"""Parameter sources: ``grid`` (every combination), ``random`` (sampled) and ``manual`` (listed).

Each source is a sized, re-iterable sequence of plain dicts in a fixed order, so the same
experiment always expands to the same runs on every machine.
"""

from __future__ import annotations

import itertools
import math
import random as _random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Choice",
    "Distribution",
    "Grid",
    "LogUniform",
    "Manual",
    "Normal",
    "ParamSource",
    "RandInt",
    "RandomSearch",
    "Uniform",
    "choice",
    "grid",
    "loguniform",
    "manual",
    "normal",
    "randint",
    "random",
    "uniform",
]


class ParamSource(Sequence[dict[str, Any]]):
    """A deterministic, sized list of parameter dicts."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary recorded with the experiment."""
        raise NotImplementedError


class Grid(ParamSource):
    """Every combination of the given axes, the last axis varying fastest."""

    def __init__(self, axes: Mapping[str, Sequence[Any]]) -> None:
        for name, values in axes.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TypeError(f"grid axis {name!r} must be a list of values, not {type(values).__name__}")
            if not values:
                raise ValueError(f"grid axis {name!r} has no values")
        self._names = list(axes)
        self._values = [list(values) for values in axes.values()]
        self._sizes = [len(values) for values in self._values]

    def __len__(self) -> int:
        return math.prod(self._sizes) if self._names else 0

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        point = {}
        for name, values, size in zip(reversed(self._names), reversed(self._values), reversed(self._sizes)):
            index, position = divmod(index, size)
            point[name] = values[position]
        return {name: point[name] for name in self._names}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self._names:
            return iter(())
        return (dict(zip(self._names, combo)) for combo in itertools.product(*self._values))

    def describe(self) -> dict[str, Any]:
        return {"kind": "grid", "axes": {name: values for name, values in zip(self._names, self._values)}}


class Manual(ParamSource):
    """Exactly the listed parameter dicts, in order."""

    def __init__(self, points: Sequence[Mapping[str, Any]]) -> None:
        self._points = [dict(point) for point in points]
        for point in self._points:
            if not all(isinstance(key, str) for key in point):
                raise TypeError("manual parameter names must be strings")

    def __len__(self) -> int:
        return len(self._points)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [dict(point) for point in self._points[index]]
        return dict(self._points[index])

    def describe(self) -> dict[str, Any]:
        return {"kind": "manual", "count": len(self._points)}


@dataclass(frozen=True)
class Distribution:
    """A named distribution to sample one parameter from."""

    def sample(self, rng: _random.Random) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"distribution": type(self).__name__.lower(), **self.__dict__}


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def sample(self, rng: _random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogUniform(Distribution):
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError("loguniform needs 0 < low < high")

    def sample(self, rng: _random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


@dataclass(frozen=True)
class RandInt(Distribution):
    low: int
    high: int  # inclusive

    def sample(self, rng: _random.Random) -> int:
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Normal(Distribution):
    mean: float
    std: float

    def sample(self, rng: _random.Random) -> float:
        return rng.gauss(self.mean, self.std)


@dataclass(frozen=True)
class Choice(Distribution):
    options: tuple[Any, ...]

    def sample(self, rng: _random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))]


class RandomSearch(ParamSource):
    """``count`` points, each parameter drawn from its distribution by a generator seeded
    with ``seed`` alone: the same seed gives the same points everywhere."""

    def __init__(self, distributions: Mapping[str, Distribution | Sequence[Any]], *, count: int, seed: int) -> None:
        if count < 0:
            raise ValueError("random(count=...) must be >= 0")
        self._distributions = {
            name: dist if isinstance(dist, Distribution) else Choice(tuple(dist)) for name, dist in distributions.items()
        }
        self._count, self._seed = count, seed
        rng = _random.Random(seed)
        self._points = [
            {name: dist.sample(rng) for name, dist in self._distributions.items()} for _ in range(count)
        ]

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [dict(point) for point in self._points[index]]
        return dict(self._points[index])

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "random",
            "count": self._count,
            "seed": self._seed,
            "distributions": {name: dist.describe() for name, dist in self._distributions.items()},
        }


def grid(**axes: Sequence[Any]) -> Grid:
    """Every combination: ``grid(lr=[0.1, 0.01], layers=[1, 2])`` gives 4 points."""
    return Grid(axes)


def random(*, count: int, seed: int = 0, **distributions: Distribution | Sequence[Any]) -> RandomSearch:
    """``count`` sampled points: ``random(lr=loguniform(1e-4, 1e-1), layers=choice([1, 2]), count=20, seed=0)``.

    A plain list is shorthand for ``choice(list)``.
    """
    return RandomSearch(distributions, count=count, seed=seed)


def manual(points: Sequence[Mapping[str, Any]]) -> Manual:
    """Exactly these points: ``manual([{"lr": 0.1}, {"lr": 0.01, "warmup": 5}])``."""
    return Manual(points)


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    return LogUniform(low, high)


def randint(low: int, high: int) -> RandInt:
    """An integer in ``[low, high]``, both ends included."""
    return RandInt(low, high)


def normal(mean: float, std: float) -> Normal:
    return Normal(mean, std)


def choice(options: Sequence[Any]) -> Choice:
    return Choice(tuple(options))
