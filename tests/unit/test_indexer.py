"""The indexer's file reading and freshness wording, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalab.store import indexer
from metalab.store.files import ExperimentFiles
from metalab.store.indexer import Freshness, signature


def test_only_whole_lines_are_read_and_a_torn_tail_waits(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert indexer._complete_lines(path, 0, path.stat().st_size, whole=False) == b'{"a":1}\n{"b":2}\n'
    assert indexer._complete_lines(path, 8, path.stat().st_size - 8, whole=False) == b'{"b":2}\n'
    assert indexer._complete_lines(path, 16, path.stat().st_size - 16, whole=False) == b""


def test_a_batch_is_bounded_unless_one_line_is_longer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexer, "BATCH_BYTES", 10)
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"1234\n5678\n9abc\n")
    assert indexer._complete_lines(path, 0, 15, whole=False) == b"1234\n5678\n"
    assert indexer._complete_lines(path, 0, 15, whole=True) == b"1234\n5678\n9abc\n"
    path.write_bytes(b"x" * 25 + b"\n")
    assert indexer._complete_lines(path, 0, 26, whole=False) == b"x" * 25 + b"\n"


def test_the_signature_changes_with_every_append_new_file_and_description(tmp_path: Path) -> None:
    files = ExperimentFiles(tmp_path / "e")
    empty = signature(files)
    files.runs_dir.mkdir(parents=True)
    (files.runs_dir / "a.jsonl").write_text("x\n")
    (files.runs_dir / "notes.txt").write_text("not a record file")
    one = signature(files)
    assert one != empty and [name for name, _ in one] == ["a.jsonl", ""]
    with (files.runs_dir / "a.jsonl").open("a") as handle:
        handle.write("y\n")
    appended = signature(files)
    assert appended != one
    (files.directory / "experiment.json").write_text("{}")
    described = signature(files)
    assert described != appended and described[:-1] == appended[:-1]
    (files.directory / "experiment.json").write_text('{"name": "renamed"}')
    assert signature(files) != described


def test_freshness_says_how_far_behind_and_why() -> None:
    assert Freshness(None).text is None
    assert Freshness(3.4).text == "index 3 s behind the files"
    assert Freshness(12.0, "connection refused").text == "index 12 s behind the files: connection refused"
    assert Freshness(float("inf")).text == "the index has not read these files yet"
