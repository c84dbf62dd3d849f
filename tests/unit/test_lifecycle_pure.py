from __future__ import annotations

from pathlib import Path

import pytest

from metalab.config import load_config, resolve_environment
from metalab.environments.base import ServiceState, declared_services, start_order
from metalab.errors import ConfigError
from metalab.lifecycle import StatusReport, format_status


def resolved(tmp_path: Path, services: str):
    path = tmp_path / ".metalab.toml"
    path.write_text(services + '[environments.local]\ntype = "local"\nfile_root = "./runs"\n')
    return resolve_environment(load_config(path), flag=None, environ={})


def test_atlas_without_postgres_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[services.atlas\] needs a PostgreSQL backend"):
        declared_services(resolved(tmp_path, "[services.atlas]\nport = 8000\n"))


def test_only_declared_services_are_provisioned_in_dependency_order(tmp_path):
    assert declared_services(resolved(tmp_path, "[services.postgres]\n")) == ["postgres"]
    assert declared_services(resolved(tmp_path, "[services.atlas]\n[services.postgres]\n")) == ["postgres", "atlas"]
    with pytest.raises(ConfigError, match="no services declared"):
        declared_services(resolved(tmp_path, ""))


def test_start_order_puts_dependencies_first():
    assert start_order(["atlas", "postgres"]) == ["postgres", "atlas"]
    assert list(reversed(start_order({"atlas": 1, "postgres": 2}))) == ["atlas", "postgres"]


def state(name, value):
    return ServiceState(name=name, state=value, host="127.0.0.1", port=1, pid=2)


@pytest.mark.parametrize(
    "states, orphans, problem, code",
    [
        ([state("postgres", "running"), state("atlas", "running")], [], None, 0),
        ([state("postgres", "running"), state("atlas", "stopped")], [], None, 1),
        ([state("postgres", "unhealthy")], [], None, 1),
        ([], [], None, 3),
        ([], [object()], None, 1),
        ([], [], "corrupt", 1),
    ],
)
def test_status_exit_codes(states, orphans, problem, code):
    report = StatusReport(environment="local", bundle_path="/b", states=states, orphans=orphans, problem=problem)
    assert report.exit_code == code


def test_status_text_names_each_service_and_where_it_listens():
    report = StatusReport(environment="local", bundle_path="/b", states=[
        ServiceState(name="postgres", state="running", host="127.0.0.1", port=5433, pid=10, uptime=75.0),
        ServiceState(name="atlas", state="stopped", host="127.0.0.1", port=8000, pid=11, url="http://127.0.0.1:8000"),
    ])
    lines = format_status(report).splitlines()
    assert lines[1].split() == ["postgres", "running", "127.0.0.1:5433", "pid", "10", "up", "1m15s"]
    assert lines[2].split() == ["atlas", "stopped", "127.0.0.1:8000", "pid", "11", "http://127.0.0.1:8000"]
    assert "metalab services up" in format_status(StatusReport(environment="local", bundle_path="/b"))
