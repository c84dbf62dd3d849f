"""``init``: write a commented starter ``.metalab.toml`` and keep local overrides out of git."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ._common import metalab_task

__all__ = ["init"]

# Local overrides (may hold secrets), and the starter's file_root's services/ folder: it holds
# the generated postgres.password and Atlas's token beside the database.
_GITIGNORE_LINES = (".metalab.local.toml", "runs/services/")


@metalab_task(help={"name": "Project name (default: this directory's name)."})
def init(c, name=None):
    """Create a starter .metalab.toml here; gitignore .metalab.local.toml and runs/services/."""
    from importlib import resources
    from string import Template

    from ..config import CONFIG_NAME

    root = Path.cwd()
    target = root / CONFIG_NAME
    text = Template(resources.files("metalab.templates").joinpath("metalab.toml").read_text()).substitute(
        name=name or root.name
    )
    if c.config.run.dry:
        print(f"would write {target}:\n{text}")
        return
    try:
        with target.open("x") as handle:  # "x": never clobber an existing config
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{target} already exists; edit it, or remove it to start over") from None
    added = _ensure_gitignored(root / ".gitignore")
    print(f"wrote {target}")
    if added:
        print(f"added {' and '.join(added)} to {root / '.gitignore'} (local overrides, and the services' passwords)")


def _ensure_gitignored(gitignore: Path) -> list[str]:
    """Append the lines of _GITIGNORE_LINES that ``gitignore`` lacks; returns those added."""
    existing = gitignore.read_text() if gitignore.exists() else ""
    missing = [line for line in _GITIGNORE_LINES if line not in existing.splitlines()]
    if missing:
        separator = "" if not existing or existing.endswith("\n") else "\n"
        with gitignore.open("a") as handle:
            handle.write(separator + "".join(f"{line}\n" for line in missing))
    return missing
