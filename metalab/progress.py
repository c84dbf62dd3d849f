"""One short line per step as it happens; quiet for scripts, colour only on a terminal."""

from __future__ import annotations

import os
import sys
from typing import TextIO

__all__ = ["Progress", "RunProgress"]


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
    """A live one-line counter for ``metalab.run()`` on a terminal: done, failed, remaining,
    rate and time left. Off a terminal (or disabled) it prints nothing."""

    def __init__(self, total: int, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        import time

        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.done = 0
        self.failed = 0
        self._clock = time.perf_counter
        self._start = self._clock()
        self._last_draw = 0.0

    def update(self, *, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self.enabled:
            now = self._clock()
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        remaining = self.total - self.done
        eta = remaining / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f}s left" if eta != float("inf") else "--"
        self.stream.write(
            f"\rruns: {self.done}/{self.total} done, {self.failed} failed, {remaining} remaining, "
            f"{rate:.0f} runs/s, {eta_text}\033[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.total:
            self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()
