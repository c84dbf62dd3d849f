"""Running runs: one run in this process, and a serial loop over many.

Every executor ends up here: a worker process or a SLURM array task calls
:func:`execute_run` for each run it owns and hands the record to its store's sink.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .capture import Capture
from .experiment import Experiment, RunSpec
from .seeding import Seeds
from .store.records import FAILED, HEARTBEAT_EVERY, INTERRUPTED, RUNNING, SUCCESS, RunRecord

__all__ = ["Sink", "execute_run", "run_serially"]


class Sink(Protocol):
    """Where a process puts its records (a store's writer; safe to call from two threads)."""

    def write(self, record: RunRecord) -> int | None: ...

    def close(self) -> None: ...


START_AFTER = 0.5  # seconds: a run still going then appears as running (shorter ones write one line only)
PROGRESS_EVERY = 2.0  # seconds at least between two provisional lines of a run
PROGRESS_RATE = 16 * 1024  # bytes a second at most, on average: long series make provisional lines rarer


class _Progress:
    """While a run runs, provisional lines in its sink: status ``running``, the metrics, steps
    and artifacts so far, and a heartbeat (see ``records``): the first once the run has lasted
    START_AFTER, then whenever the operation recorded something (at most every PROGRESS_EVERY,
    and rarer as the series grow: at most PROGRESS_RATE bytes a second), and at least every
    HEARTBEAT_EVERY while it records nothing, so that readers can tell a long quiet run from a
    killed one. The final line supersedes them (a finished record always ranks higher). A
    provisional line that cannot be written stops the provisional lines, never the run.

    The lines are written by the process's one :class:`_Watcher` thread, so a run costs no
    thread of its own (a quick run costs two lock round trips)."""

    def __init__(self, experiment: Experiment, spec: RunSpec, files: Any, capture: Capture, sink: Sink,
                 started: float) -> None:
        self._fields = {"run_id": spec.run_id, "params": spec.params, "seed": experiment.seeds.base,
                        "replicate": spec.replicate, "started_at": started}
        self._files = files
        self._capture = capture
        self._sink = sink
        self.written = False  # whether a provisional line is in the sink (then the run is shown running)
        self.due = 0.0  # time.monotonic() of the watcher's next look
        self._seen = -1  # capture.changes at the last line
        self._last = 0.0  # time.monotonic() of the last line
        self._gap = PROGRESS_EVERY

    def start(self) -> None:
        self.due = time.monotonic() + START_AFTER
        _watcher().add(self)

    def stop(self) -> None:
        """No provisional line after this returns (one being written is finished first)."""
        _watcher().remove(self)

    def interrupted(self) -> None:
        """An ``interrupted`` line, once the run showed as running (best effort: the process is stopping)."""
        if self.written:
            try:
                self._write(INTERRUPTED)
            except Exception:
                pass

    def beat(self, now: float) -> float:
        """The watcher's look at the run: a line if something changed or a heartbeat is due; the
        time of the next look."""
        if self._capture.changes == self._seen and now - self._last < HEARTBEAT_EVERY:
            return min(now + self._gap, self._last + HEARTBEAT_EVERY)
        self._seen = self._capture.changes
        try:
            size = self._write(RUNNING)
        except Exception:
            return math.inf  # a full disk, say: the run goes on, and its final record says how it ended
        self.written, self._last = True, now
        self._gap = max(PROGRESS_EVERY, size / PROGRESS_RATE)
        return now + self._gap

    def _write(self, status: str) -> int:
        metrics, steps, artifacts = self._capture.so_far()
        record_id = self._fields["run_id"]
        now = time.time()
        record = RunRecord(**self._fields, status=status, metrics=metrics, steps=steps, artifacts=artifacts,
                           log=self._files.relative(self._files.log_path(record_id)) if self._capture.has_log else None,
                           duration=max(0.0, now - self._fields["started_at"]), heartbeat=now)
        return self._sink.write(record) or 0


class _Watcher:
    """The thread that writes the provisional lines of this process's runs in progress. It
    writes holding its condition's lock, so ``remove`` returns only once no line of that run is
    being written (the final line always comes last)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._changed = threading.Condition()
        self._runs: set[_Progress] = set()
        self._wakes_at = math.inf  # when the thread looks next by itself
        threading.Thread(target=self._loop, name="metalab-run-progress", daemon=True).start()

    def add(self, progress: _Progress) -> None:
        with self._changed:
            self._runs.add(progress)
            if progress.due < self._wakes_at:  # else the thread looks in time anyway: no wake-up per run
                self._changed.notify()

    def remove(self, progress: _Progress) -> None:
        with self._changed:
            self._runs.discard(progress)

    def _loop(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for progress in [p for p in self._runs if p.due <= now]:
                    progress.due = progress.beat(now)
                self._wakes_at = min((p.due for p in self._runs), default=math.inf)
                timeout = None if self._wakes_at == math.inf else max(0.0, self._wakes_at - time.monotonic())
                self._changed.wait(timeout)


_WATCHER: _Watcher | None = None
_WATCHER_LOCK = threading.Lock()


def _watcher() -> _Watcher:
    """This process's watcher, started at its first run that has a sink (a forked worker starts its own)."""
    global _WATCHER
    with _WATCHER_LOCK:
        if _WATCHER is None or _WATCHER.pid != os.getpid():
            _WATCHER = _Watcher()
        return _WATCHER


def _forget_watcher() -> None:
    global _WATCHER, _WATCHER_LOCK
    _WATCHER, _WATCHER_LOCK = None, threading.Lock()  # the parent's thread (and maybe its lock) stayed behind


os.register_at_fork(after_in_child=_forget_watcher)


def execute_run(experiment: Experiment, spec: RunSpec, files: Any, sink: Sink | None = None) -> RunRecord:
    """Run the operation once; a raised exception becomes a failed record with its traceback.
    With ``sink``, a run that lasts shows as running there while it runs (:class:`_Progress`),
    and a Ctrl+C or SIGTERM that stops it leaves an ``interrupted`` line; the final record is
    returned, for the caller to write."""
    capture = Capture(spec.run_id, files)
    seeds = Seeds(experiment.seeds.base, spec.replicate)
    started = time.time()
    clock = time.perf_counter()
    progress = _Progress(experiment, spec, files, capture, sink, started) if sink is not None else None
    capture.attach_logging()
    if progress is not None:
        progress.start()
    try:
        experiment.operation(dict(spec.params), seeds, capture)
        status, error = SUCCESS, None
    except Exception:
        status, error = FAILED, traceback.format_exc()
    except BaseException:  # KeyboardInterrupt, SystemExit (SIGTERM in a task): the run did not end
        if progress is not None:
            progress.stop()
            progress.interrupted()
        raise
    finally:
        if progress is not None:
            progress.stop()
        capture.close()
    return RunRecord(
        run_id=spec.run_id, params=spec.params, seed=experiment.seeds.base, replicate=spec.replicate,
        status=status, metrics=capture.metrics, steps=capture.steps, data=capture.values,
        artifacts=capture.artifacts, log=files.relative(files.log_path(spec.run_id)) if capture.has_log else None,
        error=error, started_at=started, duration=time.perf_counter() - clock,
    )


def run_serially(
    experiment: Experiment,
    specs: Iterable[RunSpec],
    files: Any,
    sink: Sink,
    on_record: Callable[[RunRecord], None] | None = None,
) -> None:
    """Run ``specs`` one after another; each record is in the sink before the next run starts,
    so an interrupt (Ctrl+C, a walltime) keeps every finished run."""
    try:
        for spec in specs:
            record = execute_run(experiment, spec, files, sink)
            sink.write(record)
            if on_record is not None:
                on_record(record)
    finally:
        sink.close()
