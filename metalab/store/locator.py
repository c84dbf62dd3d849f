"""PostgreSQL store locators: ``postgresql://user[:password]@host[:port]/db?file_root=DIR``.

Pure parsing and masking, plus where the password comes from; the password is held as a
:class:`~metalab.secret.Secret` and never appears in a message or a printable form.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import ConfigError
from ..secret import Secret

__all__ = [
    "SCHEMES",
    "PostgresLocator",
    "locator_at",
    "mask_postgres_locator",
    "parse_locator",
    "read_password_file",
    "resolve_password",
    "without_password",
]

log = logging.getLogger("metalab.store")

SCHEMES = ("postgresql://", "postgres://")
SERVICES_PASSWORD_FILE = Path("services") / "postgres.password"  # under file_root; `services up` writes it
_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})  # masked wherever the locator is shown


@dataclass(frozen=True)
class PostgresLocator:
    """What a ``postgresql://`` locator says, password apart from everything printable."""

    file_root: Path
    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    password: Secret | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)  # other query parameters: libpq's
    display: str = ""  # the locator with any password as ***

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg.connect() keywords, without the password."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname}
        kwargs = {key: value for key, value in kwargs.items() if value not in (None, "")}
        kwargs.update(self.options)
        kwargs.setdefault("application_name", "metalab")
        kwargs.setdefault("connect_timeout", 10)
        return kwargs


def _split(locator: str) -> tuple[str, str, str, str]:
    """``(scheme, userinfo, hostpath, query)``; userinfo ends at the last ``@`` before the query."""
    scheme, _, rest = locator.partition("://")
    head, _, query = rest.partition("?")
    userinfo, at, hostpath = head.rpartition("@")
    return scheme, userinfo if at else "", hostpath, query


def _query(query: str) -> list[tuple[str, str]]:
    """``a=b&c=d`` percent-decoded; ``+`` stays a plus (paths may hold one)."""
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def mask_postgres_locator(locator: str) -> str:
    """The locator with the userinfo password and any ``password=`` parameter shown as ``***``."""
    scheme, userinfo, hostpath, query = _split(locator)
    masked = f"{scheme}://"
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        masked += f"{user}:***@" if colon else f"{userinfo}@"
    masked += hostpath
    if query:
        parts = []
        for part in query.split("&"):
            key, eq, _ = part.partition("=")
            parts.append(f"{key}=***" if eq and unquote(key).lower() in _SECRET_QUERY_KEYS else part)
        masked += "?" + "&".join(parts)
    return masked


def without_password(locator: str) -> str:
    """The locator with no password at all (userinfo or ``password=``): what a file that must
    hold no secret may record; the reader finds the password as :func:`resolve_password` says."""
    scheme, userinfo, hostpath, query = _split(locator)
    text = f"{scheme}://"
    if userinfo:
        text += userinfo.partition(":")[0] + "@"
    text += hostpath
    kept = [part for part in query.split("&") if part and unquote(part.partition("=")[0]).lower() not in _SECRET_QUERY_KEYS]
    return text + ("?" + "&".join(kept) if kept else "")


def locator_at(locator: str, host: str, port: int) -> str:
    """``locator`` naming another server (``host:port``): user, database and query kept."""
    scheme, userinfo, hostpath, query = _split(locator)
    path = hostpath.partition("/")[2]
    return f"{scheme}://" + (f"{userinfo}@" if userinfo else "") + f"{host}:{port}/{path}" + (f"?{query}" if query else "")


def parse_locator(locator: str, *, cwd: Path | None = None) -> PostgresLocator:
    """Parse ``postgresql://user[:password]@host[:port]/db?file_root=DIR`` (also ``postgres://``).

    Errors are one line and never repeat the locator (it may hold a password).
    """
    if not locator.startswith(SCHEMES):
        raise ConfigError("a PostgreSQL store locator must start with postgresql:// or postgres://")
    _, userinfo, hostpath, query = _split(locator)
    user = password = None
    if userinfo:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        password = unquote(raw_password) if colon else None
    hostport, _, path = hostpath.partition("/")
    host, port = _host_port(hostport)
    dbname = unquote(path) or None
    options: dict[str, str] = {}
    file_root = None
    for key, value in _query(query):  # libpq's URI rules: query parameters win over the parts
        if key == "file_root":
            file_root = value
        elif key == "password":
            password = value
        elif key == "port":
            port = _port(value)
        elif key == "user":
            user = value or None
        elif key == "dbname":
            dbname = value or None
        elif key == "host":
            host = value or None
        else:
            options[key] = value
    if not file_root:
        raise ConfigError(
            "the PostgreSQL store locator needs ?file_root=DIR: the run records live in files there "
            "and PostgreSQL only indexes them"
        )
    root = Path(file_root).expanduser()
    if not root.is_absolute():
        root = (cwd or Path.cwd()) / root
    return PostgresLocator(
        file_root=root, host=host, port=port, user=user, dbname=dbname,
        password=Secret(password) if password else None, options=options,
        display=mask_postgres_locator(locator),
    )


def _host_port(hostport: str) -> tuple[str | None, int | None]:
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]")
        if end < 0:
            raise ConfigError("the PostgreSQL store locator has an unclosed [ in its host")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError("the PostgreSQL store locator has text after its [host]")
        return host or None, _port(rest[1:]) if rest else None
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return unquote(hostport) or None, None
    return unquote(host) or None, _port(port)


def _port(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError("the PostgreSQL store locator's port must be a number from 1 to 65535")
    return int(text)


def read_password_file(path: Path) -> Secret | None:
    """The first line of ``path`` (meant to be mode 0600); a looser mode is warned about."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"password file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read password file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("password file %s is readable by others (mode %o); chmod 600 it", path, stat.S_IMODE(mode))
    first = text.splitlines()[0].strip() if text.strip() else ""
    return Secret(first) if first else None


def resolve_password(target: PostgresLocator, password_file: Path | None) -> Secret | None:
    """The locator's password, else ``password_file``'s, else ``{file_root}/services/postgres.password``
    when it exists, else None (libpq's PGPASSWORD and ~/.pgpass then apply)."""
    if target.password:
        return target.password
    if password_file is not None:
        return read_password_file(Path(password_file).expanduser())
    services = target.file_root / SERVICES_PASSWORD_FILE
    if services.is_file():
        return read_password_file(services)
    return None
