"""Experiment files: a sweep written in YAML, for ``metalab run FILE`` and ``experiment.run``.

``load_experiment_file(path, overrides=[...], env=...)`` reads and checks the file strictly
(one line naming the file, the line and the key of the first problem), imports its operation
from the file's folder or the project, and returns the :class:`ExperimentFile`: the
``Experiment`` it defines (the same run ids as the same experiment written in Python), its
store, and the executor plan with the project's defaults merged under the file's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..executor.defaults import ExecutorPlan
from ._schema import Problem, apply_override, check, dotted
from ._yaml import KeyPath, YamlDocument, parse_value, read_yaml

__all__ = ["ExperimentFile", "load_experiment_file", "parse_overrides"]


@dataclass(frozen=True)
class ExperimentFile:
    """An experiment file, checked and resolved: what ``metalab run FILE`` runs."""

    path: Path
    experiment: Any  # metalab.Experiment
    store: str  # "discover", a postgresql:// locator, or an absolute folder
    executor: ExecutorPlan
    env: str | None  # the profile named by --env or the file's env:
    resume: bool

    def open_store(self) -> Any:
        """The file's store, opened here: paths are the file's folder's, and for ``discover``
        the file's profile (``env:`` or ``--env``) selects the bundle."""
        from ..config import ENV_VAR
        from ..store import open_store

        environ = {**os.environ, **({ENV_VAR: self.env} if self.env else {})}
        return open_store(self.store, cwd=self.path.resolve().parent, environ=environ)


def parse_overrides(words: Sequence[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """``executor.gpus=2`` → ``(("executor", "gpus"), 2, "executor.gpus=2")``; values read as YAML."""
    out = []
    for word in words:
        key, sep, text = word.partition("=")
        parts = tuple(key.split("."))
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"command line: {word!r}: an override is key.path=value, e.g. executor.gpus=2")
        try:
            value = parse_value(text)
        except ConfigError as error:
            raise ConfigError(f"command line: {word}: {error}") from None
        out.append((parts, value, word))
    return out


def load_experiment_file(
    path: Path | str,
    *,
    overrides: Sequence[str] = (),
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExperimentFile:
    """Read, check and resolve the experiment file at ``path`` (see the module's docstring)."""
    from . import _build

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    doc = read_yaml(path)
    data, overridden = doc.data, {}
    for keypath, value, word in parse_overrides(overrides):
        if not isinstance(data, Mapping):
            break
        data, stored = apply_override(data, keypath, value)
        overridden[stored] = word
    where = _Locator(doc, overridden)
    problem = check(data)
    if problem:
        raise ConfigError(where.line(problem))
    environ = os.environ if environ is None else environ
    folder = path.resolve().parent
    env = env or data.get("env")
    plan = _build.executor_plan(data, env=env, folder=folder, environ=environ, where=where)
    experiment = _build.experiment(data, folder=folder, environ=environ, where=where)
    return ExperimentFile(path=path, experiment=experiment, store=_build.store(data, folder), executor=plan,
                          env=env, resume=data.get("resume", True))


class _Locator:
    """Where a key was set, for error lines: ``FILE:LINE`` or the command-line override."""

    def __init__(self, doc: YamlDocument, overridden: Mapping[KeyPath, str]) -> None:
        self.doc = doc
        self.overridden = overridden

    def of(self, path: KeyPath) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return f"command line: {self.overridden[path[:n]]}"
        line = self.doc.line_of(path)
        return f"{self.doc.path}:{line}" if line else str(self.doc.path)

    def line(self, problem: Problem) -> str:
        key = dotted(problem.path)
        if not key or problem.path in self.overridden:  # the override already names the key
            return f"{self.of(problem.path)}: {problem.message}"
        return f"{self.of(problem.path)}: {key}: {problem.message}"
