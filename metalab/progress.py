"""One short line per step as it happens; quiet for scripts, colour only on a terminal."""

from __future__ import annotations

import os
import sys
from typing import TextIO

__all__ = ["Progress"]


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
