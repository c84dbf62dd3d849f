"""check_login against a real PostgreSQL (started by conftest's pg_server, not by metalab)."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from conftest import all_text
from metalab.errors import PgWireError
from metalab.services import pgwire
from metalab.services.pgwire import (
    check_login,
    scram_keys,
    scram_salted_password,
)

if TYPE_CHECKING:
    from conftest import PgServer

pytestmark = pytest.mark.integration


def login(server: PgServer, **overrides: Any) -> None:
    kwargs: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }
    check_login(**{**kwargs, **overrides})


def closed_port() -> int:
    """A loopback port nobody listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_correct_password_logs_in_over_tcp_with_scram(pg_server: PgServer) -> None:
    login(pg_server)


def test_wrong_password_is_refused_with_the_servers_reason(pg_server: PgServer) -> None:
    with pytest.raises(PgWireError, match="password authentication failed") as info:
        login(pg_server, password="not-" + pg_server.password)
    assert "28P01" in str(info.value)


def test_no_password_when_the_server_asks_for_one(pg_server: PgServer) -> None:
    with pytest.raises(PgWireError, match="asks for a password"):
        login(pg_server, password=None)


def test_unknown_database_is_refused(pg_server: PgServer) -> None:
    with pytest.raises(PgWireError, match='database "no_such_db" does not exist'):
        login(pg_server, database="no_such_db")


def test_closed_port_fails_fast_with_connection_refused() -> None:
    start = time.monotonic()
    with pytest.raises(PgWireError, match=r"(?i)connection refused"):
        check_login(host="127.0.0.1", port=closed_port(), user="x", password="y", database="z")
    assert time.monotonic() - start < 1.0


def test_superuser_over_the_unix_socket_is_trusted(pg_server: PgServer) -> None:
    check_login(
        host=pg_server.socket_dir, port=pg_server.port, user=pg_server.superuser, password=None, database="postgres"
    )


def test_missing_unix_socket_is_reported(pg_server: PgServer) -> None:
    with pytest.raises(PgWireError, match=r"cannot connect to .*/\.s\.PGSQL\.1:"):
        check_login(host=pg_server.socket_dir, port=1, user="postgres", password=None, database="postgres")


@pytest.mark.parametrize(
    "case",
    ["wrong password", "unknown database", "closed port", "timeout"],
)
def test_the_password_never_appears_in_the_error(pg_server: PgServer, case: str, silent_port: int) -> None:
    secret = pg_server.password
    cases: dict[str, dict[str, Any]] = {
        "wrong password": {"password": secret + "-typo"},
        "unknown database": {"database": "no_such_db"},
        "closed port": {"port": closed_port()},
        "timeout": {"port": silent_port, "timeout": 0.2},
    }
    overrides = cases[case]
    with pytest.raises(PgWireError) as info:
        login(pg_server, **overrides)
    assert secret not in all_text(info.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads
        yield listener.getsockname()[1]


def test_a_silent_server_times_out_on_time(silent_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(PgWireError, match=r"timed out after 0\.3s"):
        check_login(host="127.0.0.1", port=silent_port, user="x", password="y", database="z", timeout=0.3)
    assert time.monotonic() - start < 1.5


def test_a_peer_that_is_not_postgres_is_a_protocol_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_like_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_like_http, daemon=True)
        thread.start()
        with pytest.raises(PgWireError, match="bad protocol"):
            check_login(host="127.0.0.1", port=listener.getsockname()[1], user="x", password="y", database="z")
        thread.join(5)


# --- other password methods and SASLprep: extra roles with their own pg_hba lines ----------


EXTRA_PASSWORD = {
    # SASLprep maps the soft hyphen to nothing: the server stores the key of "password".
    "pgwire_sasl": "pass\u00adword",
    "pgwire_md5": "md5-secret-9",
    "pgwire_clear": "clear-secret-7",
    # SASLprep rejects U+0007, so PostgreSQL hashes this password unchanged (soft hyphen kept).
    "pgwire_raw": "pass\u00adword\u0007",
}


@pytest.fixture(scope="module")
def extra_roles(pg_server: PgServer) -> Iterator[None]:
    """Roles for the MD5 and cleartext methods (pg_hba lines of their own) and a non-ASCII password."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_server.dsn(superuser=True), autocommit=True, client_encoding="UTF8") as conn:
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba_file = row[0]
        with open(hba_file, encoding="utf-8") as f:
            original = f.read()
        for role, password in EXTRA_PASSWORD.items():
            # An MD5 method needs an MD5-stored password; otherwise PostgreSQL upgrades to SCRAM.
            encryption = "md5" if role == "pgwire_md5" else "scram-sha-256"
            conn.execute(sql.SQL("SET password_encryption = {}").format(sql.Literal(encryption)))
            create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
            conn.execute(create.format(sql.Identifier(role), sql.Literal(password)))
        with open(hba_file, "w", encoding="utf-8") as f:  # first match wins: put ours first
            f.write("host all pgwire_md5 127.0.0.1/32 md5\nhost all pgwire_clear 127.0.0.1/32 password\n" + original)
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the postmaster reloads pg_hba.conf on SIGHUP, asynchronously
        try:
            yield
        finally:
            with open(hba_file, "w", encoding="utf-8") as f:
                f.write(original)
            conn.execute("SELECT pg_reload_conf()")
            for role in EXTRA_PASSWORD:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which password method check_login used."""
    calls: list[str] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(pgwire, "scram_client_final", spy("scram", pgwire.scram_client_final))
    monkeypatch.setattr(pgwire, "_md5_password", spy("md5", pgwire._md5_password))
    return calls


@pytest.mark.usefixtures("extra_roles")
@pytest.mark.parametrize(
    ("role", "method"),
    [("pgwire_sasl", ["scram"]), ("pgwire_raw", ["scram"]), ("pgwire_md5", ["md5"]), ("pgwire_clear", [])],
)
def test_each_password_method_logs_in(pg_server: PgServer, spies: list[str], role: str, method: list[str]) -> None:
    login(pg_server, user=role, password=EXTRA_PASSWORD[role], database="postgres")
    assert spies == method


@pytest.mark.usefixtures("extra_roles")
def test_md5_with_a_wrong_password_is_refused(pg_server: PgServer) -> None:
    with pytest.raises(PgWireError, match="password authentication failed"):
        login(pg_server, user="pgwire_md5", password="wrong", database="postgres")


@pytest.mark.usefixtures("extra_roles")
@pytest.mark.parametrize("role", ["pgwire_sasl", "pgwire_raw", pytest.param("metalab_app", id="app role")])
def test_scram_keys_match_what_the_server_stores(pg_server: PgServer, role: str) -> None:
    import psycopg

    password = EXTRA_PASSWORD.get(role, pg_server.password)
    with psycopg.connect(pg_server.dsn(superuser=True)) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
    assert row is not None
    # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    method, params, keys = row[0].split("$")
    iterations, salt = params.split(":")
    salted = scram_salted_password(password, base64.b64decode(salt), int(iterations))
    assert method == "SCRAM-SHA-256"
    assert [base64.b64encode(k).decode() for k in scram_keys(salted)] == keys.split(":")


@pytest.mark.usefixtures("extra_roles")
def test_scram_applies_saslprep_like_the_server(pg_server: PgServer) -> None:
    # The server stored SASLprep("pass<soft hyphen>word") == "password"; so both spellings work.
    login(pg_server, user="pgwire_sasl", password="password", database="postgres")
    with pytest.raises(PgWireError, match="password authentication failed"):
        login(pg_server, user="pgwire_sasl", password="pass-word", database="postgres")
    with pytest.raises(PgWireError, match="password authentication failed"):
        login(pg_server, user="pgwire_raw", password="password\u0007", database="postgres")


# --- a fake server that cheats at SCRAM: the client must notice ---------------------------------


def _recv(conn: socket.socket, typed: bool = True) -> bytes:
    header = conn.recv(5 if typed else 4, socket.MSG_WAITALL)
    length = int.from_bytes(header[-4:], "big")
    return conn.recv(length - 4, socket.MSG_WAITALL) if length > 4 else b""


def _auth(conn: socket.socket, code: int, data: bytes = b"") -> None:
    conn.sendall(b"R" + (8 + len(data)).to_bytes(4, "big") + code.to_bytes(4, "big") + data)


@contextlib.contextmanager
def _cheating_scram_server(final_step: Callable[[socket.socket], None]) -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                _recv(conn, typed=False)  # StartupMessage
                _auth(conn, 10, b"SCRAM-SHA-256\0\0")
                client_first = _recv(conn).split(b"\0", 1)[1][4:].decode()
                nonce = client_first.split("r=", 1)[1]
                salt = base64.b64encode(b"0123456789abcdef").decode()
                _auth(conn, 11, f"r={nonce}server-part,s={salt},i=4096".encode())
                _recv(conn)  # client-final, with a proof we do not even check
                final_step(conn)
                conn.recv(1024)  # wait for the client to hang up

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(5)


def _forge_signature(conn: socket.socket) -> None:
    _auth(conn, 12, b"v=" + base64.b64encode(bytes(32)))
    _auth(conn, 0)


def _skip_signature(conn: socket.socket) -> None:
    _auth(conn, 0)


@pytest.mark.parametrize(
    ("final_step", "error"),
    [(_forge_signature, "wrong server signature"), (_skip_signature, "server skipped its signature")],
    ids=["forged signature", "no signature"],
)
def test_a_server_that_cannot_prove_it_knows_the_password_is_refused(
    final_step: Callable[[socket.socket], None], error: str
) -> None:
    with _cheating_scram_server(final_step) as port, pytest.raises(PgWireError, match=error):
        check_login(host="127.0.0.1", port=port, user="u", password="secret", database="d")
