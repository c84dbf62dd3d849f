"""What every metalab task shares: error translation, the resolved profile, output helpers."""

from __future__ import annotations

import functools
import json as jsonlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Context, Exit, task

from ..errors import EXIT_FAILURE, MetalabError, os_error_line

__all__ = ["chosen_env", "emit_json", "is_dry", "is_verbose", "metalab_task", "resolved_environment", "loaded_config"]

VERBOSE_ENV_VAR = "METALAB_VERBOSE"


def metalab_task(*args: Any, **kwargs: Any) -> Any:
    """``@invoke.task`` whose user-fixable errors end as one line on stderr and an exit code.

    With ``--verbose`` (or ``METALAB_VERBOSE=1``) the full traceback is kept instead.
    """

    def decorate(body: Callable[..., Any]) -> Any:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except MetalabError as error:
                if is_verbose(c):
                    raise
                raise Exit(f"metalab: {error}", code=error.exit_code) from None
            except BrokenPipeError:
                raise  # the reader went away (`| head`): cli.main ends quietly
            except OSError as error:  # a full disk, a folder that cannot be written: one line naming it
                if is_verbose(c):
                    raise
                raise Exit(f"metalab: {os_error_line(error)}", code=EXIT_FAILURE) from None

        return task(*args, **kwargs)(run)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        body, args = args[0], ()
        return decorate(body)
    return decorate


def is_verbose(c: Context) -> bool:
    """``-v/--verbose`` on the ``metalab`` command, or ``METALAB_VERBOSE`` for ``inv``."""
    settings = c.config.get("metalab") or {}
    return bool(settings.get("verbose")) or os.environ.get(VERBOSE_ENV_VAR, "") not in ("", "0")


def is_dry(c: Context) -> bool:
    """Invoke's ``--dry``: print what would happen, change nothing."""
    return bool(c.config.run.dry)


def loaded_config(c: Context):
    """The project's configuration, found by walking up from the current directory."""
    from ..config import locate_and_load

    return locate_and_load(Path.cwd(), os.environ)


def chosen_env(c: Context, env: str | None) -> str | None:
    """The profile named on the command line: the task's ``--env``, else ``metalab --env NAME``."""
    return env or (c.config.get("metalab") or {}).get("env")


def resolved_environment(c: Context, env: str | None):
    """The selected profile, resolved once per task invocation and kept on the context.

    Invoke gives pre-tasks none of the caller's arguments (pyinvoke/invoke#261), so a
    step called without ``--env`` reuses what its caller resolved on the same context,
    else falls back to ``METALAB_ENV`` and ``default_env``.
    """
    from ..config import resolve_environment

    settings = c.config.get("metalab")
    if settings is None:
        c.config["metalab"] = {}
        settings = c.config["metalab"]
    env = chosen_env(c, env)
    cached = settings.get("resolved")
    if cached is not None and (env is None or env == cached.name):
        return cached
    resolved = resolve_environment(loaded_config(c), flag=env, environ=os.environ)
    settings["resolved"] = resolved
    return resolved


def emit_json(data: Any) -> None:
    """Print machine-readable output: stable key order as given, one document."""
    print(jsonlib.dumps(data, indent=2))
