from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

from metalab.procs import is_alive, process_start, stop_process
from metalab.secret import Secret
from metalab.services.postgres import PostgresLayout, PostgresPlan, quote_ident, quote_literal, scram_verifier


def plan(**overrides) -> PostgresPlan:
    values = dict(layout=PostgresLayout(services_dir=Path("/p/runs/services")), bin_dir=Path("/usr/lib/postgresql/15/bin"),
                  port=5433, user="metalab", database="metalab", auth_method="scram-sha-256", run_as="postgres")
    values.update(overrides)
    return PostgresPlan(**values)


def test_layout_keeps_everything_beside_the_bundle_and_the_socket_short():
    layout = PostgresLayout(services_dir=Path("/very/" + "deep/" * 40 + "services"))
    assert layout.data_dir == layout.services_dir / "postgres"
    assert layout.password_file == layout.services_dir / "postgres.password"
    assert len(str(layout.socket_dir / ".s.PGSQL.65535")) < 100


def test_server_listens_on_loopback_only_with_password_auth_over_tcp():
    p = plan()
    assert "listen_addresses = '127.0.0.1'" in p.conf_text()
    assert "port = 5433" in p.conf_text()
    hba = [line for line in p.hba_text().splitlines() if line and not line.startswith("#")]
    assert hba == ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256"]


def test_commands_say_who_runs_them_and_carry_no_password():
    p = plan()
    assert p.describe(p.server_command()) == "(as postgres) /usr/lib/postgresql/15/bin/postgres -D /p/runs/services/postgres"
    assert plan(run_as=None).describe(p.initdb_command(Path("/d"))).startswith("/usr/lib/postgresql/15/bin/initdb -D /d")
    assert "--auth-host=scram-sha-256" in p.initdb_command(Path("/d"))


def test_setup_sql_quotes_names_and_sends_only_a_verifier():
    p = plan(user='we"ird', database="o'db")
    sql = p.setup_sql(Secret("pa'ss"))
    assert '"we""ird"' in sql and "'o''db'" in sql
    assert "pa'ss" not in sql and "pa''ss" not in sql
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in sql


def test_quoting():
    assert quote_ident('a"b') == '"a""b"'
    assert quote_literal("it's") == "'it''s'"


def test_scram_verifier_matches_the_rfc_definition():
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt=salt, iterations=4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    assert verifier == f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}"
    assert scram_verifier("pencil") != scram_verifier("pencil")  # a fresh salt each time


def test_process_identity_survives_pid_reuse_checks():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process_start(child.pid)
        assert start is not None and is_alive(child.pid, start)
        assert not is_alive(child.pid, start + 1)  # same pid, different process
        assert stop_process(child.pid, start, kill_after=2.0)
        assert not is_alive(child.pid, start)
    finally:
        child.kill()
        child.wait()
    assert process_start(child.pid) is None
    assert not stop_process(child.pid, start)


def test_stop_escalates_to_sigkill_after_the_grace_period():
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        start = process_start(child.pid)
        assert stop_process(child.pid, start, kill_after=0.3)
        assert not is_alive(child.pid, start)
    finally:
        child.kill()
        child.wait()
