"""YAML read in safe mode, with the line of every key kept for error messages.

PyYAML's ``SafeLoader`` constructs only plain data (no Python objects). Two additions: YAML 1.2
floats (``1e-4`` is a number, as every researcher writes it, where YAML 1.1 makes it a string),
and duplicate keys are an error instead of the last one silently winning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["KeyPath", "YamlDocument", "parse_value", "read_yaml"]

KeyPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's exponent floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file's data and its node tree, to say on which line a key was written."""

    path: Path
    data: Any
    root: Any  # yaml.Node, or None for an empty file

    def line_of(self, keypath: KeyPath) -> int | None:
        """The 1-based line of the deepest part of ``keypath`` the file has."""
        node, line = self.root, None
        for part in keypath:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


def read_yaml(path: Path) -> YamlDocument:
    """Parse ``path``; :class:`ConfigError` names the file and line of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _refuse_duplicates(path, root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {error.problem or error.context}") from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, root=root)


def parse_value(text: str) -> Any:
    """A value from the command line, read as YAML (``2``, ``[0.1, 0.01]``, ``gpu``)."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"cannot read {text!r} as a value: {problem}") from None


def _refuse_duplicates(path: Path, node: Any, where: Sequence[str | int] = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if key.value in seen:
                dotted = ".".join(str(p) for p in (*where, key.value))
                raise ConfigError(f"{path}:{key.start_mark.line + 1}: {dotted}: written twice; keep one")
            seen.add(key.value)
            _refuse_duplicates(path, value, (*where, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(path, item, (*where, index))
