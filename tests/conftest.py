"""Suite-wide rules: under CI a skipped test is a failure, never a silent pass."""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped under CI; integration tests must run here", red=True)
        session.exitstatus = 1
