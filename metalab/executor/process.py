"""ProcessExecutor: runs spread over worker processes on this machine.

Each worker opens its own sink (its own record file; never a database connection) and takes
chunks of runs from a queue; only counts travel back, so the parent never becomes the
bottleneck. Ctrl+C stops the workers after each has closed its file.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from collections.abc import Sequence
from typing import Any

from ..errors import MetalabError

__all__ = ["ProcessExecutor"]

_DONE = None  # end-of-work marker on the task queue


class WorkerCrashed(MetalabError):
    """A worker process died without finishing its share of the runs."""


class ProcessExecutor:
    """``ProcessExecutor(max_workers=N)``: N processes, each running runs one after another."""

    def __init__(self, max_workers: int | None = None) -> None:
        workers = max_workers if max_workers is not None else os.cpu_count() or 1
        if workers < 1:
            raise ValueError("ProcessExecutor(max_workers=...) must be at least 1")
        self.max_workers = workers

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers})"

    def describe(self) -> str:
        return f"{self.max_workers} worker processes"

    def execute(self, experiment: Any, specs: Sequence[Any], store: Any, progress: Any) -> None:
        """Run ``specs`` and return once all are recorded (or raise on Ctrl+C / a crashed worker)."""
        if not specs:
            return
        # fork: the workers inherit the experiment, so operations defined in __main__ just work.
        context = multiprocessing.get_context("fork")
        workers = min(self.max_workers, len(specs))
        chunk = max(1, min(256, len(specs) // (workers * 8) or 1))
        tasks: Any = context.Queue()
        counts: Any = context.Queue()
        for start in range(0, len(specs), chunk):
            tasks.put(list(specs[start : start + chunk]))
        for _ in range(workers):
            tasks.put(_DONE)
        processes = [
            context.Process(target=_worker, args=(experiment, store, tasks, counts), name=f"metalab-worker-{n}")
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            self._collect(processes, counts, progress, len(specs))
        except BaseException:
            _stop(processes)
            # The runs still queued will not run: without this, exiting would wait for the queue's
            # feeder thread to push them into a pipe no worker reads any more (a hang at Ctrl+C).
            tasks.cancel_join_thread()
            raise
        finally:
            for process in processes:
                process.join(5)
            tasks.close()
            counts.close()

    @staticmethod
    def _collect(processes: list[Any], counts: Any, progress: Any, total: int) -> None:
        finished = 0
        while finished < total:
            try:
                done, failed = counts.get(timeout=0.2)
            except queue_module.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode is not None for p in processes):
                    # Drain what arrived before the exit, then report.
                    while True:
                        try:
                            done, failed = counts.get_nowait()
                        except queue_module.Empty:
                            break
                        finished += done
                        progress.update(done=done, failed=failed)
                    if finished < total:
                        codes = ", ".join(f"{p.name} exit {p.exitcode}" for p in processes)
                        raise WorkerCrashed(f"{total - finished} runs were not recorded: a worker died ({codes})") from None
                continue
            finished += done
            progress.update(done=done, failed=failed)


def _worker(experiment: Any, store: Any, tasks: Any, counts: Any) -> None:
    from ..runner import execute_run

    files = store.files(experiment.experiment_id)
    sink = store.sink(experiment.experiment_id)
    try:
        while True:
            specs = tasks.get()
            if specs is _DONE:
                break
            failed = 0
            for spec in specs:
                record = execute_run(experiment, spec, files, sink)
                sink.write(record)
                failed += record.status != "success"
            counts.put((len(specs), failed))
    except KeyboardInterrupt:
        pass  # the parent decides; what finished is flushed below
    finally:
        sink.close()


def _stop(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.join(2)  # they got the same SIGINT; give them a moment to flush
        if process.is_alive():
            process.terminate()
