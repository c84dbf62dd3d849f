"""Tab completion for bash, zsh and fish: the spaced spelling (``metalab services u<TAB>``),
profile names after ``--env``, service names after ``services logs``.

The shell scripts pass the words before the one being completed to ``metalab --complete --``;
:func:`candidates` answers with every word that may come next, and the shell keeps those that
start with what was typed. Invoke's own completion knows only the dotted task names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SHELLS", "candidates", "profile_names", "script"]

GLOBAL_FLAGS = ("--env", "--dry", "--verbose", "--help", "--version")
SERVICE_LOGS = ("postgres", "atlas", "job")
_TAKES_VALUE = {"--env", "-e", "-n", "--service", "-s", "--name", "--command", "-c"}

SHELLS = {
    "bash": """_metalab_complete() {
    local IFS=$'\\n' current="${COMP_WORDS[COMP_CWORD]}"
    COMPREPLY=( $(metalab --complete -- "${COMP_WORDS[@]:1:$((COMP_CWORD-1))}" 2>/dev/null | grep -F -- "$current" | grep -- "^$current") )
}
complete -o default -F _metalab_complete metalab
""",
    "zsh": """#compdef metalab
_metalab() {
    local -a found
    found=("${(@f)$(metalab --complete -- "${(@)words[2,CURRENT-1]}" 2>/dev/null)}")
    compadd -- $found
}
compdef _metalab metalab
""",
    "fish": """complete -c metalab -f -a '(metalab --complete -- (commandline -opc)[2..-1] 2>/dev/null)'
""",
}


def script(shell: str) -> str:
    """The completion script for ``shell``; install it as the README says."""
    from .errors import UsageError

    if shell not in SHELLS:
        raise UsageError(f"no completion script for {shell!r}; choose bash, zsh or fish")
    return SHELLS[shell]


def candidates(words: Sequence[str], collection: Any, profiles: Sequence[str]) -> list[str]:
    """Every word that may follow ``words`` (the command line after ``metalab``)."""
    if words and words[-1] in ("--env", "-e"):
        return list(profiles)
    if words and words[-1] == "--service":
        return list(SERVICE_LOGS)
    if words and words[-1] in _TAKES_VALUE:
        return []
    plain = [word for i, word in enumerate(words) if not word.startswith("-") and (i == 0 or words[i - 1] not in _TAKES_VALUE)]
    tasks = set(collection.task_names)
    groups = set(collection.collections)
    if not plain:
        return sorted({name.partition(".")[0] for name in tasks}) + list(GLOBAL_FLAGS)
    first = plain[0]
    command = f"{first}.{plain[1]}" if first in groups and len(plain) > 1 else first.replace(" ", ".")
    if first in groups and len(plain) == 1:
        return sorted(name.partition(".")[2] for name in tasks if name.startswith(f"{first}."))
    if command not in tasks:
        return []
    extra: list[str] = []
    if command == "services.logs" and len(plain) == 2:
        extra = list(SERVICE_LOGS)
    if command == "env.show" and len(plain) == 1 + (first in groups):
        extra = list(profiles)
    flags = [f"-{a.name}" if len(a.name) == 1 else f"--{a.name.replace('_', '-')}" for a in collection[command].get_arguments()]
    return extra + sorted(flags)


def profile_names(cwd: Path) -> list[str]:
    """The profiles of the project around ``cwd`` (none when there is no readable config)."""
    import tomllib

    from .config import CONFIG_NAME

    for folder in (cwd, *cwd.parents):
        path = folder / CONFIG_NAME
        if path.is_file():
            names: list[str] = []
            for candidate in (path, path.with_name(".metalab.local.toml")):
                try:
                    names += list(tomllib.loads(candidate.read_text()).get("environments", {}))
                except (OSError, ValueError):
                    continue
            return sorted(set(names))
    return []
