"""What an operation records about its run: metrics, data, artifacts and log lines."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from .errors import CaptureError

__all__ = ["Capture"]


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise CaptureError(f"{kind} name {name!r} must be a non-empty string without '/' and not starting with '.'")


class Capture:
    """Handed to the operation as its third argument; everything is kept in memory and
    written by the store once the run ends (the metrics and steps so far also in the runner's
    provisional lines while it runs), except artifacts and logs, which go straight to the run's
    folders (created only when first used)."""

    __slots__ = ("_files", "_lock", "_log", "_logging", "artifacts", "changes", "has_log", "metrics", "run_id",
                 "steps", "values")

    def __init__(self, run_id: str, files: Any) -> None:
        self.run_id = run_id
        self._files = files  # the experiment's folder layout (FileStore's ExperimentFiles)
        self.metrics: dict[str, Any] = {}
        self.steps: dict[str, list[list[Any]]] = {}
        self.values: dict[str, Any] = {}  # what data() recorded
        self.artifacts: list[dict[str, Any]] = []
        self._log: Any = None
        self._logging: _RunLogging | None = None
        self.has_log = False  # whether this run wrote a log (then it is in the record)
        # The runner's progress thread reads metrics, steps and artifacts while the run adds to them.
        self._lock = threading.Lock()
        self.changes = 0  # how many metrics and artifacts were recorded so far

    # -- values ------------------------------------------------------------------

    def metric(self, name: str, value: Any, step: int | None = None) -> None:
        """Record a number; with ``step`` it joins a series (the latest step is the metric's value)."""
        _check_name("metric", name)
        number = _number(name, value)
        with self._lock:
            if step is not None:
                self.steps.setdefault(name, []).append([int(step), number])
            self.metrics[name] = number
            self.changes += 1

    def so_far(self) -> tuple[dict[str, Any], dict[str, list[list[Any]]], list[dict[str, Any]]]:
        """Copies of the metrics, steps and artifacts recorded so far (for a provisional record)."""
        with self._lock:
            return dict(self.metrics), {name: list(points) for name, points in self.steps.items()}, list(self.artifacts)

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
        entry = {"name": name, "path": self._files.relative(target), "size": target.stat().st_size}
        with self._lock:
            self.artifacts.append(entry)
            self.changes += 1
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
        """Send records of the standard ``logging`` module (INFO and above, see :class:`_RunLogging`)
        to this run's log while it runs."""
        handler = _LazyRunLogHandler(self)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._logging = _RunLogging(handler)
        self._logging.attach()

    def close(self) -> None:
        if self._logging is not None:
            self._logging.detach()
            self._logging = None
        if self._log is not None:
            self._log.close()
            self._log = None


class _RunLogging:
    """The run's log handler on the root logger while the run runs, and INFO records reaching it.

    Python drops a record before any handler sees it when its level is below its logger's
    effective level, and every logger nobody configured inherits the root logger's: WARNING by
    default. A handler on the root logger alone would therefore never see ``logging.info()``.
    So, while the run runs, a root logger still at WARNING is set to INFO; a level the user set
    (on the root logger to anything else, or on any other logger) is theirs and is kept, so their
    DEBUG logger still reaches the run's log and their ERROR-only logger still does not.

    Lowering the root's level lets through records that every *other* handler would now see
    too (a console handler would start printing INFO). Setting those handlers' levels cannot
    undo that exactly: a handler on the root logger also receives the DEBUG records of a logger
    the user set to DEBUG. Instead each handler present when the run starts, on any logger, gets
    a filter that drops exactly the records only the lowering let through: those below the
    level their logger had before (its effective level with the root's level as it was). Every
    other handler sees what it saw before, and metalab's own INFO chatter (the indexer's
    thread) stays out of the run's log in the same way. ``detach`` puts the root's level back
    (unless the operation set a level of its own) and removes the filters and the handler.
    """

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self._root = logging.getLogger()
        self._root_level = self._root.level  # before the run
        self._lowered = False
        self._gated: list[logging.Handler] = []
        self._gate = _Gate(self._root_level)

    def attach(self) -> None:
        if self._root.level == logging.WARNING:
            for handler in _every_handler():
                if self._gate not in handler.filters:
                    handler.addFilter(self._gate)
                    self._gated.append(handler)
            self._root.setLevel(logging.INFO)
            self._lowered = True
        self.handler.addFilter(_NotMetalabsExtra(self._gate))
        self._root.addHandler(self.handler)

    def detach(self) -> None:
        self._root.removeHandler(self.handler)
        if self._lowered:
            if self._root.level == logging.INFO:  # else the operation set a level of its own: keep it
                self._root.setLevel(self._root_level)
            for handler in self._gated:
                handler.removeFilter(self._gate)
            self._gated.clear()
            self._lowered = False


def _every_handler() -> list[logging.Handler]:
    """The handlers of the root logger and of every other logger there is, each once."""
    loggers = [logging.getLogger(), *(logger for logger in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(logger, logging.Logger))]
    seen: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in list(logger.handlers):
            seen.setdefault(id(handler), handler)
    return list(seen.values())


class _Gate(logging.Filter):
    """Passes a record only if its logger's level before the run let it through: the records a
    lowered root level adds are kept from the handlers that never saw them."""

    def __init__(self, root_level: int) -> None:
        super().__init__()
        self.root_level = root_level

    def level_before(self, name: str) -> int:
        logger = logging.Logger.manager.loggerDict.get(name) if name != "root" else None
        while isinstance(logger, logging.Logger) and logger.parent is not None:
            if logger.level:
                return logger.level
            logger = logger.parent
        return self.root_level  # the root logger, as it was

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level_before(record.name)


class _NotMetalabsExtra(logging.Filter):
    """The run's log takes every record, except metalab's own that the lowered level let through."""

    def __init__(self, gate: _Gate) -> None:
        super().__init__()
        self.gate = gate

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "metalab" or record.name.startswith("metalab."):
            return self.gate.filter(record)
        return True


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
