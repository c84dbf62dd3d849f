"""``@metalab.operation``: the function each run calls, and how another process finds it again."""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["Operation", "operation"]


class Operation:
    """A user function ``fn(params, seeds, capture)`` with the name needed to import it elsewhere."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError("@metalab.operation needs a function")
        self.fn = fn
        self.name = name or fn.__name__
        self.module = fn.__module__
        self.qualname = fn.__qualname__
        # Set for an operation an experiment file named from a module beside it: a task on a
        # cluster that cannot see this machine's files gets the module's text, as for a script.
        self.ships_source: Path | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, params: dict[str, Any], seeds: Any, capture: Any) -> Any:
        return self.fn(params, seeds, capture)

    @property
    def reference(self) -> str:
        """``module:qualname``, how a worker imports this operation."""
        return f"{self.module}:{self.qualname}"

    def source_hash(self) -> str:
        """A digest of the function's source, for experiments that opt into it."""
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            source = self.reference
        return hashlib.sha256(source.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Operation({self.reference})"

    def import_spec(self) -> dict[str, Any]:
        """How a process on another machine imports this operation: a module and a name, or for
        an operation in the running script (``__main__``), the script's text and the name in it.

        Raises UsageError for what no other process could import (nested functions, lambdas,
        operations typed into an interactive session).
        """
        if "<" in self.qualname:
            raise UsageError(
                f"operation {self.name} ({self.qualname}) is not defined at module level, so a SLURM task "
                "cannot import it; define it at the top level of a module or script"
            )
        if self.ships_source is not None:
            path: str | None = str(self.ships_source)
        elif self.module != "__main__":
            return {"module": self.module, "qualname": self.qualname}
        else:
            path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path:
            raise UsageError(
                f"operation {self.name} is defined in an interactive session, so a SLURM task cannot import "
                "it; put it in a script or module file"
            )
        script = Path(path).resolve()
        return {"module": None, "qualname": self.qualname, "script_path": str(script),
                "script_source": script.read_text(encoding="utf-8")}


def operation(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Mark ``fn(params, seeds, capture)`` as a metalab operation: ``@metalab.operation``."""
    if fn is None:
        return lambda inner: Operation(inner, name=name)
    return Operation(fn, name=name)
