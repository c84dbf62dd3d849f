"""metalab: parameter sweeps locally or on SLURM, and the services their results go to.

    import metalab

    @metalab.operation
    def train(params, seeds, capture):
        capture.metric("score", seeds.rng().random() * params["scale"])

    exp = metalab.Experiment(name="mvp", version="0.1", operation=train,
                             params=metalab.grid(scale=[0.1, 1.0]), seeds=metalab.seeds(base=1, replicates=2))
    results = metalab.run(exp).result()

Names are imported on first use, so ``import metalab`` (and the CLI) stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name -> module that defines it
_EXPORTS = {
    "operation": "metalab.operations",
    "Operation": "metalab.operations",
    "Experiment": "metalab.experiment",
    "grid": "metalab.params",
    "random": "metalab.params",
    "manual": "metalab.params",
    "uniform": "metalab.params",
    "loguniform": "metalab.params",
    "randint": "metalab.params",
    "normal": "metalab.params",
    "choice": "metalab.params",
    "seeds": "metalab.seeding",
    "Seeds": "metalab.seeding",
    "run": "metalab.api",
    "load_results": "metalab.api",
    "reconnect": "metalab.api",
    "resolve_executor": "metalab.api",
    "RunHandle": "metalab.api",
    "Results": "metalab.results",
    "RunRecord": "metalab.store.records",
    "FileStore": "metalab.store.files",
    "PostgresStore": "metalab.store.postgres",
    "StoreConfig": "metalab.store",
    "ProcessExecutor": "metalab.executor.process",
    "SlurmExecutor": "metalab.executor.slurm",
    "SlurmRun": "metalab.executor.slurm",
    "TasksFailed": "metalab.executor.slurm",
    "executor_from_config": "metalab.executor.config",
    "discover": "metalab.bundle",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metalab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
