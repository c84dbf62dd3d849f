"""The service bundle: where it lives, how it is written, read, locked and discovered.

``metalab services up`` writes one JSON file describing the services it started; every other
tool (discover, Atlas, tunnel, status, down) reads only that file. It may hold credentials, so
it is always mode 0600, and it is replaced atomically so a reader never sees half a bundle.

This module sits on the CLI's fast path: it imports only the standard library at import time.
``metalab.config`` is imported inside :func:`find_bundle`, because it costs far more to
import than everything else here.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError, MetalabError, NotFoundError

__all__ = [
    "BUNDLE_NAME",
    "SCHEMA_VERSION",
    "SERVICES_DIR",
    "BundleCorrupt",
    "Discovered",
    "LockTimeout",
    "ServiceBundle",
    "bundle_path",
    "bundle_path_for",
    "discover",
    "find_bundle",
    "load",
    "lock",
    "move_aside",
    "new_bundle",
    "remove",
    "save",
    "workstation_bundle_path",
]

SCHEMA_VERSION = 1
SERVICES_DIR = "services"
BUNDLE_NAME = "bundle.json"

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class BundleCorrupt(MetalabError):
    """A bundle file exists but cannot be read as a valid bundle."""


# --------------------------------------------------------------------------- path rules


def bundle_path(*, file_root: Path | None, env_name: str, home: Path | None = None) -> Path:
    """Where the bundle of environment ``env_name`` lives.

    ``{file_root}/services/bundle.json`` when the profile has a file root (so jobs on compute
    nodes find it by walking up), else ``~/.metalab/services/{env_name}/bundle.json``.
    """
    if file_root is not None:
        return Path(file_root) / SERVICES_DIR / BUNDLE_NAME
    base = home if home is not None else Path.home()
    return base / ".metalab" / SERVICES_DIR / _dir_name(env_name, "environment name", "rename the profile") / BUNDLE_NAME


def workstation_bundle_path(*, project: str, env_name: str, home: Path | None = None) -> Path:
    """A workstation's own copy of the bundle of a cluster it reaches through a gateway:
    ``~/.metalab/clusters/{project}/{env_name}/bundle.json``. Keyed by project too, so two
    projects that both have a ``slurm`` profile never share (or replace) each other's."""
    base = home if home is not None else Path.home()
    project_dir = _dir_name(project, "project name", "set [project] name")
    return base / ".metalab" / "clusters" / project_dir / _dir_name(env_name, "environment name", "rename the profile") / BUNDLE_NAME


def bundle_path_for(resolved: Any, *, home: Path | None = None) -> Path:
    """The bundle of a resolved profile as this machine keeps it: the workstation's own copy when
    the cluster is behind a gateway, else the documented location."""
    if resolved.behind_gateway:
        return workstation_bundle_path(project=resolved.project_name, env_name=resolved.name, home=home)
    return bundle_path(file_root=resolved.file_root, env_name=resolved.name, home=home)


def _dir_name(name: str, what: str, fix: str) -> str:
    """``name`` as one directory level; anything that would escape its parent is refused."""
    if not name or name in (".", "..") or "/" in name or (os.altsep and os.altsep in name):
        raise ConfigError(f"{what} {name!r} cannot be used as a directory name; {fix}")
    return name


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True, kw_only=True)
class ServiceBundle:
    """What ``services up`` started, as written to ``bundle.json`` (schema version 1).

    Construction validates the shape, so a bundle object is always one that can be saved and
    read back. ``services`` and ``tunnel`` are deep-copied so later changes to the caller's
    dicts do not leak in. ``repr`` masks passwords and tokens.
    """

    schema_version: int
    project: str
    environment: str
    type: str
    created_at: str
    host: str
    services: dict[str, dict[str, Any]]
    store_locator: str | None
    tunnel: dict[str, Any] | None

    def __post_init__(self) -> None:
        problem = _problem(_as_dict(self))
        if problem:
            raise ValueError(f"invalid service bundle: {problem}")
        object.__setattr__(self, "services", copy.deepcopy(self.services))
        object.__setattr__(self, "tunnel", copy.deepcopy(self.tunnel))

    def __repr__(self) -> str:
        items = ", ".join(f"{name}={value!r}" for name, value in _mask(_as_dict(self)).items())
        return f"ServiceBundle({items})"

    def to_json(self, *, mask_secrets: bool = False) -> str:
        """Serialise: top-level keys in field order, nested keys sorted, indented, newline-terminated.

        Args:
            mask_secrets: replace passwords and tokens with ``***`` (for dry runs and logs).
        """
        data = _as_dict(self)
        if mask_secrets:
            data = _mask(data)
        # sort_keys would also reorder the top level; sort only below it for a stable diff.
        data = {key: _sorted(value) for key, value in data.items()}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> ServiceBundle:
        """Parse and validate ``text`` read from ``source``; :class:`BundleCorrupt` if it is not a bundle."""
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, and lone surrogates
            where = f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise BundleCorrupt(_corrupt(source, f"not valid JSON{where}")) from None
        if not isinstance(data, dict):
            raise BundleCorrupt(_corrupt(source, f"expected a JSON object, found {_json_type(data)}"))
        # Checked before the other fields: a future schema may have renamed them.
        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise BundleCorrupt(
                f"{source}: unsupported bundle schema_version {version!r} "
                f"(this metalab reads {SCHEMA_VERSION}); upgrade metalab, or {_up_hint()} again"
            )
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise BundleCorrupt(_corrupt(source, f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"))
        problem = _problem(data)
        if problem:
            raise BundleCorrupt(_corrupt(source, problem))
        # Unknown keys are ignored: a newer metalab may add optional ones within schema 1.
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def new_bundle(
    *,
    project: str,
    environment: str,
    type: str,
    services: Mapping[str, Mapping[str, Any]],
    store_locator: str | None,
    tunnel: Mapping[str, Any] | None = None,
    host: str | None = None,
    now: datetime | None = None,
) -> ServiceBundle:
    """A bundle stamped with the current UTC time and this machine's hostname.

    ``host`` and ``now`` exist for tests and replays; callers normally leave them out.
    """
    if host is None:
        import socket  # only `up` needs it

        host = socket.gethostname()
    moment = now if now is not None else datetime.now(timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("new_bundle(now=...) needs an aware datetime")
    return ServiceBundle(
        schema_version=SCHEMA_VERSION,
        project=project,
        environment=environment,
        type=type,
        created_at=moment.astimezone(timezone.utc).isoformat(timespec="seconds"),
        host=host,
        services={name: dict(entry) for name, entry in services.items()},
        store_locator=store_locator,
        tunnel=dict(tunnel) if tunnel is not None else None,
    )


# --------------------------------------------------------------------------- file operations


class LockTimeout(MetalabError):
    """Another ``up``/``down`` still holds the bundle's lock after the timeout."""


LOCK_PATIENCE = 1.0  # seconds of waiting on another holder before saying who it is


@contextmanager
def lock(path: Path, timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of the bundle at ``path`` for the duration of the block.

    ``up`` and ``down`` hold it throughout, so two of them never start or stop services at
    once. Re-entering it in the same thread (a task chain inside ``up``) does not deadlock;
    another thread or process waits. Yields the lock file's path. The kernel drops the lock
    (filelock's ``flock``) when its holder dies, so a crashed ``up`` never leaves it stuck.

    Args:
        path: the bundle path (the lock is ``bundle.json.lock`` beside it).
        timeout: seconds to wait; ``None`` waits for as long as it takes.
        on_wait: told, once a second has passed, who holds the lock (pid, command, since when).

    Raises:
        LockTimeout: the lock is still held by someone else after ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    lock_path = path.with_name(path.name + ".lock")
    holder_path = lock_path.with_name(lock_path.name + ".holder")
    _ensure_dir(lock_path.parent)
    # One instance per path (is_singleton), counting re-entries per thread (thread_local).
    file_lock = FileLock(lock_path, mode=_FILE_MODE, is_singleton=True, preserve_lock_file=True)
    outermost = not file_lock.is_locked
    patience = LOCK_PATIENCE if timeout is None else min(LOCK_PATIENCE, timeout)
    try:
        file_lock.acquire(timeout=patience)
    except Timeout:
        if on_wait is not None:
            on_wait(f"waiting for the bundle lock {lock_path}: {_holder(holder_path)}")
        try:
            file_lock.acquire(timeout=-1 if timeout is None else max(timeout - patience, 0.0))
        except Timeout:
            raise LockTimeout(f"{lock_path} is held by {_holder(holder_path)}; try again when it ends") from None
    try:
        if outermost:
            _write_private(holder_path, json.dumps(_me()))
        yield lock_path
    finally:
        if outermost:
            holder_path.unlink(missing_ok=True)
        file_lock.release()


def _me() -> dict[str, Any]:
    import sys

    return {"pid": os.getpid(), "command": " ".join(sys.argv) or sys.executable,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _holder(holder_path: Path) -> str:
    """Who holds the lock, as its holder wrote it: "pid 123 (metalab services up), since 10:02:03"."""
    try:
        data = json.loads(holder_path.read_text())
        since = datetime.fromisoformat(data["since"]).astimezone().strftime("%H:%M:%S")
        return f"pid {int(data['pid'])} ({data['command']}), since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another metalab command"


def save(path: Path, bundle: ServiceBundle) -> None:
    """Write ``bundle`` to ``path`` atomically, mode 0600 from the first byte.

    Readers see either the old file or the new one, never a mix, and a crash loses at most the
    new bundle. Callers that may race with another writer hold :func:`lock` around it.
    """
    _write_private(path, bundle.to_json())


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically (a temporary file renamed over it), mode 0600. A failed
    write (a full disk) leaves the old file, no temporary one, and an error naming ``path``."""
    data = text.encode("utf-8")
    directory = path.parent
    _ensure_dir(directory)
    # Same directory as the target, so os.replace is a rename within one filesystem.
    temp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temp, flags, _FILE_MODE)
    done = False
    try:
        # The umask can only remove bits from 0600; set it exactly in case it removed the owner's.
        os.fchmod(fd, _FILE_MODE)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
        done = True
        _fsync_dir(directory)
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None  # os.write names no file
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass


def load(path: Path) -> ServiceBundle | None:
    """Read the bundle at ``path``: ``None`` if there is none, :class:`BundleCorrupt` if it is unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleCorrupt(_corrupt(path, f"cannot be read ({exc.strerror or exc})")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleCorrupt(_corrupt(path, "not UTF-8 text")) from None
    return ServiceBundle.from_json(text, source=path)


def remove(path: Path) -> None:
    """Delete the bundle at ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    # Make the removal durable: a bundle resurrected by a crash would point at stopped services.
    _fsync_dir(path.parent)


def move_aside(path: Path) -> Path:
    """Rename a corrupt bundle to ``bundle.json.corrupt-<UTC timestamp>`` and return the new path.

    Kept rather than deleted: it may be the only record of a job or process still running.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():  # two in the same second: never overwrite an earlier one
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    os.rename(path, target)
    _fsync_dir(path.parent)
    return target


# --------------------------------------------------------------------------- discovery


def find_bundle(start: Path, environ: Mapping[str, str], *, home: Path | None = None) -> Path:
    """Path of the bundle that applies at ``start``; :class:`NotFoundError` if there is none.

    First ``services/bundle.json`` in ``start`` or a parent (this works inside ``file_root`` on
    compute nodes, with no config at hand), then the active environment's bundle path from
    ``.metalab.toml``. Other directories and projects are never scanned.
    """
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        candidate = directory / SERVICES_DIR / BUNDLE_NAME
        if candidate.is_file():
            return candidate
    walked = f"{SERVICES_DIR}/{BUNDLE_NAME} in {start} or any parent"

    from .config import locate_and_load, resolve_environment  # heavy (dacite, tomllib)

    try:
        loaded = locate_and_load(start, environ)
    except NotFoundError:
        raise NotFoundError(f"no running services found: no {walked}, and no .metalab.toml; {_up_hint()}") from None
    env = resolve_environment(loaded, flag=None, environ=environ)
    candidate = bundle_path_for(env, home=home)
    if candidate.is_file():
        return candidate
    raise NotFoundError(
        f"no running services found: no {walked}, nor {candidate} (environment {env.name!r}); "
        f"{_up_hint(env.name)}"
    )


class Discovered(NamedTuple):
    """The bundle ``store="discover"`` found, and where (a workstation's tunnel record lives beside it)."""

    path: Path
    bundle: ServiceBundle


def discover(start: Path, environ: Mapping[str, str], *, home: Path | None = None) -> Discovered:
    """The running services' bundle for ``store="discover"``; it must provide a store.

    Raises:
        NotFoundError: no bundle applies at ``start``, or its services provide no store.
        BundleCorrupt: the bundle found cannot be read.
        ConfigError: ``.metalab.toml`` (consulted only when walking up finds nothing) is invalid.
    """
    path = find_bundle(start, environ, home=home)
    bundle = load(path)
    if bundle is None:  # removed by a concurrent `down` between finding and reading it
        raise NotFoundError(f"no running services found: {path} was just removed; {_up_hint()}")
    if bundle.store_locator is None:
        raise NotFoundError(
            f"{path}: the running services provide no store; declare [services.postgres] in "
            f".metalab.toml and {_up_hint(bundle.environment)}"
        )
    return Discovered(path, bundle)


# --------------------------------------------------------------------------- helpers


def _as_dict(bundle: ServiceBundle) -> dict[str, Any]:
    # dataclasses.asdict would deep-copy twice; field order is the file's key order.
    return {f.name: getattr(bundle, f.name) for f in fields(bundle)}


def _problem(data: Mapping[str, Any]) -> str | None:
    """The first thing wrong with a bundle's fields, as a short phrase; ``None`` if valid."""
    version = data["schema_version"]
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        return f"schema_version must be {SCHEMA_VERSION}, not {version!r}"
    for name in ("project", "environment", "type", "created_at", "host"):
        if not isinstance(data[name], str) or not data[name]:
            return f"{name} must be a non-empty string"
    try:
        datetime.fromisoformat(data["created_at"])
    except ValueError:
        return f"created_at {data['created_at']!r} is not an ISO-8601 timestamp"
    if data["store_locator"] is not None and not isinstance(data["store_locator"], str):
        return "store_locator must be a string or null"
    problem = _services_problem(data["services"]) or _tunnel_problem(data["tunnel"])
    if problem:
        return problem
    try:
        json.dumps(data["services"]), json.dumps(data["tunnel"])
    except (TypeError, ValueError) as exc:
        return f"services and tunnel must hold only JSON values ({exc})"
    return None


def _services_problem(services: Any) -> str | None:
    if not isinstance(services, dict):
        return "services must be an object"
    for name, entry in services.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            return f"services.{name} must be an object"
        if not isinstance(entry.get("host"), str):
            return f"services.{name}.host must be a string"
        if not _is_port(entry.get("port")):
            return f"services.{name}.port must be a port number"
        if entry.get("pid") is None and entry.get("job_id") is None:
            return f"services.{name} needs a pid or a job_id"
    return None


def _tunnel_problem(tunnel: Any) -> str | None:
    if tunnel is None:
        return None
    if not isinstance(tunnel, dict):
        return "tunnel must be an object or null"
    if not isinstance(tunnel.get("gateway"), str) or not tunnel["gateway"]:
        return "tunnel.gateway must be a non-empty string"
    for key in ("user", "ssh_key"):
        if key not in tunnel or not (tunnel[key] is None or isinstance(tunnel[key], str)):
            return f"tunnel.{key} must be a string or null"
    forwards = tunnel.get("forwards")
    if not isinstance(forwards, list):
        return "tunnel.forwards must be a list"
    for index, forward in enumerate(forwards):
        where = f"tunnel.forwards[{index}]"
        if not isinstance(forward, dict):
            return f"{where} must be an object"
        if not (_is_port(forward.get("local_port")) and _is_port(forward.get("remote_port"))):
            return f"{where} needs local_port and remote_port port numbers"
        if not isinstance(forward.get("remote_host"), str) or not isinstance(forward.get("service"), str):
            return f"{where} needs remote_host and service strings"
    return None


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _up_hint(env_name: str | None = None) -> str:
    return f"run `metalab services up --env {env_name}`" if env_name else "run `metalab services up`"


def _corrupt(path: Path, why: str) -> str:
    return f"{path}: corrupt service bundle: {why}; move it aside, or {_up_hint()} again to replace it"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


# Keys whose values are credentials; "password_file" and the like name where one is kept, not it.
_SECRET_KEY = re.compile(r"^(?:.*_)?(?:password|passwd|secret|token)$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s/]*(@)")
_QUERY_SECRET = re.compile(r"((?:password|passwd|token|secret)=)[^&\s#]*", re.IGNORECASE)


def _mask(value: Any) -> Any:
    """A copy of ``value`` with passwords and tokens replaced by ``***``."""
    if isinstance(value, dict):
        return {
            key: "***" if isinstance(key, str) and _SECRET_KEY.search(key) and item is not None else _mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, str):
        return _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", value))
    return value


def _ensure_dir(directory: Path) -> None:
    """Create the bundle's directory, private to its owner, if it does not exist yet."""
    if directory.is_dir():
        return
    # Ancestors (file_root itself, ~/.metalab) keep default permissions: they are shared with runs.
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=_DIR_MODE)
    except FileExistsError:  # created concurrently by another `up`
        return
    os.chmod(directory, _DIR_MODE)  # mkdir's mode is filtered by the umask


def _fsync_dir(directory: Path) -> None:
    """Persist a rename or unlink in ``directory``; best effort where directories cannot be synced."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and all of Windows) refuse fsync on a directory
        pass
    finally:
        os.close(fd)
