"""One exception hierarchy for every error a user can catch; each class carries its exit code.

    MetalabError (exit 1)                  a failure the user can act on, shown as one line
    ├── UsageError (exit 2)                the command or call asked for what cannot be done
    │   ├── ConfigError                    a config file or variable holds a value to fix
    │   ├── CaptureError (ValueError)      a value a run cannot record (a bad metric or name)
    │   └── QueryError (ValueError)        an Atlas filter, sort or field the catalogue lacks
    ├── NotFoundError (exit 3)             a config file, bundle or profile that does not exist
    ├── RemoteError                        a command could not run where it had to
    │   └── PgWireError                    PostgreSQL unreachable, refusing the login, or not it
    ├── DatabaseUnavailable                the index did not answer (Atlas: a 503, try again)
    ├── ServiceError                       a service did not start, or stopped on its own
    └── UnsafePath (ValueError)            a run file outside file_root, or not a plain file

Modules raise these and re-export the ones they own (``metalab.atlas.query.QueryError`` is this
``QueryError``); errors from the gateway come back as these very classes
(``metalab.executor.slurm``). Other modules' classes derive from one of them.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "CaptureError",
    "ConfigError",
    "DatabaseUnavailable",
    "MetalabError",
    "NotFoundError",
    "PgWireError",
    "QueryError",
    "RemoteError",
    "ServiceError",
    "UnsafePath",
    "UsageError",
    "did_you_mean",
    "os_error_line",
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


class CaptureError(UsageError, ValueError):
    """A value that cannot be recorded (a metric that is not a number, a bad name)."""


class QueryError(UsageError, ValueError):
    """A request the catalogue cannot answer; the message says what to change."""


class PgWireError(RemoteError):
    """The server could not be reached, refused the login, or did not speak PostgreSQL."""


class DatabaseUnavailable(MetalabError):
    """The index did not answer (a 503: the request may simply be tried again)."""


class ServiceError(MetalabError):
    """A service did not start, or stopped on its own; the message names its log."""


class UnsafePath(MetalabError, ValueError):
    """A requested path that could lead outside ``file_root`` (or into its services folder)."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
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
