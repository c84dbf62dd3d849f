"""Running runs: one run in this process, and a serial loop over many.

Every executor ends up here: a worker process or a SLURM array task calls
:func:`execute_run` for each run it owns and hands the record to its store's sink.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .capture import Capture
from .experiment import Experiment, RunSpec
from .seeding import Seeds
from .store.records import FAILED, SUCCESS, RunRecord

__all__ = ["Sink", "execute_run", "run_serially"]


class Sink(Protocol):
    """Where a process puts its finished records (a store's writer)."""

    def write(self, record: RunRecord) -> None: ...

    def close(self) -> None: ...


def execute_run(experiment: Experiment, spec: RunSpec, files: Any) -> RunRecord:
    """Run the operation once; a raised exception becomes a failed record with its traceback."""
    capture = Capture(spec.run_id, files)
    seeds = Seeds(experiment.seeds.base, spec.replicate)
    started = time.time()
    clock = time.perf_counter()
    capture.attach_logging()
    try:
        experiment.operation(dict(spec.params), seeds, capture)
        status, error = SUCCESS, None
    except Exception:
        status, error = FAILED, traceback.format_exc()
    finally:
        capture.close()
    return RunRecord(
        run_id=spec.run_id, params=spec.params, seed=experiment.seeds.base, replicate=spec.replicate,
        status=status, metrics=capture.metrics, steps=capture.steps, data=capture.values,
        artifacts=capture.artifacts, log=files.relative(files.log_path(spec.run_id)) if capture.has_log else None,
        error=error, started_at=started, duration=time.perf_counter() - clock,
    )  # fmt: skip


def run_serially(
    experiment: Experiment,
    specs: Iterable[RunSpec],
    files: Any,
    sink: Sink,
    on_record: Callable[[RunRecord], None] | None = None,
) -> None:
    """Run ``specs`` one after another; each record is in the sink before the next run starts,
    so an interrupt (Ctrl+C, a walltime) keeps every finished run."""
    try:
        for spec in specs:
            record = execute_run(experiment, spec, files)
            sink.write(record)
            if on_record is not None:
                on_record(record)
    finally:
        sink.close()
