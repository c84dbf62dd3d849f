"""FileStore: one folder per experiment, run records as JSON lines, artifacts and logs beside.

    {root}/{experiment_id}/
        experiment.json            what the experiment is (name, version, params, seeds)
        runs/{writer}.jsonl        one line per finished run (and provisional lines of runs in
                                   progress, see records.py); one file per writing process
        artifacts/{run_id}/{name}  files the runs kept
        data/{run_id}/{name}.npy   arrays the runs recorded
        logs/{run_id}.log          each run's log

Every path inside a record is relative to the experiment folder, so a store can be moved or
copied elsewhere and still loads. Each process appends to its own file and flushes every line,
so concurrent writers never interleave, and a crash loses at most the line being written.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MetalabError
from .records import SUCCESS, UNFINISHED, RunRecord, peek_status, pick_latest

__all__ = ["ExperimentFiles", "FileStore", "RecordWriteError", "RecordWriter"]

RESERVED_NAMES = {"services"}  # file_root also holds the services' state


class ExperimentFiles:
    """The layout of one experiment's folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def runs_dir(self) -> Path:
        return self.directory / "runs"

    def artifact_path(self, run_id: str, name: str) -> Path:
        return self.directory / "artifacts" / run_id / name

    def data_path(self, run_id: str, name: str) -> Path:
        return self.directory / "data" / run_id / f"{name}.npy"

    def log_path(self, run_id: str) -> Path:
        return self.directory / "logs" / f"{run_id}.log"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    def resolve(self, relative: str) -> Path:
        return self.directory / relative


class RecordWriteError(MetalabError):
    """A run's record could not be written (a full disk, a folder that cannot be written)."""


def _ends_torn(path: Path) -> bool:
    """Whether the file's last line lacks its newline (this process's earlier write failed midway)."""
    try:
        with path.open("rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False


def _fix(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space and run again: every record written before is kept, and only the missing runs run"
    return "make that folder writable and run again: every record written before is kept"


class RecordWriter:
    """Appends run records to this process's own JSON-lines file. Safe to share between the
    threads of a process (a run's provisional lines come from a thread of its own)."""

    def __init__(self, files: ExperimentFiles, writer_id: str | None = None) -> None:
        name = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.path = files.runs_dir / f"{name}.jsonl"
        self._handle: Any = None  # opened on the first record: a writer with nothing to write leaves no file
        self._lock = threading.Lock()

    def write(self, record: RunRecord) -> int:
        """Append the record's line (flushed); returns its length."""
        line = record.to_json() + "\n"
        with self._lock:
            try:
                if self._handle is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._handle = self.path.open("a", encoding="utf-8")
                    if _ends_torn(self.path):  # a write that failed half-way: end that line, keep the next whole
                        self._handle.write("\n")
                self._handle.write(line)
                self._handle.flush()  # the record is the kernel's once the run is reported done
            except OSError as error:
                self._drop()
                raise RecordWriteError(f"cannot write the record of run {record.run_id} to {self.path}: "
                                       f"{error.strerror or error}; {_fix(error)}") from None
        return len(line)

    def _drop(self) -> None:
        """Forget a handle whose last write failed (closing it would only fail again)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileStore:
    """Experiments as folders under ``root``."""

    kind = "file"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def describe(self) -> str:
        return f"FileStore at {self.root}"

    def files(self, experiment_id: str) -> ExperimentFiles:
        if experiment_id in RESERVED_NAMES:
            raise ValueError(f"an experiment may not be called {experiment_id!r}: that folder holds the services")
        return ExperimentFiles(self.root / experiment_id)

    def write_experiment(self, description: dict[str, Any]) -> ExperimentFiles:
        """Create the folder and (re)write ``experiment.json`` atomically."""
        files = self.files(description["experiment_id"])
        files.runs_dir.mkdir(parents=True, exist_ok=True)
        target = files.directory / "experiment.json"
        tmp = target.with_name(f".experiment.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(description, indent=2, sort_keys=True, default=str))
        os.replace(tmp, target)
        return files

    def sink(self, experiment_id: str, writer_id: str | None = None) -> RecordWriter:
        """Where this process writes its finished records (its own file)."""
        return RecordWriter(self.files(experiment_id), writer_id)

    def iter_records(self, experiment_id: str) -> Iterator[RunRecord]:
        """Every record line of the experiment, in file order; a torn last line is skipped."""
        runs_dir = self.files(experiment_id).runs_dir
        if not runs_dir.is_dir():
            return
        for path in sorted(runs_dir.glob("*.jsonl")):
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.endswith("\n"):
                        break  # a writer died mid-line: that run is not finished
                    try:
                        yield RunRecord.from_dict(json.loads(line))
                    except (ValueError, KeyError):
                        continue

    def load(self, experiment_id: str) -> dict[str, RunRecord]:
        """The current record of every finished run (see :func:`pick_latest`): a run whose best
        record is unfinished (still running, or stopped before it ended) is left out."""
        return {run_id: record for run_id, record in pick_latest(self.iter_records(experiment_id)).items()
                if record.finished}

    def finished_run_ids(self, experiment_id: str) -> set[str]:
        """Runs that succeeded: a resumed experiment skips these."""
        return {run_id for run_id, status in self.run_statuses(experiment_id).items() if status == SUCCESS}

    def run_statuses(self, experiment_id: str) -> dict[str, str]:
        """Every finished run's best status (a success beats a failure; unfinished lines, of runs
        still running or stopped, do not count). Reads only each line's front."""
        statuses: dict[str, str] = {}
        runs_dir = self.files(experiment_id).runs_dir
        if not runs_dir.is_dir():
            return statuses
        for path in runs_dir.glob("*.jsonl"):
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.endswith("\n"):
                        break
                    peeked = peek_status(line)
                    if peeked is None:
                        try:
                            data = json.loads(line)
                            peeked = (data["run_id"], data["status"])
                        except (ValueError, KeyError):
                            continue
                    if peeked[1] in UNFINISHED:
                        continue
                    if statuses.get(peeked[0]) != SUCCESS:
                        statuses[peeked[0]] = peeked[1]
        return statuses

    def experiment_ids(self) -> list[str]:
        """Every experiment folder under the root."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "experiment.json").is_file())

    def read_experiment(self, experiment_id: str) -> dict[str, Any]:
        return json.loads((self.files(experiment_id).directory / "experiment.json").read_text())
