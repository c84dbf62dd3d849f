"""Atlas's file access: only files inside file_root are ever served, listed or previewed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from metalab.atlas import files
from metalab.atlas.files import (
    list_artifacts,
    list_data,
    media_type,
    open_artifact,
    open_data,
    open_file,
    open_log,
    preview_kind,
    read_preview,
    tail,
)
from metalab.capture import Capture
from metalab.errors import UnsafePath
from metalab.store.files import FileStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 20
EXP, RUN = "exp1", "r1"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside file_root holding what must never be served."""
    folder = tmp_path / "outside"
    (folder / RUN).mkdir(parents=True)
    (folder / "secret.txt").write_text("outside secret\n")
    (folder / RUN / "leak.txt").write_text("leaked\n")
    return folder


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    """A store written the way runs write it (Capture into FileStore's layout)."""
    root = tmp_path / "root"
    store = FileStore(root)
    experiment = store.write_experiment({"experiment_id": EXP, "name": "exp", "version": "1"})
    capture = Capture(RUN, experiment)
    capture.artifact("model.txt", b"weights: 1 2 3\n")
    capture.artifact("metrics.json", json.dumps({"loss": 0.5, "acc": [1, 2]}).encode())
    capture.artifact("blob.bin", b"\x00\x01\x02\xff" * 10)
    capture.data("arr", np.arange(6))
    capture.log("hello from the run")
    capture.close()
    nested = experiment.artifact_path(RUN, "plots/a.png")  # the brief's nested names
    nested.parent.mkdir()
    nested.write_bytes(PNG)
    (experiment.directory / "data" / RUN / "extra.json").write_text('{"k": 1}')
    # targets a naive join would find, so a refusal is never just a missing file
    (experiment.directory / "artifacts" / "x").write_text("next to the runs\n")
    services = root / "services"
    services.mkdir()
    (services / "postgres.password").write_text("hunter2\n")
    return root


def artifacts_dir(root: Path) -> Path:
    return root / EXP / "artifacts" / RUN


# The opening functions return a file; these say which file it is ((device, inode)), or read it.


def ident(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _ident(handle) -> tuple[int, int]:
    with handle:
        info = os.fstat(handle.fileno())
        return info.st_dev, info.st_ino


def artifact_path(*args: str | Path) -> tuple[int, int]:
    return _ident(open_artifact(*args))


def data_path(*args: str | Path) -> tuple[int, int]:
    return _ident(open_data(*args))


def log_path(*args: str | Path) -> tuple[int, int]:
    return _ident(open_log(*args))


def preview_of(path: Path, **options: int) -> dict:
    with path.open("rb") as handle:
        return read_preview(handle, path.name, **options)


def tail_of(path: Path, **options: int) -> dict:
    with path.open("rb") as handle:
        return tail(handle, **options)


# --------------------------------------------------------------------------- the happy path


def test_list_artifacts_lists_every_file_with_size_and_kind_sorted(root: Path) -> None:
    assert list_artifacts(root, EXP, RUN) == [
        {"name": "blob.bin", "size": 40, "kind": "binary"},
        {"name": "metrics.json", "size": len(json.dumps({"loss": 0.5, "acc": [1, 2]})), "kind": "json"},
        {"name": "model.txt", "size": 15, "kind": "text"},
        {"name": "plots/a.png", "size": len(PNG), "kind": "image"},
    ]


def test_list_artifacts_is_empty_when_the_run_has_no_folder(root: Path) -> None:
    assert list_artifacts(root, EXP, "other-run") == []
    assert list_artifacts(root, "no-such-experiment", RUN) == []


def test_artifact_path_resolves_flat_and_nested_names(root: Path) -> None:
    assert artifact_path(root, EXP, RUN, "model.txt") == ident(artifacts_dir(root) / "model.txt")
    assert artifact_path(root, EXP, RUN, "plots/a.png") == ident(artifacts_dir(root) / "plots" / "a.png")
    with open_artifact(root, EXP, RUN, "plots/a.png") as nested:
        assert read_preview(nested, "a.png") == {"kind": "image", "size": len(PNG), "text": None, "truncated": False}


def test_artifact_preview_of_text_and_pretty_json(root: Path) -> None:
    text = preview_of(artifacts_dir(root) / "model.txt")
    assert text == {"kind": "text", "size": 15, "text": "weights: 1 2 3\n", "truncated": False}
    pretty = preview_of(artifacts_dir(root) / "metrics.json")
    assert pretty["kind"] == "json"
    assert pretty["text"] == json.dumps({"loss": 0.5, "acc": [1, 2]}, indent=2)


def test_missing_artifacts_raise_file_not_found_without_server_paths(root: Path) -> None:
    for name in ("nope.txt", "plots", "plots/nope.png", "model.txt/inner"):
        with pytest.raises(FileNotFoundError) as info:
            artifact_path(root, EXP, RUN, name)
        assert not isinstance(info.value, UnsafePath)
        assert str(root) not in str(info.value)


def test_list_data_and_data_path_follow_the_capture_layout(root: Path) -> None:
    listed = list_data(root, EXP, RUN)
    assert [(entry["name"], entry["kind"]) for entry in listed] == [("arr.npy", "array"), ("extra.json", "json")]
    array_file = root / EXP / "data" / RUN / "arr.npy"
    assert listed[0]["size"] == array_file.stat().st_size
    assert data_path(root, EXP, RUN, "arr.npy") == ident(array_file)
    assert data_path(root, EXP, RUN, "arr") == ident(array_file)  # the name capture.data was given
    assert data_path(root, EXP, RUN, "extra") == ident(root / EXP / "data" / RUN / "extra.json")
    with open_data(root, EXP, RUN, "arr") as handle:
        assert np.load(handle).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(FileNotFoundError):
        data_path(root, EXP, RUN, "nope")
    assert list_data(root, EXP, "other-run") == []


def test_log_path_and_tail_of_a_captured_log(root: Path) -> None:
    assert log_path(root, EXP, RUN) == ident(root / EXP / "logs" / f"{RUN}.log")
    with open_log(root, EXP, RUN) as handle:
        assert tail(handle) == {"lines": ["hello from the run"], "size": 19, "truncated": False}
    with pytest.raises(FileNotFoundError):
        log_path(root, EXP, "other-run")


# --------------------------------------------------------------------------- refusals


ESCAPING_NAMES = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "..%2f..%2fetc",
    "%2e%2e/x",
    "%2E%2E/x",
    ".%2e/x",
    "x%2e%2ey",  # harmless once decoded, but double encoding is refused outright
    "%252e%252e/x",
    "%2525252e%2525252e/x",  # encoded four times over
    "%252525252e%252525252e/x",  # more levels than anyone decodes: refused as such
    "a%5cb",
    "a\\..\\b",
    "..\\x",
    "x\x00y",
    "a\x1fb",
    "a\x7fb",
    "",
    ".",
    "..",
    "a//b",
    "plots/",
    "./model.txt",
]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_unsafe_artifact_names_are_refused_with_a_one_line_message(root: Path, name: str) -> None:
    with pytest.raises(UnsafePath) as info:
        artifact_path(root, EXP, RUN, name)
    message = str(info.value)
    assert message and "\n" not in message
    assert str(root.parent) not in message and "passwd" not in message


def test_an_absolute_name_is_refused_as_such(root: Path) -> None:
    with pytest.raises(UnsafePath, match="absolute"):
        artifact_path(root, EXP, RUN, "/etc/passwd")


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_unsafe_data_names_are_refused(root: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        data_path(root, EXP, RUN, name)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a\\b", "%2e%2e", "x\x00y", "a//b"])
def test_open_file_refuses_unsafe_segments(root: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        open_file(root, EXP, "artifacts", name)


@pytest.mark.parametrize("run_id", ["..", ".", "a/b", "", "%2e%2e", "..%2f", "a\\b", "r\x00", "/etc"])
def test_unsafe_run_ids_are_refused_everywhere(root: Path, run_id: str) -> None:
    for call in (
        lambda: artifact_path(root, EXP, run_id, "model.txt"),
        lambda: data_path(root, EXP, run_id, "arr"),
        lambda: log_path(root, EXP, run_id),
        lambda: list_artifacts(root, EXP, run_id),
        lambda: list_data(root, EXP, run_id),
    ):
        with pytest.raises(UnsafePath):
            call()


@pytest.mark.parametrize("experiment_id", ["..", ".", "a/b", "", "/etc", "%2e%2e", "services"])
def test_unsafe_experiment_ids_are_refused_everywhere(root: Path, experiment_id: str) -> None:
    for call in (
        lambda: artifact_path(root, experiment_id, RUN, "model.txt"),
        lambda: data_path(root, experiment_id, RUN, "arr"),
        lambda: log_path(root, experiment_id, RUN),
        lambda: list_artifacts(root, experiment_id, RUN),
        lambda: list_data(root, experiment_id, RUN),
    ):
        with pytest.raises(UnsafePath):
            call()


@pytest.mark.parametrize(
    "target",
    ["/etc/hostname", "OUTSIDE/secret.txt", "../../../../outside/secret.txt", "../../../../outside/nothing-here"],
)
def test_symlinked_artifacts_leading_outside_are_refused_and_not_listed(root: Path, outside: Path, target: str) -> None:
    link = artifacts_dir(root) / "escape.txt"
    link.symlink_to(target.replace("OUTSIDE", str(outside)))
    with pytest.raises(UnsafePath):
        artifact_path(root, EXP, RUN, "escape.txt")
    assert "escape.txt" not in [entry["name"] for entry in list_artifacts(root, EXP, RUN)]


def test_a_symlinked_subfolder_leading_outside_is_refused(root: Path, outside: Path) -> None:
    (artifacts_dir(root) / "more").symlink_to(outside)
    with pytest.raises(UnsafePath):
        artifact_path(root, EXP, RUN, "more/secret.txt")
    assert all(not entry["name"].startswith("more") for entry in list_artifacts(root, EXP, RUN))


def test_symlinked_run_artifacts_and_experiment_folders_leading_outside_are_refused(root: Path, outside: Path) -> None:
    (root / "exp2").mkdir()
    (root / "exp2" / "artifacts").symlink_to(outside)  # artifacts/r1/leak.txt would be found
    (root / "exp3" / "artifacts").mkdir(parents=True)
    (root / "exp3" / "artifacts" / RUN).symlink_to(outside / RUN)
    (root / "exp4").symlink_to(outside, target_is_directory=True)
    for experiment_id in ("exp2", "exp3"):
        with pytest.raises(UnsafePath):
            artifact_path(root, experiment_id, RUN, "leak.txt")
        with pytest.raises(UnsafePath):
            list_artifacts(root, experiment_id, RUN)
    (outside / "logs").mkdir()
    (outside / "logs" / f"{RUN}.log").write_text("outside log\n")
    with pytest.raises(UnsafePath):
        log_path(root, "exp4", RUN)
    with pytest.raises(UnsafePath):
        list_data(root, "exp4", RUN)


def test_refusing_an_escape_never_looks_outside(root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (artifacts_dir(root) / "more").symlink_to(outside)
    (artifacts_dir(root) / "abs.txt").symlink_to(outside / "secret.txt")
    touched: list[str] = []
    for name in ("lstat", "stat", "readlink", "scandir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path, *a, _real=real, **k: touched.append(str(path)) or _real(path, *a, **k))
    for name in ("more/secret.txt", "more/r1/leak.txt", "abs.txt"):
        with pytest.raises(UnsafePath):
            artifact_path(root, EXP, RUN, name)
    list_artifacts(root, EXP, RUN)
    monkeypatch.undo()
    assert touched  # the spy saw the walk
    assert not [path for path in touched if path.startswith(str(outside))]


def test_symlinks_into_the_services_folder_are_refused(root: Path) -> None:
    (artifacts_dir(root) / "pw.txt").symlink_to(root / "services" / "postgres.password")
    (artifacts_dir(root) / "pw2.txt").symlink_to("../../../services/postgres.password")
    for name in ("pw.txt", "pw2.txt"):
        with pytest.raises(UnsafePath):
            artifact_path(root, EXP, RUN, name)
    assert [e["name"] for e in list_artifacts(root, EXP, RUN) if e["name"].startswith("pw")] == []
    with pytest.raises(UnsafePath):
        open_file(root, "services", "postgres.password")


def test_the_services_folder_is_refused_even_when_it_is_a_symlink(tmp_path: Path) -> None:
    other = tmp_path / "root2"
    (other / EXP).mkdir(parents=True)
    (other / "services").symlink_to(EXP)
    (other / EXP / "artifacts" / RUN).mkdir(parents=True)
    (other / EXP / "artifacts" / RUN / "model.txt").write_text("x")
    with pytest.raises(UnsafePath):
        artifact_path(other, "services", RUN, "model.txt")  # would resolve to exp1/artifacts/r1/model.txt
    with pytest.raises(UnsafePath):
        open_file(other, "services", "artifacts")


def test_names_with_a_single_level_of_percent_encoding_are_served(root: Path) -> None:
    for name in ("a%20b.txt", "100%25.txt", "50%.txt"):
        (artifacts_dir(root) / name).write_text("fine\n")
        assert artifact_path(root, EXP, RUN, name) == ident(artifacts_dir(root) / name)


def test_a_symlink_loop_is_refused(root: Path) -> None:
    (artifacts_dir(root) / "a").symlink_to("b")
    (artifacts_dir(root) / "b").symlink_to("a")
    with pytest.raises(UnsafePath):
        artifact_path(root, EXP, RUN, "a")


def test_symlinks_staying_inside_file_root_are_followed(root: Path) -> None:
    target = (artifacts_dir(root) / "model.txt").resolve()
    (artifacts_dir(root) / "relative.txt").symlink_to("../../artifacts/r1/model.txt")
    (artifacts_dir(root) / "absolute.txt").symlink_to(target)
    (root / "exp5" / "artifacts").mkdir(parents=True)
    (root / "exp5" / "artifacts" / RUN).symlink_to(artifacts_dir(root).resolve())
    assert artifact_path(root, EXP, RUN, "relative.txt") == ident(target)
    assert artifact_path(root, EXP, RUN, "absolute.txt") == ident(target)
    assert artifact_path(root, "exp5", RUN, "model.txt") == ident(target)
    listed = {entry["name"]: entry for entry in list_artifacts(root, EXP, RUN)}
    assert listed["relative.txt"] == {"name": "relative.txt", "size": 15, "kind": "text"}
    assert "absolute.txt" in listed


def test_file_root_reached_through_a_symlink_still_works(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert artifact_path(alias, EXP, RUN, "model.txt") == ident(artifacts_dir(root) / "model.txt")
    with pytest.raises(UnsafePath):
        artifact_path(alias, EXP, RUN, "../x")


# --------------------------------------------------------------------------- kinds and previews


@pytest.mark.parametrize(
    ("name", "head", "kind"),
    [
        ("a.png", PNG, "image"),
        ("a.PNG", PNG, "image"),
        ("a.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 10, "image"),
        ("a.gif", b"GIF89a" + b"\x00" * 10, "image"),
        ("a.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image"),
        ("a.svg", b'\xef\xbb\xbf  <svg xmlns="http://www.w3.org/2000/svg"/>', "image"),
        ("a.png", b"not a png at all", "text"),  # extension alone is not enough
        ("a.png", b"\x00\x01garbage", "binary"),
        ("a.svg", b"\x00\x00<svg", "binary"),
        ("a.json", b'{"a": [1, 2]}', "json"),
        ("a.json", b"{not json", "text"),
        ("a.json", b'{"a": "' + b"x" * files.SNIFF_BYTES, "json"),  # cut by the sniff window
        ("notes", "plain text é".encode(), "text"),
        ("notes", b"text with a \x00 in it", "binary"),
        ("notes", b"latin-1 \xe9t\xe9", "binary"),
        ("run.log", b"latin-1 \xe9t\xe9\n", "text"),
        ("a.txt", "é".encode() * files.SNIFF_BYTES, "text"),
        ("a.txt", "é".encode()[:1], "text"),  # a character cut at the end of the head
        ("empty", b"", "text"),
    ],
)
def test_preview_kind(name: str, head: bytes, kind: str) -> None:
    assert preview_kind(name, head) == kind


def test_preview_of_a_binary_file_has_no_text(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)))
    assert preview_of(path) == {"kind": "binary", "size": 256, "text": None, "truncated": False}


def test_preview_of_invalid_utf8_text_replaces_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    path.write_bytes(b"ok line\nbad \xff\xfe byte\n")
    preview = preview_of(path)
    assert preview["kind"] == "text"
    assert preview["text"] == "ok line\nbad \ufffd\ufffd byte\n"


def test_preview_truncates_long_text_on_a_character_boundary(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("a" + "é" * 100, encoding="utf-8")  # 201 bytes; byte 100 is inside a character
    preview = preview_of(path, limit=100)
    assert preview["truncated"] is True and preview["size"] == 201
    assert preview["text"] == "a" + "é" * 49
    assert len(preview["text"].encode()) <= 100


def test_json_is_pretty_printed_only_when_whole(tmp_path: Path) -> None:
    value = {"values": list(range(30))}
    small = tmp_path / "small.json"
    small.write_text(json.dumps(value))
    assert preview_of(small)["text"] == json.dumps(value, indent=2)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"values": list(range(20000))}))
    preview = preview_of(big, limit=files.SNIFF_BYTES)
    assert preview["kind"] == "json" and preview["truncated"] is True
    assert preview["text"] == big.read_text()[: files.SNIFF_BYTES]  # raw: it cannot be parsed


def test_pretty_json_larger_than_the_limit_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps(list(range(40))))  # 150 bytes, ~250 when indented
    preview = preview_of(path, limit=200)
    assert preview["kind"] == "json" and preview["truncated"] is True
    assert preview["text"] == json.dumps(list(range(40)), indent=2)[:200]


def test_pretty_json_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    path = tmp_path / "words.json"
    path.write_text(json.dumps(["é" * 9] * 8, ensure_ascii=False), encoding="utf-8")  # 175 bytes
    preview = preview_of(path, limit=180)  # fits, but indented it does not
    assert preview["truncated"] is True
    assert len(preview["text"].encode()) <= 180
    assert json.dumps(["é" * 9] * 8, indent=2, ensure_ascii=False).startswith(preview["text"])


def test_a_cut_json_file_is_never_parsed_as_if_whole(tmp_path: Path) -> None:
    path = tmp_path / "number.json"
    path.write_text("12345678901234567890")  # its first 5 bytes are valid JSON on their own
    assert preview_of(path, limit=5) == {"kind": "json", "size": 20, "text": "12345", "truncated": True}


# --------------------------------------------------------------------------- tail


class _CountingFile:
    def __init__(self, handle):
        self.handle = handle
        self.bytes_read = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def read(self, size=-1):
        data = self.handle.read(size)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_tail_reads_only_the_end_of_a_large_log(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("w") as handle:
        for number in range(40000):
            handle.write(f"line {number:06d} {'x' * 13}\n")  # 26 bytes a line: ~1 MB
    with path.open("rb") as raw:
        counted = _CountingFile(raw)
        result = tail(counted, lines=3, max_bytes=4096)
    assert result == {
        "lines": [f"line {n:06d} {'x' * 13}" for n in (39997, 39998, 39999)],
        "size": 40000 * 26,
        "truncated": True,
    }
    assert counted.bytes_read <= 4097
    assert len(tail_of(path, lines=200)["lines"]) == 200


def test_tail_of_a_small_log_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "small.log"
    path.write_bytes(b"one\ntwo\r\nthree\n")
    assert tail_of(path) == {"lines": ["one", "two", "three"], "size": 15, "truncated": False}


def test_tail_includes_a_last_line_without_newline_and_follows_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.log"
    path.write_text("first\nsecond")
    assert tail_of(path)["lines"] == ["first", "second"]
    with path.open("a") as handle:
        handle.write(" done\nthird\n")
    assert tail_of(path, lines=2) == {"lines": ["second done", "third"], "size": 24, "truncated": True}


def test_tail_of_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    assert tail_of(path) == {"lines": [], "size": 0, "truncated": False}


def test_tail_keeps_a_line_that_starts_exactly_at_the_window(tmp_path: Path) -> None:
    path = tmp_path / "edge.log"
    path.write_text("aaa\nbbb\n")
    assert tail_of(path, max_bytes=4) == {"lines": ["bbb"], "size": 8, "truncated": True}
    assert tail_of(path, max_bytes=3) == {"lines": [], "size": 8, "truncated": True}  # "bb\n" was cut


def test_tail_of_a_single_huge_line_shows_its_end(tmp_path: Path) -> None:
    path = tmp_path / "one.log"
    path.write_text("é" * 1000)
    result = tail_of(path, max_bytes=101)  # the window starts inside a character
    assert result["lines"] == ["é" * 50] and result["truncated"] is True


def test_tail_decodes_invalid_utf8_with_replacement(tmp_path: Path) -> None:
    path = tmp_path / "bad.log"
    path.write_bytes(b"ok\n\xff bad\n")
    assert tail_of(path)["lines"] == ["ok", "\ufffd bad"]


# --------------------------------------------------------------------------- media types


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", "image/png"),
        ("plots/A.PNG", "image/png"),
        ("a.svg", "image/svg+xml"),
        ("a.webp", "image/webp"),
        ("a.json", "application/json"),
        ("run.log", "text/plain"),
        ("a.tar.gz", "application/gzip"),
        ("arr.npy", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_media_type(name: str, expected: str) -> None:
    assert media_type(name) == expected


def test_a_hard_link_to_a_services_file_is_refused(root: Path) -> None:
    os.link(root / "services" / "postgres.password", artifacts_dir(root) / "pw.txt")
    with pytest.raises(UnsafePath):
        open_artifact(root, EXP, RUN, "pw.txt")
    assert "pw.txt" not in [entry["name"] for entry in list_artifacts(root, EXP, RUN)]


def test_a_fifo_among_the_artifacts_is_not_a_file_and_never_blocks(root: Path) -> None:
    os.mkfifo(artifacts_dir(root) / "pipe")
    with pytest.raises(FileNotFoundError):
        open_artifact(root, EXP, RUN, "pipe")
    assert "pipe" not in [entry["name"] for entry in list_artifacts(root, EXP, RUN)]
