"""The cluster side of the SLURM executor: submit, watch, collect and cancel experiment arrays.

Every operation takes a JSON-able request and returns a JSON-able answer, so the same code
serves both paths: on the login node ``SlurmExecutor`` calls it in-process; from a workstation
it runs here on the gateway as ``python -m metalab.executor.slurm_cluster OPERATION`` with the
request on stdin (never in argv: a locator may hold a password) and the answer on stdout.

What a submission leaves under the experiment's folder (all of it free of secrets):

    slurm/{submission_id}/spec.json        the runs, the store, how to import the operation
    slurm/{submission_id}/job.sh           the array job script (every chunk runs it)
    slurm/{submission_id}/operation.py     a copy of the user's script, when the operation is in __main__
    slurm/{submission_id}/logs/            one log per task: {array job id}_{task}.log
    slurm/{submission_id}/submission.json  the chunks' job ids, written once all are queued
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import MetalabError, UsageError
from ..remote import LocalRunner
from ..store.records import SUCCESS
from . import slurm_array

__all__ = ["OPERATIONS", "SpecError", "SubmitError", "main"]

CALL_TIMEOUT = 60.0
CHECK_TIMEOUT = 300.0  # the import check loads the user's script (and whatever it imports)
SPEC_FORMAT = 1
SCRIPT_FILE = "operation.py"


class SubmitError(MetalabError):
    """The arrays could not be queued (nothing was left queued)."""


class SpecError(UsageError):
    """The operation or the store cannot be reached from the cluster (found before queueing)."""


# -- helpers ------------------------------------------------------------------------------


def _call(runner: Any, argv: list[str], what: str, timeout: float = CALL_TIMEOUT) -> str:
    done = runner.run(argv, timeout=timeout)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise SubmitError(f"{what} failed on {runner.where}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically, so a task never reads half a spec."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def submissions(experiment_dir: Path) -> list[dict[str, Any]]:
    """Every queued submission of the experiment, oldest first (one whose files were removed is skipped)."""
    found = []
    for path in sorted((experiment_dir / "slurm").glob("*/submission.json")):
        with contextlib.suppress(OSError, ValueError):
            submission = json.loads(path.read_text())
            spec = json.loads((path.parent / "spec.json").read_text())
            found.append({**submission, "runs": [run[0] for run in spec["runs"]]})
    return found


def _task_states(runner: Any, job_ids: list[str]) -> list[slurm_array.TaskState]:
    if not job_ids:
        return []
    done = runner.run(slurm_array.tasks_command(job_ids), timeout=CALL_TIMEOUT)
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return []  # every job has left slurmctld's memory (MinJobAge): none is live
        lines = done.stderr.strip().splitlines()
        raise SubmitError(f"squeue failed on {runner.where}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return slurm_array.parse_task_states(done.stdout)


class _Tracked:
    """The experiment's submissions and where each run stands: recorded, held by a live task, or lost."""

    def __init__(self, experiment_dir: Path, runner: Any) -> None:
        from ..store.files import FileStore

        self.experiment_dir = experiment_dir
        self.submissions = submissions(experiment_dir)
        job_ids = [chunk[0] for s in self.submissions for chunk in s["chunks"]]
        self.tasks = _task_states(runner, job_ids)
        self.statuses = FileStore(experiment_dir.parent).run_statuses(experiment_dir.name)
        live = {(t.job_id, t.task) for t in self.tasks if t.live}
        by_task = {(t.job_id, t.task): t for t in self.tasks}
        self.live_runs: set[str] = set()
        self.owner: dict[str, tuple[dict[str, Any], str, int]] = {}  # run -> (submission, job id, task index)
        for submission in self.submissions:
            runs = submission["runs"]
            per_task = submission["runs_per_task"]
            for job_id, offset, count in submission["chunks"]:
                for index in range(count):
                    share = runs[(offset + index) * per_task : (offset + index + 1) * per_task]
                    for run_id in share:
                        self.owner[run_id] = (submission, job_id, index)  # later submissions win
                    if (job_id, index) in live:
                        self.live_runs.update(share)
        self._by_task = by_task

    def recorded(self) -> int:
        return sum(1 for run_id in self.owner if run_id in self.statuses)

    def failures(self) -> list[dict[str, Any]]:
        """Tasks that ended without recording their runs: their run ids, state and log."""
        lost: dict[tuple[str, int], dict[str, Any]] = {}
        for run_id, (submission, job_id, index) in self.owner.items():
            if run_id in self.statuses or run_id in self.live_runs:
                continue
            entry = lost.get((job_id, index))
            if entry is None:
                task = self._by_task.get((job_id, index))
                log = self.experiment_dir / "slurm" / submission["submission_id"] / "logs" / f"{job_id}_{index}.log"
                entry = lost[(job_id, index)] = {"task": f"{job_id}_{index}", "state": task.state if task else "GONE",
                                                 "log": str(log), "runs": []}
            entry["runs"].append(run_id)
        return list(lost.values())

    def report(self) -> dict[str, Any]:
        return {
            "experiment_dir": str(self.experiment_dir),
            "job_ids": [chunk[0] for s in self.submissions for chunk in s["chunks"]],
            "tasks": slurm_array.summarize(self.tasks),
            "live_tasks": sum(1 for t in self.tasks if t.live),
            "running_tasks": sum(1 for t in self.tasks if t.state == "RUNNING"),
            "submitted": len(self.owner),
            "recorded": self.recorded(),
            "failed_runs": sum(1 for run_id in self.owner if self.statuses.get(run_id) == "failed"),
        }


# -- submit ---------------------------------------------------------------------------------


def _open_store(request: Mapping[str, Any]) -> Any:
    from ..store import open_store

    # Relative paths (and the default ./experiments) are the submitting directory's, as for a
    # local run; only discovery starts from the profile's file_root, where the bundle is.
    cwd = request.get("cwd") or os.path.expanduser("~")
    start = (request.get("file_root") or cwd) if request.get("store") == "discover" else cwd
    return open_store(request.get("store"), cwd=Path(start))


def _worker_locator(request: Mapping[str, Any], store: Any) -> str:
    """How tasks open the store: as given, but never with a password in it."""
    from ..store.locator import SCHEMES, without_password

    given = request.get("store")
    if given == "discover":
        return "discover"  # a task walks up from its submission folder to file_root's bundle
    if isinstance(given, str) and given.startswith(SCHEMES):
        return without_password(given)
    return str(store.root)


def submit(request: Mapping[str, Any], runner: Any, on_queued: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Queue the experiment's unfinished runs (those no live task holds) as arrays.

    ``on_queued(job_id)`` is told of each chunk as it is queued; if it raises (the workstation
    that asked has gone), everything queued so far is cancelled, as on any other failure.
    """
    description = request["experiment"]
    experiment_id = description["experiment_id"]
    store = _open_store(request)
    files = store.write_experiment(description)
    experiment_dir = Path(files.directory)
    before = _Tracked(experiment_dir, runner)  # its record statuses are what finished_run_ids() would read again
    finished = {run_id for run_id, status in before.statuses.items() if status == SUCCESS} if request.get("resume", True) else set()
    runs = request["runs"]
    pending = [run for run in runs if run[0] not in finished and run[0] not in before.live_runs]
    answer: dict[str, Any] = {"store": store.describe(), "experiment_dir": str(experiment_dir), "total": len(runs),
                              "finished": len(finished), "in_flight": len(before.live_runs), "submission": None}
    if not pending:
        return answer
    options = request["options"]
    submission_id = request["submission_id"]
    directory = experiment_dir / "slurm" / submission_id
    (directory / "logs").mkdir(parents=True)
    queued: list[str] = []
    try:
        limits = slurm_array.parse_site_limits(_call(runner, ["scontrol", "show", "config"], "scontrol show config"))
        runs_per_task = slurm_array.fit_runs_per_task(len(pending), options["runs_per_task"], limits)
        _write_submission_files(directory, request, store, pending, runs_per_task)
        _check(runner, directory)
        chunks = slurm_array.plan_chunks(slurm_array.task_count(len(pending), runs_per_task), limits.max_array_size)
        name = slurm_array.array_job_name(experiment_id, submission_id)
        for chunk in chunks:
            args = slurm_array.chunk_sbatch_args(chunk, max_concurrent=options.get("max_concurrent"),
                                                 after=queued[-1] if queued and options.get("max_concurrent") else None,
                                                 name=name)
            out = _call(runner, ["sbatch", *args, str(directory / "job.sh"), str(chunk.offset)], "sbatch")
            queued.append(out.strip().split(";")[0])
            if on_queued is not None:
                on_queued(queued[-1])
        record = {"submission_id": submission_id, "created_at": time.time(), "runs_per_task": runs_per_task,
                  "max_array_size": limits.max_array_size, "max_job_count": limits.max_job_count, "job_name": name,
                  "chunks": [[job_id, chunk.offset, chunk.count] for job_id, chunk in zip(queued, chunks)]}
        _write(directory / "submission.json", json.dumps(record, indent=1))
    except BaseException:
        # Nothing half-queued: cancel what went in, by the submission's unique name (an sbatch
        # interrupted mid-call may have queued a job whose id never came back), and drop the
        # folder (no task has used it).
        runner.run(["scancel", f"--name={slurm_array.array_job_name(experiment_id, submission_id)}"], timeout=CALL_TIMEOUT)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    answer["submission"] = record
    answer["submitted"] = len(pending)
    return answer


def _write_submission_files(
    directory: Path, request: Mapping[str, Any], store: Any, pending: list[Any], runs_per_task: int
) -> None:
    operation = dict(request["operation"])
    source = operation.pop("script_source", None)
    if source is not None:
        _write(directory / SCRIPT_FILE, source)
        operation["script"] = SCRIPT_FILE
    spec = {"format": SPEC_FORMAT, "experiment": request["experiment"], "seeds": request["seeds"],
            "operation": operation, "sys_path": request.get("sys_path", []), "store": _worker_locator(request, store),
            "runs_per_task": runs_per_task, "runs": pending}
    _write(directory / "spec.json", json.dumps(spec, separators=(",", ":")))
    python = request["options"]["python"]
    script = slurm_array.render_array_script(options=_Options(request["options"]), experiment_id=request["experiment"]["experiment_id"],
                                             submission_dir=str(directory), python=python)
    _write(directory / "job.sh", script, 0o755)


class _Options:
    """The executor's options (a dict on this side) as attributes, for the template."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.__dict__.update(options)


def _check(runner: Any, directory: Path) -> None:
    """Run the job script with ``--check`` here, as a task would start: the operation must import
    and the store must answer before anything is queued."""
    done = runner.run(["bash", str(directory / "job.sh"), "--check"], timeout=CHECK_TIMEOUT)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        reason = lines[-1].removeprefix("metalab: ") if lines else f"the job script's check failed (exit {done.returncode})"
        raise SpecError(f"{reason} (checked with {directory / 'job.sh'} --check; nothing was queued)")


# -- watch, collect, cancel -------------------------------------------------------------------


def attach(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """Find an experiment's submissions again (another process, later): by experiment and store."""
    store = _open_store(request)
    experiment_dir = Path(store.files(request["experiment_id"]).directory)
    if not submissions(experiment_dir):
        from ..errors import NotFoundError

        raise NotFoundError(f"experiment {request['experiment_id']} has no SLURM submission in {store.describe()}")
    return poll({"experiment_dir": str(experiment_dir)}, runner)


def poll(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """Where the experiment's submitted runs stand: one squeue, and a look at the records."""
    return _Tracked(Path(request["experiment_dir"]), runner).report()


def collect(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """The experiment's records, and the tasks that ended without recording their runs; a
    PostgreSQL store that no services' indexer follows is caught up with them on the way."""
    from ..store.files import FileStore

    experiment_dir = Path(request["experiment_dir"])
    tracked = _Tracked(experiment_dir, runner)
    catch_up = getattr(_open_store(request), "try_catch_up", None) if "store" in request else None
    if catch_up is not None:
        catch_up(experiment_dir.name)
    records = FileStore(experiment_dir.parent).load(experiment_dir.name)
    return {**tracked.report(), "records": [json.loads(record.to_json()) for record in records.values()],
            "failures": tracked.failures()}


def cancel(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """scancel every live array job of the experiment and wait until SLURM has let them go."""
    experiment_dir = Path(request["experiment_dir"])
    tracked = _Tracked(experiment_dir, runner)
    jobs = sorted({t.job_id for t in tracked.tasks if t.live})
    if jobs:
        _call(runner, ["scancel", *jobs], "scancel")
        deadline = time.monotonic() + CALL_TIMEOUT
        while any(t.live for t in _task_states(runner, jobs)):
            if time.monotonic() > deadline:
                raise SubmitError(f"array jobs {', '.join(jobs)} are still in the queue after scancel")
            time.sleep(0.2)
    return {**_Tracked(experiment_dir, runner).report(), "cancelled": jobs}


def cancel_by_name(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """scancel a submission that was interrupted before it could report its job ids."""
    _call(runner, ["scancel", f"--name={request['job_name']}"], "scancel")
    return {}


def read(request: Mapping[str, Any], runner: Any) -> dict[str, Any]:
    """Records (or the experiment list, or one experiment's description) from the files under
    ``file_root``, for a workstation that cannot see them."""
    from ..errors import NotFoundError
    from ..store.files import FileStore

    root = Path(request["file_root"])
    if not root.is_dir():
        raise NotFoundError(f"file_root {root} does not exist on {runner.where}")
    store = FileStore(root)
    what = request["what"]
    if what == "experiments":
        return {"experiments": store.experiment_ids()}
    if what == "experiment":
        return {"experiment": store.read_experiment(request["experiment_id"])}
    return {"records": [json.loads(record.to_json()) for record in store.load(request["experiment_id"]).values()]}


def _tell_queued(job_id: str) -> None:
    sys.stdout.write(json.dumps({"queued": job_id}) + "\n")
    sys.stdout.flush()


OPERATIONS: dict[str, Callable[[Mapping[str, Any], Any], dict[str, Any]]] = {
    "submit": submit, "attach": attach, "poll": poll, "collect": collect, "cancel": cancel,
    "cancel_by_name": cancel_by_name, "read": read,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m metalab.executor.slurm_cluster OPERATION``: request on stdin, answer on stdout.

    Errors travel as ``{"error": {"kind", "module", "message", "exit_code"}}`` so the workstation
    raises the same error, of the same class, it would have raised on the login node.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in OPERATIONS:
        print(f"usage: python -m metalab.executor.slurm_cluster {{{','.join(OPERATIONS)}}}", file=sys.stderr)
        return 2
    request = json.loads(sys.stdin.read())
    runner = LocalRunner()
    runner.where = f"{getpass.getuser()}@{socket.gethostname()}"  # errors travel to a workstation: name this side
    try:
        if args[0] == "submit":
            # A line per queued chunk: once the workstation has hung up, writing it fails and the
            # submission cancels what it queued instead of finishing unwatched.
            answer = submit(request, runner, on_queued=_tell_queued)
        else:
            answer = OPERATIONS[args[0]](request, runner)
    except MetalabError as error:
        answer = {"error": {"kind": type(error).__name__, "module": type(error).__module__, "message": str(error),
                            "exit_code": error.exit_code}}
    json.dump(answer, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
