"""Every exception class metalab defines is a MetalabError (errors.py's tree), so a caller can
catch one class; only private ones (a leading underscore: never raised past their module) are
exempt."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import metalab
from metalab.errors import MetalabError


def metalab_exceptions() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(metalab.__path__, "metalab."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_public_exception_is_a_metalab_error() -> None:
    classes = metalab_exceptions()
    assert len(classes) >= 10  # the walk found the package's errors
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not c.__name__.startswith("_") and not issubclass(c, MetalabError)]
    assert outside == []


def test_errors_keep_the_builtin_bases_callers_catch() -> None:
    from metalab.errors import CaptureError, QueryError, UnsafePath, UsageError

    assert all(issubclass(c, ValueError) for c in (CaptureError, QueryError, UnsafePath))
    assert issubclass(QueryError, UsageError) and QueryError("x").exit_code == 2
