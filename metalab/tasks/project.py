"""``init``: write a commented starter ``.metalab.toml`` and keep local overrides out of git."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ._common import metalab_task

__all__ = ["init"]

_GITIGNORE_LINE = ".metalab.local.toml"


@metalab_task(help={"name": "Project name (default: this directory's name)."})
def init(c, name=None):
    """Create a starter .metalab.toml here and gitignore .metalab.local.toml."""
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
        print(f"added {_GITIGNORE_LINE} to {root / '.gitignore'}")


def _ensure_gitignored(gitignore: Path) -> bool:
    existing = gitignore.read_text() if gitignore.exists() else ""
    if _GITIGNORE_LINE in existing.splitlines():
        return False
    separator = "" if not existing or existing.endswith("\n") else "\n"
    with gitignore.open("a") as handle:
        handle.write(f"{separator}{_GITIGNORE_LINE}\n")
    return True
