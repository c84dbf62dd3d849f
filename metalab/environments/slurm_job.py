"""The SLURM services job, as data: its name, its sbatch script, and squeue's answers.

Pure functions (no cluster needed to test them): SLURM specifics live here, the
environment that submits and watches the job lives in ``slurm.py``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import NamedTuple

from ..config import SlurmServicesResources

__all__ = ["JobState", "describe", "job_name", "parse_squeue", "render_services_script", "sbatch_directives"]

TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
SQUEUE_FORMAT = "%i|%T|%r|%N|%L|%j"


class JobState(NamedTuple):
    """One line of ``squeue -o '%i|%T|%r|%N|%L|%j'``."""

    job_id: str
    state: str
    reason: str
    node: str
    time_left: str
    name: str


def describe(job: JobState | None) -> str:
    """A job as ``status`` shows it: how it ended once it has, else where it runs and for how long yet."""
    if job is None:
        return "job gone (SLURM no longer knows it)"
    reason = f" ({job.reason})" if job.reason not in ("", "None") else ""
    where = f" on {job.node}" if job.node else ""
    if job.state in TERMINAL_STATES:
        return f"job ended {job.state}{reason}{where}"
    return f"job {job.state}{reason}{where or ' (no node yet)'}, {job.time_left} left"


def job_name(project: str, environment: str) -> str:
    """How metalab finds its own services job again: ``metalab-services-{project}-{env}``."""
    return f"metalab-services-{project}-{environment}"


def sbatch_directives(resources: SlurmServicesResources | None) -> list[str]:
    """``--partition=...`` and friends from ``[environments.X.services]``."""
    r = resources or SlurmServicesResources()
    options = [
        ("partition", r.partition), ("time", r.time), ("mem", r.memory), ("cpus-per-task", r.cpus),
        ("account", r.account), ("qos", r.qos), ("constraint", r.constraint),
    ]
    lines = [f"--{name}={value}" for name, value in options if value is not None]
    return lines + list(r.sbatch_args or [])


def render_services_script(
    *,
    project: str,
    environment: str,
    services_dir: str,
    python: str,
    resources: SlurmServicesResources | None,
) -> str:
    """The sbatch script that runs ``python -m metalab.services.node`` on the services node."""
    from importlib import resources as package_files

    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, autoescape=False, undefined=jinja2.StrictUndefined)
    env.filters["shellquote"] = shlex.quote
    source = package_files.files("metalab.templates").joinpath("services.sbatch.j2").read_text()
    r = resources or SlurmServicesResources()
    return env.from_string(source).render(
        project=project,
        environment=environment,
        job_name=job_name(project, environment),
        services_dir=services_dir,
        python=python,
        directives=sbatch_directives(resources),
        modules=r.modules or [],
        setup=r.setup or [],
    )


def parse_squeue(text: str) -> list[JobState]:
    """Lines of ``squeue -h -o SQUEUE_FORMAT`` as :class:`JobState` records."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 6:
            jobs.append(JobState(*parts))
    return jobs


def squeue_command(*, job_ids: Sequence[str] = (), name: str | None = None) -> list[str]:
    argv = ["squeue", "-h", "-t", "all", "-o", SQUEUE_FORMAT]
    if job_ids:
        argv += ["-j", ",".join(job_ids)]
    if name:
        argv += ["--name", name]
    return argv
