"""One SLURM array task: ``python -m metalab.executor.worker SUBMISSION_DIR OFFSET``.

Task ``OFFSET + $SLURM_ARRAY_TASK_ID`` of the submission runs its share of ``spec.json``'s runs
and writes each record to the store as it finishes. The spec holds no secret: a PostgreSQL
store's password comes from ``{file_root}/services/postgres.password`` or the services bundle
(``store="discover"``), as it would for any other process on the cluster.

With ``--check`` instead of an offset it runs nothing: it imports the operation and reaches the
store as a task would, so that a script that cannot be imported fails the submission, not
every task.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import MetalabError, UsageError

__all__ = ["import_operation", "main", "task_runs"]

SCRIPT_MODULE = "__metalab_main__"  # not "__main__": the script's `if __name__ == "__main__":` block must not run


class OperationNotImportable(UsageError):
    """The operation named in the spec cannot be imported on the cluster."""


def task_runs(spec: dict[str, Any], task: int) -> list[list[Any]]:
    """The runs task ``task`` owns: ``runs_per_task`` consecutive entries of the spec."""
    per_task = spec["runs_per_task"]
    return spec["runs"][task * per_task : (task + 1) * per_task]


def import_operation(spec: dict[str, Any], submission_dir: Path) -> Any:
    """The operation as the spec names it: ``module:qualname``, or a name in the user's script."""
    from .. import api

    for entry in reversed(spec.get("sys_path", [])):
        if os.path.isdir(entry) and entry not in sys.path:
            sys.path.insert(0, entry)
    reference = spec["operation"]
    where = reference.get("script_path") or reference.get("module")
    api.RUN_FORBIDDEN_REASON = (
        f"metalab.run() was called while a SLURM task imported {where}; "
        "put the call under `if __name__ == \"__main__\":` so that tasks do not submit the sweep again"
    )
    try:
        module = _load_module(reference, submission_dir)
        target: Any = module
        for part in reference["qualname"].split("."):
            target = getattr(target, part)
    except MetalabError:
        raise
    except AttributeError:
        raise OperationNotImportable(
            f"operation {reference['qualname']} is not a module-level name of {where}; define it at module level"
        ) from None
    except Exception as error:  # noqa: BLE001 -- the user's module may raise anything: say which and why, on one line
        message = " ".join(str(error).split()) or type(error).__name__
        raise OperationNotImportable(f"cannot import operation from {where} on the cluster: {type(error).__name__}: {message}") from None
    finally:
        api.RUN_FORBIDDEN_REASON = None
    if not callable(target):
        raise OperationNotImportable(f"{where}:{reference['qualname']} is not callable")
    return target


def _load_module(reference: dict[str, Any], submission_dir: Path) -> Any:
    if reference.get("script") is None:
        return importlib.import_module(reference["module"])
    path = submission_dir / reference["script"]
    loader_spec = importlib.util.spec_from_file_location(SCRIPT_MODULE, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[SCRIPT_MODULE] = module  # before running it: dataclasses and pickling look it up
    loader_spec.loader.exec_module(module)
    return module


def _experiment(spec: dict[str, Any], operation: Any) -> Any:
    """Just enough of the Experiment for :func:`execute_run`: its operation and seeds."""
    from ..experiment import Experiment
    from ..seeding import SeedPlan

    described = spec["experiment"]
    seeds = spec["seeds"]
    return Experiment(name=described["name"], version=described["version"], operation=operation, params=[],
                      seeds=SeedPlan(base=seeds["base"], replicates=seeds["replicates"]))


def _check_store(store: Any) -> None:
    """The task writes only files (a PostgreSQL store's index follows them): they must be writable."""
    if not os.access(store.root if store.root.exists() else store.root.parent, os.W_OK):
        raise UsageError(f"cannot write to the store at {store.root} from the cluster")


def run_task(spec: dict[str, Any], submission_dir: Path, task: int) -> int:
    """Run the task's runs not yet finished; returns how many it ran."""
    from ..experiment import RunSpec
    from ..runner import run_serially
    from ..store import open_store

    operation = import_operation(spec, submission_dir)
    store = open_store(spec["store"], cwd=submission_dir)
    experiment = _experiment(spec, operation)
    experiment_id = spec["experiment"]["experiment_id"]
    mine = task_runs(spec, task)
    finished = store.finished_run_ids(experiment_id)  # a requeued task does not redo what it finished
    todo = [RunSpec(run_id=r[0], params=r[1], replicate=r[2], index=r[3]) for r in mine if r[0] not in finished]
    job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', 'local')}_{os.environ.get('SLURM_ARRAY_TASK_ID', task)}"
    print(f"metalab task {task} (job {job}): {len(todo)} of {len(mine)} runs to do", flush=True)
    failed: list[str] = []
    clock = time.perf_counter()
    run_serially(experiment, todo, store.files(experiment_id), store.sink(experiment_id, f"slurm-{job}-{os.getpid()}"),
                 on_record=lambda record: failed.append(record.run_id) if not record.succeeded else None)
    for run_id in failed:
        print(f"run {run_id} failed (its record holds the traceback)", flush=True)
    print(f"metalab task {task}: {len(todo)} runs recorded in {time.perf_counter() - clock:.3f} s, {len(failed)} failed", flush=True)
    return len(todo)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # scancel or walltime: unwind so the record file is closed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m metalab.executor.worker SUBMISSION_DIR (OFFSET | --check)", file=sys.stderr)
        return 2
    submission_dir = Path(args[0])
    try:
        spec = json.loads((submission_dir / "spec.json").read_text(encoding="utf-8"))
        if args[1] == "--check":
            from ..store import open_store

            import_operation(spec, submission_dir)
            _check_store(open_store(spec["store"], cwd=submission_dir))
            return 0
        signal.signal(signal.SIGTERM, _terminate)
        run_task(spec, submission_dir, int(args[1]) + int(os.environ["SLURM_ARRAY_TASK_ID"]))
        return 0
    except MetalabError as error:
        print(f"metalab: {error}", file=sys.stderr)
        return error.exit_code
    except (OSError, ValueError, KeyError) as error:
        print(f"metalab: cannot run task from {submission_dir}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
