"""The ``metalab`` command: an :class:`invoke.Program` over :data:`metalab.tasks.ns`."""

from __future__ import annotations

from collections.abc import Sequence

from invoke import Argument, Collection, Exit, ParseError, Program
from invoke.parser import Parser

from ._version import __version__
from .errors import EXIT_USAGE

__all__ = ["MetalabProgram", "main", "rewrite_argv"]

# Tasks whose first bare word is an option's value: `metalab env show slurm`.
_BARE_WORD_OPTION = {"env.show": "--name", "services.logs": "--service"}
# Tasks that take a file, then key.path=value overrides: `metalab run exp.yaml executor.gpus=2`.
_OVERRIDE_TASKS = ("run", "results", "status", "cancel")
_HELP_FLAGS = ("-h", "--help")


def rewrite_argv(argv: Sequence[str], collection: Collection) -> list[str]:
    """Accept the spaced spelling: ``services up`` → ``services.up``, ``env show X`` → ``env.show --name X``.

    Only a word that names a sub-collection and is followed by one of its tasks is joined,
    so option values and dotted spellings pass through untouched. After an experiment-file
    command a bare ``key=value`` is an override (``--set``); ``-h`` after a command is its help.
    """
    tasks = set(collection.task_names)
    out: list[str] = []
    words = list(argv)
    i = 0
    command = None
    while i < len(words):
        word = words[i]
        joined = f"{word}.{words[i + 1]}" if i + 1 < len(words) else None
        if word in collection.collections and joined in tasks:
            word, i = joined, i + 1
        if command is not None and word in _HELP_FLAGS:  # before a task's positional can take it
            return [*out[: out.index(command)], "--help", command]
        if command in _OVERRIDE_TASKS and "=" in word and not word.startswith("-") and out[-1:] != ["--set"]:
            out.append("--set")
        elif command is None and word in tasks:
            command = word
        out.append(word)
        option = _BARE_WORD_OPTION.get(word)
        nxt = words[i + 1] if i + 1 < len(words) else None
        if option and nxt and not nxt.startswith("-") and nxt not in tasks and nxt not in collection.collections:
            out.append(option)
        i += 1
    return out


# The options `metalab --help` shows; Invoke's others (its runner's --pty, --hide, --echo, ...)
# still parse, for `inv`, but mean nothing to a metalab user and are not listed.
_SHOWN_OPTIONS = (
    ("--env NAME", "the environment profile, for any command (before or after it)"),
    ("-R, --dry", "print what would happen; change nothing"),
    ("-v, --verbose", "show tracebacks for errors"),
    ("-h, --help [COMMAND]", "this help, or a command's (metalab --help services.up)"),
    ("-V, --version", "show the version"),
    ("--print-completion-script SHELL", "tab completion for bash, zsh or fish (see the README)"),
)
_GROUPS = (("", "Project"), ("env", "Environment profiles"), ("services", "Services"))
_EXPERIMENT_GROUP = "Experiment files"


def command_help(collection: Collection, only: str | None = None) -> str:
    """``metalab --help``'s command list (or one group's): the spaced spelling, grouped, each
    with the first line of its help."""
    lines = []
    groups = [("", _EXPERIMENT_GROUP, _OVERRIDE_TASKS), *((p, t, None) for p, t in _GROUPS)]
    for prefix, title, listed in groups:
        if only is not None and prefix != only:
            continue
        top = [n for n in collection.task_names if "." not in n]
        names = ([n for n in top if n in listed] if listed else
                 [n for n in collection.task_names if n.partition(".")[0] == prefix] if prefix else
                 [n for n in top if n not in _OVERRIDE_TASKS])
        if not names:
            continue
        lines.append(f"{title}:")
        for name in sorted(names):
            task = collection[name]
            summary = (task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else ""
            lines.append(f"  {name.replace('.', ' '):<32} {summary}")
        lines.append("")
    return "\n".join(lines)


def suggestion(words: Sequence[str], collection: Collection) -> str | None:
    """"did you mean" for a command line whose command is unknown (spaced or dotted)."""
    import difflib

    spaced = [name.replace(".", " ") for name in collection.task_names]
    given = " ".join(words[:2]).replace(".", " ")
    close = difflib.get_close_matches(given, spaced, n=1, cutoff=0.6) or difflib.get_close_matches(
        words[0].replace(".", " "), spaced, n=1, cutoff=0.6)
    return close[0] if close else None


class MetalabProgram(Program):
    """Invoke's Program with metalab's spellings and help, ``--env`` and ``-v/--verbose`` before
    the command, "did you mean", and exit code 2 for usage errors."""

    def core_args(self) -> list[Argument]:
        return [
            *super().core_args(),
            Argument(names=("verbose", "v"), kind=bool, default=False, help="Show tracebacks for errors."),
            Argument(names=("env",), help="The environment profile, for any command."),
        ]

    def print_help(self) -> None:
        print(f"Usage: {self.binary} [--env NAME] [--dry] [-v] <command> [options]\n")
        print(command_help(self.namespace))
        print("Options:")
        for flags, text in _SHOWN_OPTIONS:
            print(f"  {flags:<32} {text}")
        print(f"\nA command's own options: {self.binary} <command> --help")

    def normalize_argv(self, argv: Sequence[str] | None) -> None:
        super().normalize_argv(argv)
        _complete_if_asked(self.argv[1:], self.namespace)
        self.argv = [self.argv[0], *rewrite_argv(self.argv[1:], self.namespace)]

    def parse_core(self, argv: Sequence[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as error:
            raise Exit(f"metalab: {error}", code=EXIT_USAGE) from None

    def parse_tasks(self) -> None:
        words = list(self.core.unparsed)
        group = words[0] if words and words[0] in self.namespace.collections else None
        if group is not None and len(words) == 1:  # `metalab services`: its commands
            print(command_help(self.namespace, only=group), end="")
            raise Exit(code=0)
        try:
            super().parse_tasks()
        except ParseError as error:
            message = str(error)
            if message.startswith("No idea what") and words:
                shown = " ".join(words[:2]) if len(words) > 1 and not words[1].startswith("-") else words[0]
                guess = suggestion(words, self.namespace)
                hint = f"; did you mean `{self.binary} {guess}`?" if guess else f"; see `{self.binary} --help`"
                message = f"no command `{shown}`{hint}"
            raise Exit(f"metalab: {message}", code=EXIT_USAGE) from None

    def _make_parser(self) -> Parser:
        # Invoke deep-copies every task's parser context on each parse; hand it only the tasks
        # named on this command line (all of them when none is, so unknown names still fail).
        contexts = self.collection.to_contexts(ignore_unknown_help=self.config.tasks.ignore_unknown_help)
        named = set(self.core.unparsed)
        wanted = [c for c in contexts if c.name in named or named.intersection(c.aliases)]
        return Parser(initial=self.initial_context, contexts=wanted or contexts)

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=merge)
        # Runtime modifications: they outrank the collection's defaults and keep --dry & co.
        settings = {}
        if self.args.verbose.value:
            settings["verbose"] = True
        if self.args.env.value:
            settings["env"] = self.args.env.value  # tasks' own --env, when given, wins (resolved_environment)
        if settings:
            self.config["metalab"] = settings


def _complete_if_asked(words: Sequence[str], collection: Collection) -> None:
    """``--print-completion-script SHELL`` and ``--complete -- WORDS`` are metalab's own (see
    metalab.completion): they know the spaced spelling, profiles and service names."""
    from pathlib import Path

    from . import completion

    words = list(words)
    for i, word in enumerate(words):
        if word.startswith("--print-completion-script"):
            shell = word.partition("=")[2] or (words[i + 1] if i + 1 < len(words) else "")
            try:
                print(completion.script(shell), end="")
            except Exception as error:
                raise Exit(f"metalab: {error}", code=EXIT_USAGE) from None
            raise Exit(code=0)
    if words[:2] == ["--complete", "--"] or words[:1] == ["--complete"]:
        rest = words[2:] if words[1:2] == ["--"] else words[1:]
        for candidate in completion.candidates(rest, collection, completion.profile_names(Path.cwd())):
            print(candidate)
        raise Exit(code=0)


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
