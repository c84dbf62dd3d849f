"""``metalab.run()``, ``metalab.load_results()`` and ``metalab.resolve_executor()``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .experiment import Experiment
from .progress import RunProgress
from .results import Results
from .store import open_store

__all__ = ["RunHandle", "load_results", "reconnect", "resolve_executor", "run"]

log = logging.getLogger("metalab")

# Set while a SLURM task imports the user's script: a run() there would submit the sweep again.
RUN_FORBIDDEN_REASON: str | None = None


class RunHandle:
    """What ``metalab.run()`` returns: ``result()`` gives the experiment's results."""

    def __init__(self, experiment: Experiment, store: Any, *, skipped: int, ran: int) -> None:
        self.experiment = experiment
        self.store = store
        self.skipped = skipped
        self.ran = ran

    def result(self) -> Results:
        """Every run of the experiment as the store now records it, in the experiment's order."""
        return load_results(self.store, self.experiment)

    @property
    def status(self) -> str:
        return "done"


def run(
    experiment: Experiment,
    *,
    store: Any = None,
    executor: Any = None,
    progress: bool | None = None,
    resume: bool = True,
) -> RunHandle:
    """Run every run of ``experiment`` not yet finished in ``store``, on ``executor``.

    Args:
        experiment: what to run.
        store: ``None`` (``./experiments/``), a path, a ``postgresql://`` locator, ``"discover"``,
            a ``StoreConfig`` or a store object.
        executor: ``None`` runs in this process; ``ProcessExecutor(n)``, ``SlurmExecutor(...)``
            or whatever ``executor_from_config``/``resolve_executor`` returned.
        progress: ``None`` (default) or ``True``: a live line on a terminal, plain lines every few
            seconds elsewhere (a job's log, nohup, CI); ``False``: silent.
        resume: skip runs the store already holds as succeeded (failed runs run again).

    Returns a handle whose ``result()`` gives the results. An executor that queues work
    elsewhere (``SlurmExecutor``) returns at once with its own handle (``status``, ``cancel()``).
    """
    _refuse_inside_a_task()
    if hasattr(executor, "submit"):
        return executor.submit(experiment, store=store, resume=resume, progress=progress)
    store = open_store(store)
    files = store.write_experiment(experiment.describe())
    specs = list(experiment.runs())
    finished = store.finished_run_ids(experiment.experiment_id) if resume else set()
    pending = [spec for spec in specs if spec.run_id not in finished]
    where = executor.describe() if executor is not None else "in-process"
    log.info("store: %s", store.describe())
    log.info("executor: %s", where)
    log.info("runs: %d total, %d already done, %d to run", len(specs), len(specs) - len(pending), len(pending))
    meter = RunProgress(len(pending), enabled=progress)
    if meter.enabled and len(pending) < len(specs):
        meter.write(f"{experiment.experiment_id}: {len(specs) - len(pending)} of {len(specs)} runs already done")
    indexing = getattr(store, "indexing", None)  # a PostgresStore's index follows the files as they grow
    try:
        with indexing(experiment.experiment_id) if indexing else contextlib.nullcontext():
            if executor is None:
                from .runner import run_serially

                run_serially(
                    experiment, pending, files, store.sink(experiment.experiment_id),
                    on_record=lambda record: meter.update(done=1, failed=record.status != "success"),
                )
            else:
                executor.execute(experiment, pending, store, meter)
    finally:
        meter.close()
    return RunHandle(experiment, store, skipped=len(specs) - len(pending), ran=len(pending))


def _refuse_inside_a_task() -> None:
    if RUN_FORBIDDEN_REASON is not None:
        from .errors import UsageError

        raise UsageError(RUN_FORBIDDEN_REASON)


def reconnect(experiment: Experiment | str, *, store: Any = None, executor: Any, progress: bool | None = None) -> Any:
    """The handle of an experiment already submitted with ``executor`` to ``store`` (for example
    from a process that has since exited): ``status``, ``result()``, ``cancel()``. Submits nothing."""
    _refuse_inside_a_task()
    if not hasattr(executor, "reconnect"):
        from .errors import UsageError

        raise UsageError(f"{executor!r} runs experiments in the calling process; there is nothing to reconnect to")
    return executor.reconnect(experiment, store=store, progress=progress)


def load_results(store: Any, experiment: Experiment | str) -> Results:
    """The records of ``experiment`` (an Experiment, or its id) as the store holds them."""
    store = open_store(store)
    if isinstance(experiment, Experiment):
        records = store.load(experiment.experiment_id)
        ordered = [records[spec.run_id] for spec in experiment.runs() if spec.run_id in records]
        return Results(experiment.experiment_id, ordered)
    records = store.load(experiment)
    return Results(experiment, sorted(records.values(), key=lambda r: (r.started_at, r.run_id)))


def resolve_executor(platform: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The executor for profile ``platform``: its ``[environments.<platform>.executor]`` table
    (local overrides included) as defaults, ``overrides`` on top. Without a ``.metalab.toml``,
    ``platform`` names the executor type and ``overrides`` are the whole configuration."""
    from .config import find_config
    from .executor.config import create_executor, executor_from_config
    from .executor.defaults import plan_executor

    if find_config(Path.cwd(), os.environ) is None:
        return executor_from_config(platform, overrides)
    return create_executor(plan_executor(None, dict(overrides or {}), profile=platform))
