"""The files Atlas serves: a run's artifacts, captured data and log, and never anything else.

The layout under ``file_root`` is the FileStore's (see ``metalab.store.files``)::

    {file_root}/{experiment_id}/artifacts/{run_id}/{name}   name may contain subfolders
    {file_root}/{experiment_id}/data/{run_id}/{name}.npy    arrays ``capture.data`` saved
    {file_root}/{experiment_id}/logs/{run_id}.log

Every name comes from a URL, so every path is validated segment by segment and then opened the
way ``realpath`` would resolve it, one component at a time relative to its parent's descriptor
(``openat`` with ``O_NOFOLLOW``), refusing the moment a ``..`` or a symlink would leave
``file_root``; nothing outside ``file_root`` is ever looked at, and every file is read from the
one descriptor that was checked, never opened by name again (a run that swaps a file for a
symlink between two looks gets nothing). ``file_root/services`` holds the services' passwords,
so it is refused as well, even through a symlink, and so are hard links to its files. A refused
path raises :class:`UnsafePath` (a ``ValueError``) whose one-line message names the rule broken,
never the input or a server path; a path that is safe but does not lead to a regular file raises
``FileNotFoundError`` with an equally bland message.

Nothing here imports a web framework: the app maps ``UnsafePath`` to 400 and
``FileNotFoundError`` to 404.
"""

from __future__ import annotations

import codecs
import errno
import json
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote

from ..errors import UnsafePath
from ..store.files import RESERVED_NAMES

__all__ = [
    "list_artifacts",
    "list_data",
    "media_type",
    "open_artifact",
    "open_data",
    "open_file",
    "open_log",
    "open_records",
    "preview_kind",
    "read_preview",
    "tail",
]

SNIFF_BYTES = 8 * 1024  # how much of a file decides its kind
_MAX_SYMLINKS = 40  # as the kernel's ELOOP limit: a cycle is refused, not followed forever
_ENCODED = ("%2f", "%5c", "%2e%2e")  # still encoded after the web layer's decode: a double-encoding attack
_DECODE_ROUNDS = 3  # "%252e%252e" needs two more decodes to show its dots
_TEXT_EXTENSIONS = frozenset({
    ".txt", ".log", ".out", ".err", ".csv", ".tsv", ".md", ".rst", ".tex", ".py", ".sh", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".conf", ".json", ".jsonl", ".xml", ".html", ".htm", ".js", ".css", ".svg",
})
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
    # "services" passes here; the opener refuses it wherever it is met (see _open_under)
    return _check_id(experiment_id, "experiment_id")


# --------------------------------------------------------------------------- opening


def _root(file_root: Path | str) -> str:
    try:
        root = Path(file_root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise FileNotFoundError("file_root does not exist") from None  # no server path in the message
    if not root.is_dir():
        raise FileNotFoundError("file_root is not a folder")
    return str(root)


def _under_root(root: str, target: str) -> list[str]:
    """An absolute symlink target as parts below root, compared textually so it is never visited."""
    root_parts = [p for p in root.split("/") if p not in ("", ".")]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if parts[: len(root_parts)] != root_parts:
        raise UnsafePath("path: a symlink leads outside file_root")
    return parts[len(root_parts) :]


# O_NOFOLLOW on every component: the kernel never follows a symlink for us, so a file swapped
# for a symlink between two looks is refused or walked by _open_under, never served blindly.
# O_NONBLOCK: a FIFO planted among the artifacts must not hang the server on open.
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # what O_NOFOLLOW on a symlink gives (Linux, BSDs)


def _open_under(root: str, parts: list[str], *, directory: bool = False) -> int:
    """A descriptor of ``root/parts`` (a regular file, or with ``directory`` a folder), opened one
    component at a time relative to its parent's descriptor (``openat``), never by name twice.

    A symlink met on the way is read (``readlinkat``) and walked here as ``realpath`` would, with
    a stack of folder descriptors, so a ``..`` or an absolute target can never step out of
    ``root``, nor into its ``services`` folder. The caller owns (and closes) the descriptor.
    """
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    pending = list(reversed(parts))
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) == 1:
                    raise UnsafePath("path: a symlink leads outside file_root")
                os.close(stack.pop())
                continue
            if len(stack) == 1 and part in RESERVED_NAMES:
                raise UnsafePath("path: the services folder is not served")
            want_folder = bool(pending) or directory
            try:
                fd = os.open(part, _OPEN | (os.O_DIRECTORY if want_folder else 0), dir_fd=stack[-1])
            except OSError as error:
                target = _link_target(part, stack[-1]) if error.errno in _LINK_ERRORS else None
                if target is None:
                    raise FileNotFoundError("not found") from None
                links += 1
                if links > _MAX_SYMLINKS:
                    raise UnsafePath("path: too many levels of symlinks") from None
                if os.path.isabs(target):
                    for folder in stack[1:]:
                        os.close(folder)
                    del stack[1:]
                    target_parts = _under_root(root, target)
                else:
                    target_parts = target.split("/")  # relative to the link's folder: the top of the stack
                pending.extend(reversed(target_parts))
                continue
            if pending:
                stack.append(fd)
                continue
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
                os.close(fd)
                raise FileNotFoundError("not found")
            return fd
        if directory:
            return os.dup(stack[-1])
        raise FileNotFoundError("not found")
    finally:
        for folder in stack:
            os.close(folder)


def _link_target(name: str, folder: int) -> str | None:
    """The target of ``name`` in ``folder`` if it is a symlink (None otherwise, or if it vanished)."""
    try:
        if not stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            return None
        return os.readlink(name, dir_fd=folder)
    except OSError:
        return None


def _secrets(root: str) -> set[tuple[int, int]]:
    """(device, inode) of the files in ``root/services``: a hard link to one of them elsewhere
    under file_root is the same file, and is refused by the check on the open descriptor."""
    try:
        with os.scandir(os.path.join(root, "services")) as entries:
            found = set()
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    found.add((info.st_dev, info.st_ino))
            return found
    except OSError:
        return set()


def open_file(file_root: Path | str, *segments: str) -> BinaryIO:
    """``file_root/segments...`` opened for reading: a regular file inside file_root, reached
    without following any symlink that leaves it, and not one of the services' files.

    A segment may hold several components separated by "/" (as an artifact name does); each is
    validated. Raises :class:`UnsafePath`, or ``FileNotFoundError`` when there is no such file.
    """
    root = _root(file_root)
    parts = [part for segment in segments for part in _split_name(segment, "path")]
    return _open_regular(root, parts, _secrets(root))


def _open_regular(root: str, parts: list[str], secrets: set[tuple[int, int]]) -> BinaryIO:
    """:func:`open_file` below an already resolved root, with the services' files known (a
    listing opens many files against one of each)."""
    fd = _open_under(root, parts)
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) in secrets:
        os.close(fd)
        raise UnsafePath("path: the services' files are not served")
    return os.fdopen(fd, "rb")


def open_artifact(file_root: Path | str, experiment_id: str, run_id: str, name: str) -> BinaryIO:
    """The artifact ``name`` of a run, opened."""
    return open_file(file_root, _check_experiment(experiment_id), "artifacts", _check_id(run_id, "run_id"), name)


def open_data(file_root: Path | str, experiment_id: str, run_id: str, name: str) -> BinaryIO:
    """Captured data of a run, by its listed file name ("x.npy"), or by the captured name ("x")
    when no file of that exact name exists (then ``x.npy``, then ``x.json``)."""
    base = [_check_experiment(experiment_id), "data", _check_id(run_id, "run_id")]
    parts = _split_name(name, "name")
    for candidate in (parts[-1], f"{parts[-1]}.npy", f"{parts[-1]}.json"):
        try:
            return open_file(file_root, *base, *parts[:-1], candidate)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("data not found")


def open_log(file_root: Path | str, experiment_id: str, run_id: str) -> BinaryIO:
    """The run's log, opened."""
    try:
        return open_file(file_root, _check_experiment(experiment_id), "logs", f"{_check_id(run_id, 'run_id')}.log")
    except FileNotFoundError:
        raise FileNotFoundError("log not found") from None


def open_records(file_root: Path | str, experiment_id: str) -> Iterator[BinaryIO]:
    """Every record file (``runs/*.jsonl``) of an experiment, opened one after another, by name
    (the caller closes each before taking the next)."""
    root = _root(file_root)
    base = [_check_experiment(experiment_id), "runs"]
    try:
        folder = _open_under(root, base, directory=True)
    except FileNotFoundError:
        return
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".jsonl"))
    finally:
        os.close(folder)
    secrets = _secrets(root)
    for name in names:
        try:
            handle = _open_regular(root, [*base, *_split_name(name, "path")], secrets)
        except (FileNotFoundError, UnsafePath):
            continue  # gone, or a symlink out: not this experiment's record
        yield handle


# --------------------------------------------------------------------------- listings


def _list_files(file_root: Path | str, experiment_id: str, folder: str, run_id: str) -> list[dict[str, Any]]:
    """{"name", "size", "kind"} of every regular file under the run's folder, sorted by name.

    Real subfolders are descended; symlinks are listed only if they resolve to a regular file
    inside file_root (symlinked folders are not descended: no cycles, no surprises). Every file
    is measured and sniffed from its own descriptor, opened as ``open_file`` opens it.
    """
    root = _root(file_root)
    base_parts = [_check_experiment(experiment_id), folder, _check_id(run_id, "run_id")]
    try:
        base = _open_under(root, base_parts, directory=True)  # UnsafePath if the run's folder itself escapes
    except FileNotFoundError:
        return []
    names: list[str] = []
    folders: list[tuple[str, int]] = [("", base)]
    while folders:
        relative, fd = folders.pop()
        try:
            entries = list(os.scandir(fd))
        except OSError:
            entries = []  # vanished or unreadable while we looked
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            try:
                _split_name(name, "name")  # a name that could never be requested is not listed
                if entry.is_dir(follow_symlinks=False):
                    folders.append((name, os.open(entry.name, _OPEN | os.O_DIRECTORY, dir_fd=fd)))
                    continue
            except (UnsafePath, OSError):
                continue
            names.append(name)
        os.close(fd)
    found = []
    secrets = _secrets(root)
    for name in sorted(names):
        try:
            with _open_regular(root, [*base_parts, *_split_name(name, "name")], secrets) as handle:
                size = os.fstat(handle.fileno()).st_size
                found.append({"name": name, "size": size, "kind": preview_kind(name, handle.read(SNIFF_BYTES))})
        except (UnsafePath, OSError):
            continue  # deleted, replaced or leading out since it was listed
    return found


def list_artifacts(file_root: Path | str, experiment_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every artifact of a run as {"name", "size", "kind"}, sorted by name; [] when there are none."""
    return _list_files(file_root, experiment_id, "artifacts", run_id)


def list_data(file_root: Path | str, experiment_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every captured data file of a run as {"name", "size", "kind"}; kind "array" for .npy.

    Today only arrays are files (JSON-able values live in the run record); any other file
    found there is listed with the kind its content suggests.
    """
    entries = _list_files(file_root, experiment_id, "data", run_id)
    return [{**entry, "kind": "array"} if entry["name"].lower().endswith(".npy") else entry for entry in entries]


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


def read_preview(handle: BinaryIO, name: str, limit: int = 64 * 1024) -> dict[str, Any]:
    """{"kind", "size", "text", "truncated"} for showing an opened file (called ``name``) in the page.

    "text" holds at most ``limit`` bytes of the file decoded (errors replaced) for text and
    JSON, None for images and binaries. JSON is pretty-printed when the whole file fits in
    ``limit``; "truncated" says the text shown is not all of it.
    """
    size = os.fstat(handle.fileno()).st_size
    data = handle.read(limit + 1)  # one more byte tells whether there is more
    truncated = len(data) > limit
    data = data[:limit]
    kind = preview_kind(PurePosixPath(name).name, data)
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


def tail(handle: BinaryIO, lines: int = 200, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """The last ``lines`` lines of an opened (possibly growing) log, reading at most ``max_bytes`` from its end.

    Returns {"lines", "size", "truncated"}; "truncated" says earlier lines exist. A last line
    still being written (no newline yet) is included. Lines are split on "\\n" only, so a
    progress bar's "\\r" updates stay on one line.
    """
    if lines < 0 or max_bytes <= 0:
        raise ValueError("lines must be >= 0 and max_bytes > 0")
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
