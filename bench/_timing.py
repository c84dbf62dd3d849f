"""Shared timing helpers for the benchmarks: alternate the contenders, report medians."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def time_command(argv: Sequence[str], cwd: str | None = None, env: dict[str, str] | None = None) -> float:
    """Wall seconds for one run of ``argv``; fails loudly if the command fails."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each contender once per round, in turn, so noise hits all alike; return medians."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, measure in contenders.items():
            samples[name].append(measure())
    return {name: statistics.median(values) for name, values in samples.items()}


def services_project(work: Path, name: str, services_toml: str) -> Path:
    """A throwaway project under ``work`` (readable by the services' user) with ``services up`` done."""
    project = work / name
    project.mkdir()
    os.chmod(work, 0o755)
    os.chmod(project, 0o755)
    (project / ".metalab.toml").write_text(
        f'[project]\nname = "{name}"\n{services_toml}[environments.local]\ntype = "local"\nfile_root = "./runs"\n'
    )
    subprocess.run([str(Path(sys.executable).with_name("metalab")), "services", "up", "-q"], cwd=project, check=True)
    return project
