"""The files Atlas serves: a run's artifacts, captured data and log, and never anything else.

The layout under ``file_root`` is the FileStore's (see ``metalab.store.files``)::

    {file_root}/{experiment_id}/artifacts/{run_id}/{name}   name may contain subfolders
    {file_root}/{experiment_id}/data/{run_id}/{name}.npy    arrays ``capture.data`` saved
    {file_root}/{experiment_id}/logs/{run_id}.log

Every name comes from a URL, so every path is validated segment by segment and then resolved
the way ``realpath`` would, one component at a time, refusing the moment a ``..`` or a symlink
would leave ``file_root``; nothing outside ``file_root`` is ever looked at, not even with
``lstat``. ``file_root/services`` holds the services' passwords, so it is refused as well, even
through a symlink. A refused path raises :class:`UnsafePath` (a ``ValueError``) whose one-line
message names the rule broken, never the input or a server path; a path that is safe but does
not lead to a regular file raises ``FileNotFoundError`` with an equally bland message.

Nothing here imports a web framework: the app maps ``UnsafePath`` to 400 and
``FileNotFoundError`` to 404.
"""

from __future__ import annotations

import codecs
import json
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from ..store.files import RESERVED_NAMES

__all__ = [
    "UnsafePath",
    "artifact_path",
    "data_path",
    "list_artifacts",
    "list_data",
    "log_path",
    "media_type",
    "preview_kind",
    "read_preview",
    "safe_path",
    "tail",
]

SNIFF_BYTES = 8 * 1024  # how much of a file decides its kind
_MAX_SYMLINKS = 40  # as the kernel's ELOOP limit: a cycle is refused, not followed forever
_ENCODED = ("%2f", "%5c", "%2e%2e")  # still encoded after the web layer's decode: a double-encoding attack
_DECODE_ROUNDS = 3  # "%252e%252e" needs two more decodes to show its dots
_TEXT_EXTENSIONS = frozenset({
    ".txt", ".log", ".out", ".err", ".csv", ".tsv", ".md", ".rst", ".tex", ".py", ".sh", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".conf", ".json", ".jsonl", ".xml", ".html", ".htm", ".js", ".css", ".svg",
})  # fmt: skip
_IMAGE_MAGIC: dict[str, Callable[[bytes], bool]] = {
    ".png": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    ".jpg": lambda head: head.startswith(b"\xff\xd8\xff"),
    ".jpeg": lambda head: head.startswith(b"\xff\xd8\xff"),
    ".gif": lambda head: head[:6] in (b"GIF87a", b"GIF89a"),
    ".webp": lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    ".svg": lambda head: head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"<"),
}
_MIME = mimetypes.MimeTypes()  # the built-in table only: the answer must not depend on the host's mime.types
_MIME_OVERRIDES = {".webp": "image/webp", ".log": "text/plain", ".jsonl": "text/plain"}  # missing from 3.10-3.12
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


class UnsafePath(ValueError):
    """A requested path that could lead outside ``file_root`` (or into its services folder)."""


# --------------------------------------------------------------------------- validation


def _check_segment(part: str, what: str) -> None:
    """One path component as it arrived from the URL (already decoded once)."""
    if not part:
        raise UnsafePath(f"{what}: empty path segment")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in part):
        raise UnsafePath(f"{what}: control characters are not allowed")
    text = part
    for _ in range(1 + _DECODE_ROUNDS):
        if text in (".", "..") or "/" in text or "\\" in text or "\x00" in text:
            raise UnsafePath(f"{what}: '.', '..', slashes and backslashes are not allowed in a segment")
        if any(code in text.lower() for code in _ENCODED):
            raise UnsafePath(f"{what}: percent-encoded separators or dots are not allowed")
        decoded = unquote(text)
        if decoded == text:
            return
        text = decoded  # what a second, careless decode somewhere would see
    raise UnsafePath(f"{what}: too many levels of percent-encoding")


def _split_name(name: str, what: str) -> list[str]:
    """A relative name that may span subfolders ("plots/a.png") as validated segments."""
    if not isinstance(name, str):
        raise UnsafePath(f"{what}: must be a string")
    if name.startswith("/"):
        raise UnsafePath(f"{what}: absolute paths are not allowed")
    parts = name.split("/")
    for part in parts:
        _check_segment(part, what)
    return parts


def _check_id(value: str, what: str) -> str:
    """experiment_id and run_id are single folder names (a "/" is refused like any separator)."""
    if not isinstance(value, str):
        raise UnsafePath(f"{what}: must be a string")
    _check_segment(value, what)
    return value


def _check_experiment(experiment_id: str) -> str:
    # "services" passes here; the resolver refuses it wherever it is met (see _resolve)
    return _check_id(experiment_id, "experiment_id")


# --------------------------------------------------------------------------- resolution


def _root(file_root: Path | str) -> str:
    try:
        root = Path(file_root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise FileNotFoundError("file_root does not exist") from None  # no server path in the message
    if not root.is_dir():
        raise FileNotFoundError("file_root is not a folder")
    return str(root)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _under_root(root: str, target: str) -> list[str]:
    """An absolute symlink target as parts below root, compared textually so it is never visited."""
    root_parts = [p for p in root.split("/") if p not in ("", ".")]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if parts[: len(root_parts)] != root_parts:
        raise UnsafePath("path: a symlink leads outside file_root")
    return parts[len(root_parts) :]


def _walk(root: str, parts: list[str]) -> str:
    """realpath(root/parts) that refuses to take a step outside root.

    ``current`` never contains a symlink (each existing component was lstat'ed), so a ``..``
    met in a link target can be applied textually. Components that do not exist are kept as
    they are: the caller decides whether a missing file is an error.
    """
    current = root
    pending = list(reversed(parts))
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if current == root:
                raise UnsafePath("path: a symlink leads outside file_root")
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:
            is_link = False  # missing (or under a file): nothing to follow
        if not is_link:
            current = candidate
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise UnsafePath("path: too many levels of symlinks")
        try:
            target = os.readlink(candidate)
        except OSError:  # replaced while we looked: treat as missing
            current = candidate
            continue
        if os.path.isabs(target):
            current = root
            pending.extend(reversed(_under_root(root, target)))
        else:
            pending.extend(reversed(target.split("/")))  # relative to the link's folder, i.e. current
    return current


def _resolve(root: str, parts: list[str]) -> str:
    resolved = _walk(root, parts)
    relative = resolved[len(root) :].lstrip("/").split("/")
    if relative[0] in RESERVED_NAMES:
        raise UnsafePath("path: the services folder is not served")
    # Belt and braces: the walk found no symlink, so realpath must agree (and stays inside).
    if os.path.lexists(resolved) and not _inside(root, os.path.realpath(resolved)):
        raise UnsafePath("path: leads outside file_root")
    return resolved


def safe_path(file_root: Path | str, *segments: str) -> Path:
    """``file_root/segments...`` resolved, or :class:`UnsafePath` if it would leave file_root.

    A segment may hold several components separated by "/" (as an artifact name does); each
    is validated. Symlinks inside file_root are followed as long as they stay inside. The
    returned path is absolute, symlink-free and need not exist; ``FileNotFoundError`` only
    when file_root itself is missing.
    """
    root = _root(file_root)
    parts = [part for segment in segments for part in _split_name(segment, "path")]
    if parts and parts[0] in RESERVED_NAMES:
        raise UnsafePath("path: the services folder is not served")
    return Path(_resolve(root, parts))


def _regular_file(path: Path, what: str) -> Path:
    # lstat is enough: safe_path returns a path without symlinks
    try:
        is_file = stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        is_file = False
    if not is_file:
        raise FileNotFoundError(f"{what} not found")
    return path


def artifact_path(file_root: Path | str, experiment_id: str, run_id: str, name: str) -> Path:
    """The artifact ``name`` of a run: a validated path to an existing regular file."""
    path = safe_path(
        file_root, _check_experiment(experiment_id), "artifacts", _check_id(run_id, "run_id"), *_split_name(name, "name")
    )
    return _regular_file(path, "artifact")


def data_path(file_root: Path | str, experiment_id: str, run_id: str, name: str) -> Path:
    """Captured data of a run, by its listed file name ("x.npy"), or by the captured name ("x")
    when no file of that exact name exists (then ``x.npy``, then ``x.json``)."""
    base = [_check_experiment(experiment_id), "data", _check_id(run_id, "run_id")]
    parts = _split_name(name, "name")
    for candidate in (name, f"{name}.npy", f"{name}.json"):
        path = safe_path(file_root, *base, *parts[:-1], candidate.rsplit("/", 1)[-1])
        try:
            return _regular_file(path, "data")
        except FileNotFoundError:
            continue
    raise FileNotFoundError("data not found")


def log_path(file_root: Path | str, experiment_id: str, run_id: str) -> Path:
    """The run's log: a validated path to an existing regular file."""
    path = safe_path(file_root, _check_experiment(experiment_id), "logs", f"{_check_id(run_id, 'run_id')}.log")
    return _regular_file(path, "log")


# --------------------------------------------------------------------------- listings


def _list_files(file_root: Path | str, experiment_id: str, folder: str, run_id: str) -> list[tuple[str, str]]:
    """(relative name, resolved path) of every regular file under the run's folder, sorted.

    Real subfolders are descended; symlinks are listed only if they resolve to a regular file
    inside file_root (symlinked folders are not descended: no cycles, no surprises).
    """
    root = _root(file_root)
    base_parts = [_check_experiment(experiment_id), folder, _check_id(run_id, "run_id")]
    base = _resolve(root, base_parts)  # UnsafePath if the run's folder itself escapes
    if not os.path.isdir(base):
        return []
    found: list[tuple[str, str]] = []
    folders = [""]
    while folders:
        relative = folders.pop()
        try:
            entries = list(os.scandir(os.path.join(base, relative)))
        except OSError:
            continue  # vanished or unreadable while we looked
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            try:
                _split_name(name, "name")  # a name that could never be requested is not listed
                if entry.is_dir(follow_symlinks=False):
                    folders.append(name)
                    continue
                path = entry.path if entry.is_file(follow_symlinks=False) else _resolve(root, [*base_parts, name])
            except (UnsafePath, OSError):
                continue
            if os.path.isfile(path):
                found.append((name, path))
    return sorted(found)


def _head(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(SNIFF_BYTES)


def _entry(name: str, path: str, kind: str | None = None) -> dict[str, Any] | None:
    try:
        size = os.stat(path).st_size
        return {"name": name, "size": size, "kind": kind or preview_kind(name, _head(path))}
    except OSError:
        return None  # deleted between listing and reading


def list_artifacts(file_root: Path | str, experiment_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every artifact of a run as {"name", "size", "kind"}, sorted by name; [] when there are none."""
    entries = (_entry(name, path) for name, path in _list_files(file_root, experiment_id, "artifacts", run_id))
    return [entry for entry in entries if entry is not None]


def list_data(file_root: Path | str, experiment_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every captured data file of a run as {"name", "size", "kind"}; kind "array" for .npy.

    Today only arrays are files (JSON-able values live in the run record); any other file
    found there is listed with the kind its content suggests.
    """
    result = []
    for name, path in _list_files(file_root, experiment_id, "data", run_id):
        entry = _entry(name, path, "array" if name.lower().endswith(".npy") else None)
        if entry is not None:
            result.append(entry)
    return result


# --------------------------------------------------------------------------- previews


def _extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def _decode_strict(data: bytes) -> str | None:
    """UTF-8 text, or None; a multi-byte character cut by the end of the head is not an error."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return None


def preview_kind(name: str, head: bytes) -> str:
    """"image", "json", "text" or "binary", from the name and the file's first bytes.

    ``head`` is the start of the file (the whole file when it is small). Images need both
    the extension and a plausible signature. A .json head that does not parse still counts
    as JSON when it was cut (``len(head) >= SNIFF_BYTES``) and starts like an object or array.
    Text is UTF-8 without NUL in the first 8 KiB; a file with a text extension and no NUL is
    text even with a few invalid bytes (shown with replacement characters).
    """
    extension = _extension(name)
    check = _IMAGE_MAGIC.get(extension)
    if check is not None and check(head):
        return "image"
    if b"\x00" in head[:SNIFF_BYTES]:
        return "binary"
    text = _decode_strict(head)
    if extension == ".json" and text is not None:
        try:
            json.loads(text)
            return "json"
        except (ValueError, RecursionError):
            if len(head) >= SNIFF_BYTES and text.lstrip()[:1] in ("{", "["):
                return "json"
    if text is not None or extension in _TEXT_EXTENSIONS:
        return "text"
    return "binary"


def _cut_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of text, never splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def read_preview(path: Path | str, limit: int = 64 * 1024) -> dict[str, Any]:
    """{"kind", "size", "text", "truncated"} for showing a file in the page.

    "text" holds at most ``limit`` bytes of the file decoded (errors replaced) for text and
    JSON, None for images and binaries. JSON is pretty-printed when the whole file fits in
    ``limit``; "truncated" says the text shown is not all of it.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1)  # one more byte tells whether there is more
    truncated = len(data) > limit
    data = data[:limit]
    kind = preview_kind(Path(path).name, data)
    preview: dict[str, Any] = {"kind": kind, "size": max(size, len(data)), "text": None, "truncated": False}
    if kind not in ("text", "json"):
        return preview
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=not truncated)
    if kind == "json" and not truncated:
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pretty = None
        if pretty is not None:
            text = _cut_utf8(pretty, limit)
            truncated = len(text) < len(pretty)  # indentation can make it outgrow the limit
    preview.update(text=text, truncated=truncated)
    return preview


def tail(path: Path | str, lines: int = 200, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """The last ``lines`` lines of a (possibly growing) log, reading at most ``max_bytes`` from its end.

    Returns {"lines", "size", "truncated"}; "truncated" says earlier lines exist. A last line
    still being written (no newline yet) is included. Lines are split on "\\n" only, so a
    progress bar's "\\r" updates stay on one line.
    """
    if lines < 0 or max_bytes <= 0:
        raise ValueError("lines must be >= 0 and max_bytes > 0")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size - max_bytes)
        # one byte before the window tells whether its first line starts there or was cut
        handle.seek(max(0, start - 1))
        data = handle.read(size - start + (start > 0))  # not to EOF: a busy writer could make that unbounded
    truncated = start > 0
    if truncated:
        newline = data.find(b"\n")
        # drop the cut first line; a single line longer than the window is shown cut instead
        data = data[newline + 1 :] if newline >= 0 else data[1:].lstrip(bytes(range(0x80, 0xC0)))
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the file ends with a newline: no empty last line
    if len(chunks) > lines:
        chunks = chunks[len(chunks) - lines :]
        truncated = True
    text = [chunk.rstrip(b"\r").decode("utf-8", errors="replace") for chunk in chunks]
    return {"lines": text, "size": size, "truncated": truncated}


def media_type(name: str) -> str:
    """The Content-Type to send a file as; application/octet-stream when unknown.

    Active types (text/html, image/svg+xml) are returned as they are: the app must send
    artifacts with ``Content-Disposition: attachment`` or a sandboxing CSP, never inline.
    """
    extension = _extension(name)
    if extension in _MIME_OVERRIDES:
        return _MIME_OVERRIDES[extension]
    guessed, encoding = _MIME.guess_type(f"file{extension}")
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"
