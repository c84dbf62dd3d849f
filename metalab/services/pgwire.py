"""A tiny PostgreSQL wire-protocol client for health checks: log in, run ``SELECT 1``, leave.

Standard library only, so that the warm health check does not pay psycopg's import cost
(100+ ms). It speaks protocol 3.0 without SSL (metalab's servers are reached over loopback or
a tunnel) and authenticates with trust, cleartext, MD5 or SCRAM-SHA-256 (RFC 5802/7677 the
way PostgreSQL does it: no channel binding, and the user name comes from the startup message).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import stringprep
import struct
import time
import unicodedata

from ..errors import PgWireError
from ..net import connect_tcp

__all__ = [
    "check_login",
    "scram_client_final",
    "scram_client_first_bare",
    "scram_keys",
    "scram_salted_password",
]

_PROTOCOL_3_0 = 3 << 16
# A health check never needs a big message; the cap stops a non-PostgreSQL peer (an HTTP
# server, say) from making us wait for gigabytes.
_MAX_MESSAGE = 1 << 20
# Messages the server may send at any time and that a health check can ignore:
# ParameterStatus, BackendKeyData, NoticeResponse, NotificationResponse.
_IGNORED = frozenset((b"S", b"K", b"N", b"A"))

# Authentication request codes: the Int32 that starts an 'R' message.
_AUTH_OK = 0
_AUTH_CLEARTEXT = 3
_AUTH_MD5 = 5
_AUTH_SASL = 10
_AUTH_SASL_CONTINUE = 11
_AUTH_SASL_FINAL = 12

_SCRAM = "SCRAM-SHA-256"
_GS2_HEADER = "n,,"  # "n": the client does not support channel binding (we never use TLS)


def check_login(
    *,
    host: str,
    port: int,
    user: str,
    password: str | None,
    database: str,
    timeout: float = 2.0,
) -> None:
    """Log in to PostgreSQL, run ``SELECT 1`` and check that it returns 1.

    Args:
        host: A host name or address for TCP, or a directory (starting with ``/``) that holds
            the server's unix socket ``.s.PGSQL.{port}``.
        port: The server's port (also names the unix socket).
        user: The role to log in as.
        password: Its password, or None when the server is expected to trust the connection.
        database: The database to connect to.
        timeout: Seconds for the whole exchange, from connect to the query's result.

    Raises:
        PgWireError: With a short message that never contains the password: the connection
            failed or timed out, the server refused the login (its message is included), or
            the peer did not speak the protocol as expected.
    """
    for name, value in (("user", user), ("database", database), ("password", password or "")):
        _check_text(name, value)
    if not user or not database:
        raise PgWireError("a user and a database are required")
    conn = _Conn.open(host, port, timeout)
    try:
        conn.send(b"", _startup_payload(user, database))
        _authenticate(conn, user, password)
        _wait_ready(conn)
        _select_one(conn)
        conn.send(b"X", b"")  # Terminate: a polite goodbye, so the server logs no EOF
    except (struct.error, UnicodeDecodeError) as exc:
        raise PgWireError(f"bad protocol: malformed message from server ({exc})") from None
    except PgWireError as exc:
        # PostgreSQL never echoes a password, but a health-check message may end up in logs:
        # make sure, whatever the server said.
        if password and password in str(exc):
            raise PgWireError(str(exc).replace(password, "***")) from None
        raise
    finally:
        conn.close()


def scram_client_first_bare(nonce: str, user: str = "") -> str:
    """Return SCRAM's client-first-message-bare (``n=user,r=nonce``).

    PostgreSQL ignores the SCRAM user name (it uses the startup message's), so libpq and
    this module send an empty one; ``user`` exists for RFC test vectors.
    """
    return f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"


def scram_client_final(*, password: str, client_first_bare: str, server_first: str) -> tuple[str, bytes]:
    """Compute SCRAM-SHA-256's client-final-message and the server signature to expect.

    Pure: no I/O. The password goes through SASLprep as PostgreSQL does.

    Args:
        password: The clear-text password.
        client_first_bare: What :func:`scram_client_first_bare` returned (it carries our nonce).
        server_first: The server-first-message (``r=…,s=…,i=…``).

    Returns:
        ``(client_final_message, server_signature)``: send the first; the server-final
        message's ``v=`` must decode to the second.

    Raises:
        PgWireError: The server-first message is malformed or its nonce does not extend ours.
    """
    ours = _scram_attrs(client_first_bare).get("r", "")
    attrs = _scram_attrs(server_first)
    if "m" in attrs:
        raise PgWireError("SCRAM: server requires an unsupported extension")
    nonce = attrs.get("r", "")
    # The server must extend our nonce: otherwise it could replay an old exchange.
    if not ours or not nonce.startswith(ours) or len(nonce) == len(ours):
        raise PgWireError("SCRAM: server nonce does not extend the client nonce")
    try:
        salt = base64.b64decode(attrs["s"], validate=True)
        iterations = int(attrs["i"])
    except (KeyError, ValueError):
        raise PgWireError("SCRAM: malformed server-first message") from None
    if iterations < 1:
        raise PgWireError("SCRAM: bad iteration count")

    salted = scram_salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    stored_key, server_key = scram_keys(salted)
    without_proof = f"c={_b64(_GS2_HEADER.encode())},r={nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    # The proof shows we know ClientKey; the server can check it with StoredKey alone.
    proof = bytes(a ^ b for a, b in zip(client_key, _hmac(stored_key, auth_message), strict=True))
    return f"{without_proof},p={_b64(proof)}", _hmac(server_key, auth_message)


def scram_salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """SCRAM's SaltedPassword: PBKDF2-HMAC-SHA-256 of the SASLprep'd password, as PostgreSQL does."""
    return hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)


def scram_keys(salted_password: bytes) -> tuple[bytes, bytes]:
    """Return ``(StoredKey, ServerKey)``: what PostgreSQL keeps of a SCRAM-SHA-256 password."""
    stored_key = hashlib.sha256(_hmac(salted_password, b"Client Key")).digest()
    return stored_key, _hmac(salted_password, b"Server Key")


# --- the connection ------------------------------------------------------------------------


class _Conn:
    """A socket with one deadline for the whole exchange, read and written a message at a time."""

    def __init__(self, sock: socket.socket, where: str, deadline: float, timeout: float) -> None:
        self._sock = sock
        self._where = where
        self._deadline = deadline
        self._timeout = timeout
        self._buf = bytearray()

    @classmethod
    def open(cls, host: str, port: int, timeout: float) -> _Conn:
        deadline = time.monotonic() + timeout
        unix = host.startswith("/")
        where = f"{host}/.s.PGSQL.{port}" if unix else f"{host}:{port}"
        try:
            if unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(where)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = connect_tcp(host, port, timeout)
                # Every message is small and waits for a reply: do not let Nagle hold it back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise PgWireError(f"cannot connect to {where}: {_reason(exc)}") from None
        return cls(sock, where, deadline, timeout)

    def close(self) -> None:
        self._sock.close()

    def send(self, kind: bytes, payload: bytes) -> None:
        """Send one message: type byte (none for the startup message), Int32 length, payload."""
        self._arm()
        try:
            self._sock.sendall(kind + struct.pack("!i", len(payload) + 4) + payload)
        except OSError as exc:
            raise self._broken(exc) from None

    def receive(self, phase: str) -> tuple[bytes, bytes]:
        """Return the next interesting message as (type, payload); raise on an ErrorResponse."""
        while True:
            kind, length = struct.unpack("!ci", self._read(5))
            if not 4 <= length <= _MAX_MESSAGE:
                raise PgWireError(f"bad protocol: is {self._where} a PostgreSQL server?")
            payload = self._read(length - 4)
            if kind == b"E":
                raise PgWireError(_server_error(phase, payload))
            if kind not in _IGNORED:
                return kind, payload

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._arm()
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise self._broken(exc) from None
            if not chunk:
                raise PgWireError(f"{self._where} closed the connection")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _arm(self) -> None:
        """Give the next socket call only what is left of the overall timeout."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._broken(TimeoutError())
        self._sock.settimeout(left)

    def _broken(self, exc: OSError) -> PgWireError:
        if isinstance(exc, TimeoutError):
            return PgWireError(f"timed out after {self._timeout:g}s talking to {self._where}")
        return PgWireError(f"lost connection to {self._where}: {_reason(exc)}")


# --- the exchange ------------------------------------------------------------------------------


def _startup_payload(user: str, database: str) -> bytes:
    params = {
        "user": user,
        "database": database,
        "application_name": "metalab-healthcheck",  # so it is recognisable in pg_stat_activity
        "client_encoding": "UTF8",  # so error messages decode as UTF-8
    }
    body = b"".join(_cstr(k) + _cstr(v) for k, v in params.items())
    return struct.pack("!i", _PROTOCOL_3_0) + body + b"\0"


def _authenticate(conn: _Conn, user: str, password: str | None) -> None:
    """Answer the server's authentication requests until AuthenticationOk."""
    first_bare: str | None = None  # set once SCRAM has started
    server_signature: bytes | None = None  # set once we sent our proof
    verified = False
    while True:
        kind, body = conn.receive("authentication")
        if kind != b"R":
            raise PgWireError(f"bad protocol: unexpected message {kind!r} during authentication")
        (code,) = struct.unpack_from("!i", body)
        data = body[4:]
        if code == _AUTH_OK:
            # Once SCRAM started, the server must prove it knows the password before we trust it.
            if first_bare is not None and not verified:
                raise PgWireError("SCRAM: server skipped its signature")
            return
        if first_bare is None and code == _AUTH_CLEARTEXT:
            conn.send(b"p", _cstr(_require(password)))
        elif first_bare is None and code == _AUTH_MD5:
            conn.send(b"p", _cstr(_md5_password(user, _require(password), data[:4])))
        elif first_bare is None and code == _AUTH_SASL:
            offered = [m.decode("utf-8") for m in data.split(b"\0") if m]
            if _SCRAM not in offered:
                raise PgWireError(f"server offers no supported SASL mechanism ({', '.join(offered)})")
            _require(password)
            # os.urandom, not secrets: the same randomness without importing `random` (2 ms).
            first_bare = scram_client_first_bare(_b64(os.urandom(18)))
            first = (_GS2_HEADER + first_bare).encode()
            conn.send(b"p", _cstr(_SCRAM) + struct.pack("!i", len(first)) + first)
        elif first_bare is not None and server_signature is None and code == _AUTH_SASL_CONTINUE:
            final, server_signature = scram_client_final(
                password=_require(password), client_first_bare=first_bare, server_first=data.decode()
            )
            conn.send(b"p", final.encode())
        elif server_signature is not None and not verified and code == _AUTH_SASL_FINAL:
            attrs = _scram_attrs(data.decode())
            if "e" in attrs:
                raise PgWireError(f"SCRAM: server error {attrs['e']}")
            try:
                theirs = base64.b64decode(attrs["v"], validate=True)
            except (KeyError, ValueError):
                raise PgWireError("SCRAM: malformed server-final message") from None
            if not hmac.compare_digest(theirs, server_signature):
                raise PgWireError("SCRAM: wrong server signature (not the server that holds the password?)")
            verified = True
        else:
            raise PgWireError(f"unsupported or unexpected authentication request (code {code})")


def _wait_ready(conn: _Conn) -> None:
    """After AuthenticationOk the backend starts; ReadyForQuery says it is up."""
    kind, _ = conn.receive("startup")
    if kind != b"Z":
        raise PgWireError(f"bad protocol: unexpected message {kind!r} during startup")


def _select_one(conn: _Conn) -> None:
    conn.send(b"Q", _cstr("SELECT 1"))
    rows: list[list[bytes | None]] = []
    while True:
        kind, body = conn.receive("query")
        if kind == b"D":
            rows.append(_data_row(body))
        elif kind == b"Z":
            break
        elif kind not in (b"T", b"C"):  # RowDescription and CommandComplete need no check
            raise PgWireError(f"bad protocol: unexpected message {kind!r} during query")
    if rows != [[b"1"]]:
        raise PgWireError(f"SELECT 1 returned {rows!r}")


def _data_row(body: bytes) -> list[bytes | None]:
    """DataRow: Int16 column count, then per column an Int32 length (-1 for NULL) and the bytes."""
    (count,) = struct.unpack_from("!h", body)
    row: list[bytes | None] = []
    at = 2
    for _ in range(count):
        (size,) = struct.unpack_from("!i", body, at)
        at += 4
        row.append(None if size < 0 else body[at : at + size])
        at += max(size, 0)
    return row


# --- small helpers -------------------------------------------------------------------------------


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or "\0" in value:
        raise PgWireError(f"invalid {name}")
    try:
        value.encode()
    except UnicodeEncodeError:  # its message would quote a character of the value
        raise PgWireError(f"{name} is not valid UTF-8 text") from None


def _require(password: str | None) -> str:
    if password is None:
        raise PgWireError("server asks for a password but none was given")
    return password


def _md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    return "md5" + hashlib.md5(inner.encode("ascii") + salt, usedforsecurity=False).hexdigest()


def _server_error(phase: str, payload: bytes) -> str:
    """Summarise an ErrorResponse: fields are a code byte + C string each, then a zero byte."""
    fields = {f[:1]: f[1:].decode("utf-8", "replace") for f in payload.split(b"\0") if f}
    message = fields.get(b"M", "no message")
    code = fields.get(b"C")
    return f"{phase} failed: {message}" + (f" (SQLSTATE {code})" if code else "")


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def _scram_attrs(message: str) -> dict[str, str]:
    attrs = {}
    for item in message.split(","):
        key, eq, value = item.partition("=")
        if not eq or len(key) != 1:
            raise PgWireError("SCRAM: malformed message")
        attrs[key] = value
    return attrs


def _saslprep(text: str) -> str:
    """SASLprep (RFC 4013) as PostgreSQL applies it to passwords.

    PostgreSQL uses the password unchanged when SASLprep rejects it, so do the same here:
    client and server must derive the same key.
    """
    if text.isascii():  # nothing to map, and ASCII normalises to itself
        return text
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch))
    out = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1, stringprep.in_table_c12, stringprep.in_table_c21_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if any(check(ch) for ch in out for check in prohibited):
        return text
    # Bidirectional rule (RFC 3454 §6): right-to-left text must not mix in left-to-right
    # characters and must start and end with a right-to-left character.
    if any(stringprep.in_table_d1(ch) for ch in out):
        if any(stringprep.in_table_d2(ch) for ch in out):
            return text
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            return text
    return out


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"
