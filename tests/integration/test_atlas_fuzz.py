"""Fuzzing Atlas's API from its OpenAPI description (schemathesis): no input makes a server error,
and the files stay where they were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_support import Site

pytestmark = pytest.mark.integration


def test_no_generated_request_makes_a_server_error(site: Site, tmp_path: Path) -> None:
    before = sorted(str(path) for path in site.file_root.rglob("*"))
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "run", f"{site.url}/api/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "60", "--seed", "7", "--request-timeout", "30", "--generation-allow-x00", "true",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Traceback" not in site.log_file.read_text()  # no handler raised, whatever was asked
    assert sorted(str(path) for path in site.file_root.rglob("*")) == before
