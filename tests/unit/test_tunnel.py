"""The tunnel's pure parts: one distinct local port per forward, the record of a running tunnel."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalab.errors import UsageError
from metalab.procs import is_alive, process_start
from metalab.store.locator import locator_at
from metalab.tunnel import RECORD_NAME, TunnelRecord, choose_local_ports, forwarded_port

FORWARDS = [
    {"service": "postgres", "local_port": 8000, "remote_host": "10.0.0.7", "remote_port": 8000},
    {"service": "atlas", "local_port": 8000, "remote_host": "10.0.0.7", "remote_port": 41000},
]


def free_except(*taken: int):
    return lambda host, port: port not in taken


def test_a_pinned_port_wins_and_every_other_forward_gets_a_port_of_its_own():
    # PostgreSQL on the node listens on 8000, and Atlas is pinned to 8000 on this machine
    ports = choose_local_ports(FORWARDS, {"atlas": 8000}, is_free=free_except())
    assert ports == {"postgres": 8001, "atlas": 8000}
    assert list(ports) == ["postgres", "atlas"]  # in the plan's order, as ssh gets them


def test_planned_ports_taken_here_move_up_past_each_other():
    ports = choose_local_ports(FORWARDS, {}, is_free=free_except(8000, 8001))
    assert ports == {"postgres": 8002, "atlas": 8003}


def test_a_pinned_port_in_use_is_an_error_naming_the_setting():
    with pytest.raises(UsageError, match=r"local port 8000 for atlas is already in use.*\[services\.atlas\] port"):
        choose_local_ports(FORWARDS, {"atlas": 8000}, is_free=free_except(8000))


def test_locator_at_points_at_the_tunnels_end_or_the_node():
    locator = "postgresql://metalab@127.0.0.1:5432/metalab?file_root=/shared/x"
    assert locator_at(locator, "127.0.0.1", 15432) == "postgresql://metalab@127.0.0.1:15432/metalab?file_root=/shared/x"
    assert locator_at(locator, "10.0.0.7", 5432) == "postgresql://metalab@10.0.0.7:5432/metalab?file_root=/shared/x"


def test_a_record_counts_only_while_both_its_processes_live(tmp_path: Path):
    bundle = tmp_path / "bundle.json"
    # stand-ins for `metalab tunnel` and its ssh, named so on their command lines
    tunnel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "metalab", "tunnel"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ssh"])
    try:
        wait_exec = time.monotonic() + 5
        while time.monotonic() < wait_exec and not is_alive(child.pid, None, ("ssh",)):
            time.sleep(0.01)
        record = TunnelRecord(pid=tunnel.pid, start=process_start(tunnel.pid), ssh_pid=child.pid,
                              ssh_start=process_start(child.pid), ports={"postgres": 15432})
        (tmp_path / RECORD_NAME).write_text(record.to_json())
        assert TunnelRecord.read(tmp_path / RECORD_NAME) == record
        assert forwarded_port(bundle, "postgres", planned=None) == 15432
        wrong = record._replace(pid=child.pid, start=process_start(child.pid))  # a live process that is no tunnel
        (tmp_path / RECORD_NAME).write_text(wrong.to_json())
        assert forwarded_port(bundle, "postgres", planned=None) is None
        (tmp_path / RECORD_NAME).write_text(record.to_json())
    finally:
        child.kill()
        child.wait()
        tunnel.kill()
        tunnel.wait()
    assert forwarded_port(bundle, "postgres", planned=None) is None  # its ssh is gone
    (tmp_path / RECORD_NAME).write_text("{not json")
    assert TunnelRecord.read(tmp_path / RECORD_NAME) is None
