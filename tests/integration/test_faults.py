"""A machine that misbehaves: a full disk, a file_root that is a file, taken or doubled ports, a
reader that leaves. Each is one line naming what to fix, the right exit code, and nothing made."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def one_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.text, str(result)
    return lines[0]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m"):
    """A real filesystem of ``size`` at ``path`` (tmpfs), so writes fail with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


SWEEP = textwrap.dedent("""
    import sys
    import metalab

    @metalab.operation
    def big(params, seeds, capture):
        capture.metric("x", params["x"])
        capture.data("padding", "x" * 20000)  # kept in the record line: the disk fills with records

    exp = metalab.Experiment(name="full", version="1", operation=big, params=metalab.grid(x=list(range(200))))
    handle = metalab.run(exp, store=sys.argv[1], progress=False)
    print(handle.ran, handle.skipped)
""")


def test_a_disk_that_fills_during_a_sweep_is_one_error_naming_the_file_and_the_rerun_does_the_rest(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    with small_disk(tmp_path / "disk") as disk:
        store = disk / "runs"
        done = subprocess.run([sys.executable, str(script), str(store)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("metalab.store.files.RecordWriteError: cannot write the record of run ")
        assert str(store / "full-1" / "runs") in last and "No space left on device" in last and "free some space" in last
        assert "During handling of the above exception" not in done.stderr  # not a chain of tracebacks
        import metalab

        kept = len(metalab.FileStore(store).load("full-1"))
        assert 0 < kept < 200
        shutil.copytree(store, tmp_path / "kept")  # the user moves the store to a disk with room
    shutil.copytree(tmp_path / "kept", tmp_path / "disk" / "runs")
    # the rerun runs only what the kept records lack
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "disk" / "runs")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(200 - kept), str(kept)]


def test_services_up_on_a_full_disk_is_one_line_naming_where(project) -> None:
    with small_disk(project.root / "runs", size="64k"):
        (project.root / "runs" / "filler").write_bytes(b"\0" * (60 * 1024))
        with contextlib.suppress(OSError):
            (project.root / "runs" / "filler2").write_bytes(b"\0" * (64 * 1024))
        result = project.run("services", "up")
        line = one_line(result)
        assert result.code == 1 and line.startswith("metalab: ") and str(project.root / "runs") in line, result
        assert "No space left on device" in line or "space" in line
        project.run("services", "down")


def test_a_file_root_that_is_a_file_is_one_line_from_up_and_down(project) -> None:
    (project.root / "runs").write_text("not a folder\n")
    for command in ("up", "down", "status"):
        result = project.run("services", command)
        line = one_line(result)
        assert result.code == 2 and "file_root" in line and "is a file, not a folder" in line, result
    assert (project.root / "runs").read_text() == "not a folder\n"


def test_the_same_port_for_postgres_and_atlas_is_refused_before_anything_is_made(project) -> None:
    project.write_config(postgres_extra=f"port = {project.atlas_port}\n")
    result = project.run("services", "up")
    line = one_line(result)
    assert result.code == 2 and "[services.postgres] port and [services.atlas] port" in line, result
    assert not (project.root / "runs").exists()


def test_a_taken_port_fails_before_the_services_folder_or_a_password_exists(project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.write_config(postgres_extra=f"port = {port}\n")
        result = project.run("services", "up")
        line = one_line(result)
        assert result.code == 2 and f"port {port}" in line and "[services.postgres] port" in line, result
    assert not (project.root / "runs").exists()


def test_status_json_into_a_reader_that_leaves_ends_quietly(project) -> None:
    assert project.run("services", "up").code == 0
    process = subprocess.Popen(project.argv(project.program, ("services", "status", "--json")), cwd=project.root,
                               env=project.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head -3` does once it has its lines
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err and err.strip() == "", err
    done = subprocess.run(["bash", "-c", f"{project.program} services status --json | head -3"], cwd=project.root,
                          env=project.environ(), capture_output=True, text=True, timeout=60)
    assert len(done.stdout.splitlines()) == 3 and done.stderr == "", done.stderr
    json.loads(project.run("services", "status", "--json").out)  # whole when read whole


def test_an_unwritable_file_root_is_one_line(project) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder this user cannot write")  # CI runs as root
    user = "nobody"
    locked = project.root / "locked"
    locked.mkdir(mode=0o755)
    project.write_config(file_root="./locked/runs")
    os.chmod(project.root, 0o755)
    from cluster_support import gateway_python

    result = subprocess.run(["runuser", "-u", user, "--", gateway_python(), "-c",
                             "from metalab.cli import main; main()", "services", "up"], cwd=project.root,
                            env={**project.environ(), "HOME": "/tmp"}, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "cannot be written by this user" in lines[0], result.stderr
    assert not (locked / "runs").exists()
