"""One exception hierarchy for every error a user can fix; each class carries its exit code."""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "ConfigError",
    "MetalabError",
    "NotFoundError",
    "RemoteError",
    "UsageError",
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
