"""SlurmExecutor: experiments as SLURM job arrays.

This release validates the configuration and renders the array job's ``#SBATCH`` header;
submitting arrays comes with the SLURM executor itself, and until then ``execute`` says so
plainly rather than pretend.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .config import SlurmExecutorConfig

__all__ = ["SlurmExecutor"]


class SlurmExecutor:
    """Runs an experiment's runs as job arrays on a SLURM cluster (see ``SlurmExecutorConfig``)."""

    def __init__(self, config: SlurmExecutorConfig | None = None, **options: Any) -> None:
        self.config = config if config is not None else SlurmExecutorConfig(**options)

    def __repr__(self) -> str:
        return f"SlurmExecutor({self.config!r})"

    def describe(self) -> str:
        c = self.config
        where = f" via {c.gateway}" if c.gateway else ""
        return f"SLURM job arrays{where} (partition {c.partition}, {c.time}, {c.cpus} cpu, {c.memory}, {c.gpus} gpu)"

    def sbatch_directives(self) -> list[str]:
        """The ``#SBATCH`` lines every array job of this executor carries."""
        c = self.config
        lines = [f"--partition={c.partition}", f"--time={c.time}", f"--cpus-per-task={c.cpus}", f"--mem={c.memory}"]
        if c.gpus:
            lines.append(f"--gres=gpu:{c.gpus}")
        for option, value in (("account", c.account), ("qos", c.qos), ("constraint", c.constraint),
                              ("mail-user", c.mail_user), ("mail-type", c.mail_type)):  # fmt: skip
            if value:
                lines.append(f"--{option}={value}")
        return [f"#SBATCH {line}" for line in lines]

    def execute(self, experiment: Any, specs: Any, store: Any, progress: Any) -> None:
        raise UsageError(
            "submitting experiments to SLURM as job arrays is not available in this release of metalab; "
            "the executor's configuration is valid (see SlurmExecutor.describe())"
        )
