from __future__ import annotations

import pytest

from metalab.config import is_slurm_memory, is_slurm_time
from metalab.config._validate import find_problem, format_key


@pytest.mark.parametrize(
    "value", ["30", "0", "90:00", "1:00:00", "100:00:00", "7-00", "7-00:00", "7-00:00:00", "0-23:59:59", "UNLIMITED"]
)
def test_every_slurm_time_format_is_accepted(value):
    assert is_slurm_time(value)


@pytest.mark.parametrize("value", ["", "1h", "1:60", "1:00:60", "7-24", "1-2:3:4:5", "-1", "1:2:3:4", "7-", "abc"])
def test_malformed_slurm_times_are_refused(value):
    assert not is_slurm_time(value)


@pytest.mark.parametrize("value", ["512", "512M", "10G", "1T", "64k", "10g"])
def test_slurm_memory_sizes(value):
    assert is_slurm_memory(value)


@pytest.mark.parametrize("value", ["10 GB", "10GB", "G", "1.5G", "-1G", "lots"])
def test_malformed_memory_is_refused(value):
    assert not is_slurm_memory(value)


def problem(data):
    found = find_problem(data)
    return (format_key(found.path), found.message) if found else None


def test_a_valid_config_has_no_problem():
    assert problem({"project": {"name": "p"}, "environments": {"l": {"type": "local", "file_root": "runs"}}}) is None


def test_unknown_key_suggests_the_closest():
    where, message = problem({"environments": {"s": {"type": "slurm", "gatway": "x"}}})
    assert where == "[environments.s] gatway"
    assert "did you mean 'gateway'" in message


def test_unknown_section():
    where, message = problem({"servces": {}})
    assert where == "[servces]" and "did you mean 'services'" in message


def test_missing_and_unknown_and_unsupported_types():
    assert problem({"environments": {"x": {"file_root": "r"}}})[0] == "[environments.x] type"
    where, message = problem({"environments": {"x": {"type": "slurmm"}}})
    assert "did you mean 'slurm'" in message and "local, slurm" in message
    for future in ("kubernetes", "cloud"):
        assert "not supported yet" in problem({"environments": {"x": {"type": future}}})[1]


def test_wrong_types_name_what_is_expected():
    assert problem({"services": {"atlas": {"port": "8000"}}}) == (
        "[services.atlas] port",
        "must be an integer, not a string ('8000')",
    )
    assert "integer" in problem({"services": {"atlas": {"port": True}}})[1]
    assert "list of strings" in problem({"environments": {"s": {"type": "slurm", "executor": {"modules": "cuda"}}}})[1]
    assert "string" in problem({"services": {"postgres": {"password": 123}}})[1]


def test_value_rules_for_slurm_resources():
    where, message = problem({"environments": {"s": {"type": "slurm", "services": {"time": "7-25:00"}}}})
    assert where == "[environments.s.services] time" and "not a SLURM time" in message
    where, message = problem({"environments": {"s": {"type": "slurm", "executor": {"memory": "32 GB"}}}})
    assert where == "[environments.s.executor] memory" and "memory size" in message
    assert "TCP port" in problem({"services": {"postgres": {"port": 70000}}})[1]


def test_local_profiles_have_no_slurm_keys():
    where, message = problem({"environments": {"l": {"type": "local", "gateway": "h"}}})
    assert where == "[environments.l] gateway" and "unknown key" in message


def test_auth_method_must_be_one_postgres_accepts_with_a_password():
    where, message = problem({"services": {"postgres": {"auth_method": "trust"}}})
    assert where == "[services.postgres] auth_method" and "scram-sha-256, md5, password" in message
