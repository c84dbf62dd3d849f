"""The ``metalab`` command: an :class:`invoke.Program` over :data:`metalab.tasks.ns`."""

from __future__ import annotations

from collections.abc import Sequence

from invoke import Argument, Collection, Exit, ParseError, Program
from invoke.parser import Parser

from ._version import __version__
from .errors import EXIT_USAGE

__all__ = ["MetalabProgram", "main", "rewrite_argv"]

# Tasks whose first bare word is an option's value: `metalab env show slurm`.
_BARE_WORD_OPTION = {"env.show": "--name"}


def rewrite_argv(argv: Sequence[str], collection: Collection) -> list[str]:
    """Accept the spaced spelling: ``services up`` → ``services.up``, ``env show X`` → ``env.show --name X``.

    Only a word that names a sub-collection and is followed by one of its tasks is joined,
    so option values and dotted spellings pass through untouched.
    """
    tasks = set(collection.task_names)
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        joined = f"{word}.{words[i + 1]}" if i + 1 < len(words) else None
        if word in collection.collections and joined in tasks:
            word, i = joined, i + 1
        out.append(word)
        option = _BARE_WORD_OPTION.get(word)
        nxt = words[i + 1] if i + 1 < len(words) else None
        if option and nxt and not nxt.startswith("-") and nxt not in tasks and nxt not in collection.collections:
            out.append(option)
        i += 1
    return out


class MetalabProgram(Program):
    """Invoke's Program with metalab's spellings, ``-v/--verbose`` and exit code 2 for usage errors."""

    def core_args(self) -> list[Argument]:
        return [
            *super().core_args(),
            Argument(names=("verbose", "v"), kind=bool, default=False, help="Show tracebacks for errors."),
        ]

    def normalize_argv(self, argv: Sequence[str] | None) -> None:
        super().normalize_argv(argv)
        self.argv = [self.argv[0], *rewrite_argv(self.argv[1:], self.namespace)]

    def parse_core(self, argv: Sequence[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as error:
            raise Exit(f"metalab: {error}", code=EXIT_USAGE) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as error:
            raise Exit(f"metalab: {error}", code=EXIT_USAGE) from None

    def _make_parser(self) -> Parser:
        # Invoke deep-copies every task's parser context on each parse; hand it only the tasks
        # named on this command line (all of them when none is, so unknown names still fail).
        contexts = self.collection.to_contexts(ignore_unknown_help=self.config.tasks.ignore_unknown_help)
        named = set(self.core.unparsed)
        wanted = [c for c in contexts if c.name in named or named.intersection(c.aliases)]
        return Parser(initial=self.initial_context, contexts=wanted or contexts)

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=merge)
        if self.args.verbose.value:
            # A runtime modification: it outranks the collection's default and keeps --dry & co.
            self.config["metalab"] = {"verbose": True}


def _namespace() -> Collection:
    from .tasks import ns

    return ns


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point. SIGTERM and SIGHUP stop a command as Ctrl+C does (what it
    started is stopped, no bundle is left half-written)."""
    import os
    import signal
    import sys

    from .procs import interrupts

    program = MetalabProgram(name="metalab", binary="metalab", version=__version__, namespace=_namespace())
    try:
        with interrupts(signal.SIGTERM, signal.SIGHUP):
            program.run(argv)
            sys.stdout.flush()  # here, not at exit: a reader that left is handled below
    except BrokenPipeError:
        # `metalab services status --json | head -3`: the reader has what it wanted. Point stdout
        # at /dev/null so the interpreter's own last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
