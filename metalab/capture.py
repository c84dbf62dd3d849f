"""What an operation records about its run: metrics, data, artifacts and log lines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

__all__ = ["Capture", "CaptureError"]


class CaptureError(ValueError):
    """A value that cannot be recorded (a metric that is not a number, a bad name)."""


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise CaptureError(f"{kind} name {name!r} must be a non-empty string without '/' and not starting with '.'")


class Capture:
    """Handed to the operation as its third argument; everything is kept in memory and
    written by the store once the run ends, except artifacts and logs, which go straight
    to the run's folders (created only when first used)."""

    __slots__ = ("_files", "_log", "_log_handler", "artifacts", "has_log", "metrics", "run_id", "steps", "values")

    def __init__(self, run_id: str, files: Any) -> None:
        self.run_id = run_id
        self._files = files  # the experiment's folder layout (FileStore's ExperimentFiles)
        self.metrics: dict[str, Any] = {}
        self.steps: dict[str, list[list[Any]]] = {}
        self.values: dict[str, Any] = {}  # what data() recorded
        self.artifacts: list[dict[str, Any]] = []
        self._log: Any = None
        self._log_handler: logging.Handler | None = None
        self.has_log = False  # whether this run wrote a log (then it is in the record)

    # -- values ------------------------------------------------------------------

    def metric(self, name: str, value: Any, step: int | None = None) -> None:
        """Record a number; with ``step`` it joins a series (the latest step is the metric's value)."""
        _check_name("metric", name)
        number = _number(name, value)
        if step is not None:
            self.steps.setdefault(name, []).append([int(step), number])
        self.metrics[name] = number

    def data(self, name: str, value: Any) -> None:
        """Record a JSON-able value or a numpy array (stored beside the run as ``.npy``)."""
        _check_name("data", name)
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            path = self._files.data_path(self.run_id, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            import numpy as np

            np.save(path, value, allow_pickle=False)
            self.values[name] = {"npy": self._files.relative(path)}
        else:
            self.values[name] = value

    def artifact(self, name: str, source: str | Path | bytes) -> Path:
        """Keep a file (copied) or bytes (written) as an artifact of this run; returns its path."""
        _check_name("artifact", name)
        target = self._files.artifact_path(self.run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, (bytes, bytearray, memoryview)):
            target.write_bytes(bytes(source))
        else:
            shutil.copyfile(source, target)
        self.artifacts.append({"name": name, "path": self._files.relative(target), "size": target.stat().st_size})
        return target

    def log(self, *parts: Any) -> None:
        """Append a line to the run's log."""
        self._log_file().write(" ".join(str(part) for part in parts) + "\n")

    # -- the run's log, shared with standard logging ------------------------------

    def _log_file(self) -> Any:
        if self._log is None:
            path = self._files.log_path(self.run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("a", buffering=1)
            self.has_log = True
        return self._log

    def attach_logging(self) -> None:
        """Send records of the standard ``logging`` module to this run's log while it runs."""
        handler = _LazyRunLogHandler(self)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        self._log_handler = handler

    def close(self) -> None:
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        if self._log is not None:
            self._log.close()
            self._log = None


class _LazyRunLogHandler(logging.Handler):
    """Opens the run's log only when something is logged, so quiet runs cost nothing."""

    def __init__(self, capture: Capture) -> None:
        super().__init__(level=logging.NOTSET)
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._capture._log_file().write(self.format(record) + "\n")
        except Exception:  # logging must never break the run
            self.handleError(record)


def _number(name: str, value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        value = item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    raise CaptureError(f"metric {name!r} must be a number, not {type(value).__name__}")
