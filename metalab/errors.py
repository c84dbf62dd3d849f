"""One exception hierarchy for every error a user can fix; each class carries its exit code."""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "os_error_line",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "ConfigError",
    "MetalabError",
    "NotFoundError",
    "RemoteError",
    "UsageError",
    "did_you_mean",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


class MetalabError(Exception):
    """A failure the user can act on, reported as one line on stderr."""

    exit_code = EXIT_FAILURE


class UsageError(MetalabError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration file or variable holds a value that must be fixed."""


class NotFoundError(MetalabError):
    """Something the command needs (a config file, a bundle, a profile) does not exist."""

    exit_code = EXIT_NOT_FOUND


class RemoteError(MetalabError):
    """A command could not be run where it had to run: no connection, refused, or timed out."""


def did_you_mean(word: str, choices: "list[str] | tuple[str, ...]") -> str:
    """``"; did you mean 'gpus'?"`` for the closest of ``choices`` to ``word``, else ``""``."""
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def os_error_line(error: OSError) -> str:
    """An operating-system error as one line naming the path and what to do about it."""
    import errno

    where = f" {error.filename}" if error.filename is not None else ""
    hint = {
        errno.ENOSPC: "free some space there and try again",
        errno.EDQUOT: "free some of your quota there and try again",
        errno.EACCES: "give your user write access there, or choose another folder",
        errno.EPERM: "give your user write access there, or choose another folder",
        errno.EROFS: "that filesystem is read-only: choose another folder",
        errno.ENOTDIR: "a file stands where a folder is needed: move it or choose another folder",
    }.get(error.errno or 0, "")
    return f"cannot use{where}: {error.strerror or error}" + (f"; {hint}" if hint else "")
