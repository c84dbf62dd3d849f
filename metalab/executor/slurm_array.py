"""Experiment arrays as data: chunks that fit the site, the job script, and squeue's answers.

Pure functions, tested without a cluster; ``slurm_cluster.py`` does the submitting.

A submission runs its pending runs as array *tasks* (``runs_per_task`` runs each). SLURM caps
an array's indices below ``MaxArraySize``, so the tasks are split into chunks of at most that
many, each its own array job whose task ``i`` is task ``offset + i`` of the submission. SLURM's
``%N`` throttle holds per array; for one cap across every chunk, each chunk waits for the one
before it (``--dependency=afterany``), so at most ``max_concurrent`` tasks ever run at once.
"""

from __future__ import annotations

import math
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_MAX_ARRAY_SIZE",
    "DEFAULT_MAX_JOB_COUNT",
    "Chunk",
    "SiteLimits",
    "TaskState",
    "array_job_name",
    "chunk_sbatch_args",
    "fit_runs_per_task",
    "parse_site_limits",
    "parse_task_states",
    "plan_chunks",
    "render_array_script",
    "sbatch_directives",
    "summarize",
    "task_count",
    "tasks_command",
]

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own defaults, when scontrol does not say
DEFAULT_MAX_JOB_COUNT = 10000
SHARE_OF_MAX_JOB_COUNT = 4  # one sweep takes at most a quarter of the job records slurmctld keeps
TASK_FORMAT = "%F|%K|%T|%r|%N"  # array job id, task index, state, reason, node
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                         "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED"})


class Chunk(NamedTuple):
    """One array job: submission tasks ``offset .. offset + count - 1`` as indices ``0 .. count - 1``."""

    offset: int
    count: int


class SiteLimits(NamedTuple):
    """What the site's slurm.conf allows: array indices below ``max_array_size``, and
    ``max_job_count`` job records in slurmctld at once (every array task is one)."""

    max_array_size: int
    max_job_count: int


class TaskState(NamedTuple):
    """One array task as ``squeue -r`` reports it."""

    job_id: str
    task: int
    state: str
    reason: str
    node: str

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def task_count(runs: int, runs_per_task: int) -> int:
    return math.ceil(runs / runs_per_task)


def plan_chunks(tasks: int, max_array_size: int) -> list[Chunk]:
    """Split ``tasks`` into arrays whose largest index stays below ``max_array_size``."""
    if max_array_size < 1:
        raise ValueError("MaxArraySize must be at least 1")
    return [Chunk(offset, min(max_array_size, tasks - offset)) for offset in range(0, tasks, max_array_size)]


def chunk_sbatch_args(chunk: Chunk, *, max_concurrent: int | None, after: str | None, name: str) -> list[str]:
    """sbatch's options for one chunk: its indices, the shared cap, and the chunk it waits for."""
    spec = f"0-{chunk.count - 1}"
    if max_concurrent is not None and max_concurrent < chunk.count:
        spec += f"%{max_concurrent}"
    args = ["--parsable", f"--array={spec}", f"--job-name={name}"]
    if after is not None:
        args.append(f"--dependency=afterany:{after}")
    return args


def array_job_name(experiment_id: str, submission_id: str) -> str:
    """Unique per submission, so an interrupted submission can be found and cancelled by name."""
    return f"metalab-{experiment_id}-{submission_id}"


def parse_site_limits(scontrol_config: str) -> SiteLimits:
    """``MaxArraySize`` and ``MaxJobCount`` from ``scontrol show config`` (SLURM's defaults when absent)."""

    def value(key: str, default: int) -> int:
        match = re.search(rf"^\s*{key}\s*=\s*(\d+)\s*$", scontrol_config, re.MULTILINE)
        return int(match.group(1)) if match and int(match.group(1)) > 0 else default

    return SiteLimits(value("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE), value("MaxJobCount", DEFAULT_MAX_JOB_COUNT))


def fit_runs_per_task(runs: int, wanted: int, limits: SiteLimits) -> int:
    """``wanted`` runs per task, or more when that many tasks would crowd slurmctld's job records
    (sbatch then blocks, retrying): at most a quarter of ``MaxJobCount`` tasks per sweep."""
    most_tasks = max(1, limits.max_job_count // SHARE_OF_MAX_JOB_COUNT)
    return max(wanted, math.ceil(runs / most_tasks))


def tasks_command(job_ids: Sequence[str]) -> list[str]:
    """One squeue for every task of ``job_ids`` (array tasks one per line, finished ones too)."""
    return ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", TASK_FORMAT]


def parse_task_states(text: str) -> list[TaskState]:
    """Lines of :func:`tasks_command`; lines that are not array tasks are skipped."""
    tasks = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[1].isdigit():
            tasks.append(TaskState(parts[0], int(parts[1]), parts[2], parts[3], parts[4]))
    return tasks


def summarize(tasks: Iterable[TaskState]) -> dict[str, int]:
    """Task counts by state, e.g. ``{"RUNNING": 4, "PENDING": 190, "COMPLETED": 6}``."""
    return dict(Counter(task.state for task in tasks))


def sbatch_directives(options: Any) -> list[str]:
    """``--partition=...`` and friends from a :class:`SlurmExecutorConfig`."""
    pairs = [("partition", options.partition), ("time", options.time), ("cpus-per-task", options.cpus),
             ("mem", options.memory), ("gres", f"gpu:{options.gpus}" if options.gpus else None),
             ("account", options.account), ("qos", options.qos), ("constraint", options.constraint),
             ("mail-user", options.mail_user), ("mail-type", options.mail_type)]
    return [f"--{name}={value}" for name, value in pairs if value is not None]


def render_array_script(*, options: Any, experiment_id: str, submission_dir: str, python: str) -> str:
    """The job script every chunk runs: ``#SBATCH`` lines, the environment, then the worker.

    It holds no secret: the worker reads the spec (runs and store, no password) beside it.
    """
    from importlib import resources as package_files

    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, autoescape=False, undefined=jinja2.StrictUndefined)
    env.filters["shellquote"] = shlex.quote
    source = package_files.files("metalab.templates").joinpath("array.sbatch.j2").read_text()
    return env.from_string(source).render(
        experiment_id=experiment_id,
        submission_dir=submission_dir,
        directives=sbatch_directives(options),
        modules=list(options.modules),
        conda_env=options.conda_env,
        setup=list(options.setup),
        python=python,
    )
