"""One short line per step as it happens; quiet for scripts, colour only on a terminal."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress", "RunProgress"]

TICK = 1.0  # seconds between redraws of the terminal bar, so elapsed and ETA move while runs are quiet
HEARTBEAT = 60.0  # off a terminal, the longest silence: a log that stops looks like a hung job
SMOOTHING = 0.05  # low: a burst of parallel finishes barely moves the rate, so the ETA holds steady
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

# One lock for every meter's writes, held across fork(): a worker forked (ProcessExecutor) while the
# ticker was inside a write would inherit the stream's lock held and hang on its first print.
_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_LOCK.release)


class Progress:
    """Prints ``label: message (0.71 s)`` lines to stderr; ``quiet`` keeps only warnings."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.color = self.stream.isatty() and "NO_COLOR" not in os.environ

    def line(self, label: str, message: str, seconds: float | None = None) -> None:
        if self.quiet:
            return
        took = f" ({seconds:.2f} s)" if seconds is not None else ""
        name = f"\033[1m{label}\033[0m" if self.color else label
        print(f"{name}: {message}{took}", file=self.stream, flush=True)

    def warn(self, label: str, message: str) -> None:
        name = f"\033[33m{label}\033[0m" if self.color else label
        print(f"{name}: {message}", file=self.stream, flush=True)


class RunProgress:
    """Progress of ``metalab.run()``: done/total, failed, elapsed, rate and time left.

    On a terminal, a live tqdm bar that redraws every ``TICK`` s even when no run finishes.
    Elsewhere (nohup, a SLURM job's log, CI) plain lines: one per ``interval`` s while the count
    moves, one at least every ``HEARTBEAT`` s, and a last one at ``close()``. ``enabled=None`` or
    True: on; False: silent. ``done``/``failed``: already counted when the meter starts (a
    reconnect); they show in the count but not in the rate.
    """

    def __init__(
        self, total: int, *, enabled: bool | None = None, stream: TextIO | None = None, interval: float = 5.0,
        done: int = 0, failed: int = 0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = True if enabled is None else enabled
        self.total = total
        self.done = done
        self.failed = failed
        self.interval = interval
        self._tty = self.stream.isatty()
        self._bar: Any = None
        self._sink: TextIO | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if not (self.enabled and total):
            return
        if not self._tty:
            self._sink = open(os.devnull, "w")  # the bar only keeps the numbers; we print the lines
        # A terminal of size 0x0 (a pty under `script`, some CI runners) would make tqdm draw nothing.
        size: dict[str, Any] = dict(dynamic_ncols=True) if _columns(self.stream) > 1 else dict(ncols=79, nrows=20)
        self._bar = _bar_class()(
            total=total, initial=done, desc="runs", unit="run", smoothing=SMOOTHING, miniters=1,
            mininterval=0.1 if self._tty else 0, file=self.stream if self._tty else self._sink,
            bar_format=None if self._tty else LINE_FORMAT, postfix=f"failed={failed}", **size,
        )
        self._last_line = time.monotonic()
        self._last_counts = (done, failed)
        self._ticker = threading.Thread(target=self._tick, name="metalab-progress", daemon=True)
        self._ticker.start()

    def update(self, *, done: int = 0, failed: int = 0) -> None:
        """Count ``done`` more finished runs, ``failed`` of them failed (any thread)."""
        with _LOCK:
            self.done += done
            self.failed += failed
            if self._bar is None:
                return
            if failed:
                self._bar.set_postfix_str(f"failed={self.failed}", refresh=False)
            if done:
                self._bar.update(done)
            elif failed:
                self._bar.refresh()
            if not self._tty:
                self._maybe_line()

    def write(self, line: str) -> None:
        """Print ``line`` above the terminal bar (a plain line elsewhere)."""
        with _LOCK:
            if self._bar is not None and self._tty:
                self._bar.clear()
            self.stream.write(line.rstrip("\n") + "\n")
            self.stream.flush()
            if self._bar is not None and self._tty:
                self._bar.refresh()

    def close(self) -> None:
        """Draw the final count, end the line and stop the ticker; safe to call twice."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        with _LOCK:
            bar, self._bar = self._bar, None
            if bar is None:
                return
            if not self._tty:
                final = dict(bar.format_dict, rate=None)  # None: tqdm falls back to the overall average
                self._print(bar.format_meter(**final))
            bar.close()  # on a terminal: the final bar and its newline
            if self._sink is not None:
                self._sink.close()

    def _tick(self) -> None:
        period = TICK if self._tty else min(TICK, self.interval)
        while not self._stop.wait(period):
            with _LOCK:
                if self._bar is None:
                    return
                if self._tty:
                    self._bar.refresh()
                else:
                    self._maybe_line()

    def _maybe_line(self) -> None:
        # tqdm off a terminal still writes "\r"-separated redraws, unreadable in a log: we print lines.
        since = time.monotonic() - self._last_line
        moved = (self.done, self.failed) != self._last_counts
        if (moved and since >= self.interval) or since >= HEARTBEAT:
            self._print(str(self._bar))

    def _print(self, line: str) -> None:
        self._last_line = time.monotonic()
        self._last_counts = (self.done, self.failed)
        self.stream.write(line + "\n")
        self.stream.flush()


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal
        return 0


@functools.cache
def _bar_class() -> type:
    """tqdm (imported here: it costs ~80 ms) without its monitor thread or multiprocessing lock."""
    from tqdm import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # our ticker redraws; tqdm's monitor would be one more thread to stop

    Bar.set_lock(threading.RLock())  # tqdm's default also creates a multiprocessing lock
    return Bar
