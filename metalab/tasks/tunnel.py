"""``tunnel``: forward remote services to localhost over SSH (nothing to do for local ones)."""

from __future__ import annotations

from ._common import metalab_task, resolved_environment

__all__ = ["tunnel"]


@metalab_task(help={"env": "Environment profile (default: METALAB_ENV, then default_env)."})
def tunnel(c, env=None):
    """Open an SSH tunnel to the running services so they appear on localhost."""
    resolved = resolved_environment(c, env)
    if resolved.type == "local":
        print(f"environment {resolved.name} is local: its services already listen on this machine, nothing to tunnel")
        return
    from ..errors import UsageError

    raise UsageError(f"tunnelling to a {resolved.type} environment is not available yet")
