"""SCRAM-SHA-256 math of metalab.services.pgwire, checked against RFC 7677's test vector."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from metalab.errors import PgWireError
from metalab.services.pgwire import (
    scram_client_final,
    scram_client_first_bare,
)

# RFC 7677, section 3.
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def final(password: str = "pencil", server_first: str = SERVER_FIRST) -> tuple[str, bytes]:
    first_bare = scram_client_first_bare(CLIENT_NONCE, user="user")
    return scram_client_final(password=password, client_first_bare=first_bare, server_first=server_first)


def test_client_first_bare_matches_the_rfc() -> None:
    assert scram_client_first_bare(CLIENT_NONCE, user="user") == "n=user,r=rOprNGfwEbeRWgbNEkqO"


def test_user_name_is_escaped_and_empty_by_default() -> None:
    assert scram_client_first_bare("N", user="a=b,c") == "n=a=3Db=2Cc,r=N"
    assert scram_client_first_bare("N") == "n=,r=N"  # PostgreSQL takes the user from the startup message


def test_client_final_message_matches_the_rfc() -> None:
    assert final()[0] == CLIENT_FINAL


def test_expected_server_signature_matches_the_rfc() -> None:
    assert final()[1] == base64.b64decode(SERVER_FINAL_SIGNATURE)


def test_another_password_gives_another_proof() -> None:
    assert final("pencils")[0] != CLIENT_FINAL


@pytest.mark.parametrize(
    ("spelled", "prepared"),
    [
        ("pen\u00adcil", "pencil"),  # soft hyphen: mapped to nothing
        ("\uff50\uff45\uff4e\uff43\uff49\uff4c", "pencil"),  # fullwidth letters: NFKC
        ("pen\u00a0cil", "pen cil"),  # no-break space: mapped to a space
    ],
)
def test_password_goes_through_saslprep(spelled: str, prepared: str) -> None:
    assert final(spelled) == final(prepared)


def test_a_password_saslprep_rejects_is_used_unchanged() -> None:
    # U+0007 is prohibited: PostgreSQL then hashes the raw password, and so must we.
    assert final("pen\u00adcil\u0007") != final("pencil\u0007")


@pytest.mark.parametrize(
    "server_first",
    [
        "r=someone-elses-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # does not extend ours
        f"r={CLIENT_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # adds nothing to ours
        f"r={CLIENT_NONCE}x,s=not base64!,i=4096",
        f"r={CLIENT_NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=zero",
        f"r={CLIENT_NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        f"r={CLIENT_NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        f"m=ext,r={CLIENT_NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "garbage",
    ],
)
def test_bad_server_first_messages_are_refused(server_first: str) -> None:
    with pytest.raises(PgWireError, match="SCRAM"):
        final(server_first=server_first)


def test_importing_pgwire_pulls_in_no_database_driver() -> None:
    code = "import sys, metalab.services.pgwire; print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
