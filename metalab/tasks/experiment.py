"""``metalab run|results|status|cancel FILE``: an experiment file, run locally or on SLURM.

The same tasks make the ``experiment`` collection (``experiment.run`` & co.) for a user's own
``tasks.py``. Overrides follow the file: ``metalab run exp.yaml executor.gpus=2``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from invoke import Collection

from ..errors import MetalabError, UsageError
from ._common import chosen_env, emit_json, is_dry, metalab_task

__all__ = ["cancel", "experiment_collection", "results", "run", "status"]

_FILE_HELP = "The experiment file (YAML)."
_SET_HELP = "key.path=value, overriding the file (repeatable; `metalab run FILE key=value` also works)."
_ENV_HELP = "The environment profile (overrides the file's env:)."


@metalab_task(positional=["file"], iterable=["set_"],
              help={"file": _FILE_HELP, "set_": _SET_HELP, "env": _ENV_HELP,
                    "detach": "On SLURM: submit and return at once (follow with `metalab status FILE`)."})
def run(c, file, set_=None, env=None, detach=False):
    """Run an experiment file's sweep (or submit it to SLURM), with progress; --dry shows the plan."""
    loaded = _load(c, file, set_, env)
    if is_dry(c):
        from ..experiment_file.plan import describe_plan

        print(describe_plan(loaded))
        return
    import metalab

    from ..executor.config import create_executor

    executor = create_executor(loaded.executor)
    with _info_to_stderr():
        handle = metalab.run(loaded.experiment, store=_store_for(loaded, executor), executor=executor,
                             resume=loaded.resume)
        if hasattr(handle, "cancel"):
            _follow(handle, file, detach)
            return
    _summarize(handle.result(), file)


@metalab_task(positional=["file"], iterable=["set_"],
              help={"file": _FILE_HELP, "set_": _SET_HELP, "env": _ENV_HELP, "csv": "As CSV.", "json": "As JSON."})
def results(c, file, set_=None, env=None, csv=False, json=False):
    """Print an experiment file's results: a table, or --csv / --json."""
    loaded = _load(c, file, set_, env)
    found, problem = _results(loaded)
    if json:
        emit_json(found.rows())
    elif csv:
        _write_csv(found.rows())
    else:
        print(found.table(max_rows=None) if len(found) else f"{found.experiment_id}: no runs recorded yet")
    if problem is not None:
        raise problem


@metalab_task(positional=["file"], iterable=["set_"],
              help={"file": _FILE_HELP, "set_": _SET_HELP, "env": _ENV_HELP, "json": "As JSON."})
def status(c, file, set_=None, env=None, json=False):
    """Where an experiment file's runs stand: recorded, failed, and its SLURM tasks."""
    loaded = _load(c, file, set_, env)
    report = _status(loaded)
    if json:
        emit_json(report)
        return
    line = f"{report['experiment']}: {report['recorded']} of {report['runs']} runs recorded ({report['failed']} failed)"
    if "tasks" in report:
        tasks = ", ".join(f"{count} {state.lower()}" for state, count in sorted(report["tasks"].items())) or "none"
        line += f"; SLURM array tasks: {tasks} ({report['live_tasks']} queued or running)"
    print(line)


@metalab_task(positional=["file"], iterable=["set_"], help={"file": _FILE_HELP, "set_": _SET_HELP, "env": _ENV_HELP})
def cancel(c, file, set_=None, env=None):
    """Cancel an experiment file's SLURM array jobs (scancel), from any machine."""
    loaded = _load(c, file, set_, env)
    handle = _reconnect(loaded)
    if is_dry(c):
        print(f"would cancel the live array jobs of {loaded.experiment.experiment_id}")
        return
    cancelled = handle.cancel()
    print(f"cancelled array jobs {', '.join(cancelled)}" if cancelled else f"{loaded.experiment.experiment_id}: no live array jobs")


experiment_collection = Collection("experiment", run, results, status, cancel)


# --------------------------------------------------------------------------- helpers


def _load(c: Any, file: str, overrides: list[str] | None, env: str | None) -> Any:
    from ..experiment_file import load_experiment_file

    return load_experiment_file(file, overrides=overrides or [], env=chosen_env(c, env))


def _store_for(loaded: Any, executor: Any) -> Any:
    """A SLURM submission hands the locator to the cluster, which finds the store itself; a local
    run opens it here, with the file's profile selecting the bundle for ``discover``."""
    if hasattr(executor, "submit"):
        return loaded.store
    return loaded.open_store()


def _follow(handle: Any, file: str, detach: bool) -> None:
    """Wait for a SLURM submission with progress; Ctrl+C cancels its jobs (none keeps burning
    allocation unasked). ``--detach`` leaves them queued and says how to follow them."""
    if detach:
        print(f"submitted {handle.ran} run(s) as array jobs {', '.join(handle.job_ids) or '(none: all done)'}; "
              f"follow with `metalab status {file}`, stop with `metalab cancel {file}`")
        return
    try:
        found = handle.result()
    except KeyboardInterrupt:
        cancelled = handle.cancel()
        print(f"\ninterrupted: cancelled array jobs {', '.join(cancelled) or '(none were live)'}", file=sys.stderr)
        raise
    _summarize(found, file)


def _summarize(found: Any, file: str) -> None:
    print(f"{found.experiment_id}: {len(found)} runs recorded, {found.succeeded} succeeded, {found.failed} failed; "
          f"see `metalab results {file}`")
    if found.failed:
        first = found.failures()[0]
        lines = (first.error or "").strip().splitlines()
        error = lines[-1] if lines else "no error recorded"  # a traceback's last line names the exception
        raise _RunsFailed(f"{found.failed} of {len(found)} runs failed (first: run {first.run_id}: {error})")


class _RunsFailed(MetalabError):
    """Some runs of the sweep failed; their records (and tracebacks) are in the store."""


def _results(loaded: Any) -> tuple[Any, Exception | None]:
    """The results recorded so far; on SLURM through the cluster, with the tasks that ended
    without recording their runs as the problem to report after the table."""
    from ..executor.slurm import TasksFailed

    if loaded.executor.kind == "slurm":
        try:
            return _reconnect(loaded).collect(), None
        except TasksFailed as error:
            return error.results, error
    import metalab

    store = loaded.open_store()
    return metalab.load_results(store, loaded.experiment), None


def _status(loaded: Any) -> dict[str, Any]:
    experiment = loaded.experiment
    report: dict[str, Any] = {"experiment": experiment.experiment_id, "runs": len(experiment)}
    if loaded.executor.kind == "slurm":
        polled = _reconnect(loaded).poll()
        return {**report, "recorded": polled["recorded"], "failed": polled["failed_runs"], "tasks": polled["tasks"],
                "live_tasks": polled["live_tasks"], "job_ids": polled["job_ids"]}
    found, _ = _results(loaded)
    return {**report, "recorded": len(found), "failed": found.failed}


def _reconnect(loaded: Any) -> Any:
    import metalab

    from ..executor.config import create_executor

    executor = create_executor(loaded.executor)
    if not hasattr(executor, "reconnect"):
        raise UsageError(f"{loaded.path}: a {loaded.executor.kind} experiment runs inside `metalab run`; "
                         "there is no job to reach (stop it with Ctrl+C where it runs)")
    return metalab.reconnect(loaded.experiment, store=loaded.store, executor=executor)


def _write_csv(rows: list[dict[str, Any]]) -> None:
    import csv

    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    writer = csv.DictWriter(sys.stdout, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


@contextlib.contextmanager
def _info_to_stderr():
    """run()'s INFO lines (store, executor, run counts) on stderr while the command runs."""
    logger = logging.getLogger("metalab")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
