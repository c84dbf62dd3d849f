"""Run the installed ``metalab`` command in throwaway project folders."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

METALAB = Path(sys.executable).with_name("metalab")
HERE = Path(__file__).parent


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def metalab(tmp_path, monkeypatch):
    """Call ``metalab(*args, cwd=..., env={...})`` and get exit code, stdout and stderr."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("METALAB_")}
    base_env["HOME"] = str(tmp_path / "home")

    def run(*args: str, cwd: Path = tmp_path, env: dict[str, str] | None = None) -> Result:
        done = subprocess.run(
            [str(METALAB), *args], cwd=cwd, env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=60
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def doc_project(tmp_path) -> Path:
    """The product documentation's full example with its local overrides."""
    (tmp_path / ".metalab.toml").write_text((HERE / "doc_example.toml").read_text())
    (tmp_path / ".metalab.local.toml").write_text((HERE / "doc_example.local.toml").read_text())
    return tmp_path
