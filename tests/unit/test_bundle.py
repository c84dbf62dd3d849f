"""The service bundle: path rules, (de)serialising, atomic 0600 writes, locking, discovery."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from metalab import bundle as bundle_mod
from metalab.bundle import (
    SCHEMA_VERSION,
    BundleCorrupt,
    ServiceBundle,
    bundle_path,
    discover,
    find_bundle,
    load,
    lock,
    move_aside,
    new_bundle,
    remove,
    save,
    workstation_bundle_path,
)
from metalab.errors import ConfigError, MetalabError, NotFoundError

LOCATOR = "postgresql://researcher:s3cret@127.0.0.1:5432/metalab?file_root=/data/runs"


def make_bundle(*, store_locator: str | None = LOCATOR, environment: str = "local", tunnel: dict | None = None) -> ServiceBundle:
    return new_bundle(
        project="p",
        environment=environment,
        type="local",
        services={
            "postgres": {"host": "127.0.0.1", "port": 5432, "pid": 4242, "database": "metalab", "user": "researcher"},
            "atlas": {"host": "127.0.0.1", "port": 8000, "pid": 4343, "url": "http://127.0.0.1:8000/?token=abc123"},
        },
        store_locator=store_locator,
        tunnel=tunnel,
        host="workstation",
        now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    )


TUNNEL = {
    "gateway": "login.cluster",
    "user": "alice",
    "ssh_key": None,
    "forwards": [{"local_port": 8000, "remote_host": "cn001", "remote_port": 8000, "service": "atlas"}],
}


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- path rules


def test_path_uses_file_root_when_set(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert bundle_path(file_root=root, env_name="slurm", home=tmp_path / "home") == root / "services" / "bundle.json"


def test_path_falls_back_to_home_per_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert bundle_path(file_root=None, env_name="local", home=home) == home / ".metalab/services/local/bundle.json"


def test_path_default_home_is_the_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bundle_path(file_root=None, env_name="dev") == tmp_path / ".metalab/services/dev/bundle.json"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_path_refuses_names_that_escape_the_directory(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        bundle_path(file_root=None, env_name=name, home=tmp_path)


# --------------------------------------------------------------------------- record and JSON


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "services" / "bundle.json"
    original = make_bundle(tunnel=TUNNEL)
    save(path, original)
    loaded = load(path)
    assert loaded == original
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.created_at == "2024-05-06T07:08:09+00:00"
    assert loaded.tunnel["forwards"][0]["remote_host"] == "cn001"


def test_json_is_stable_and_in_field_order() -> None:
    bundle = make_bundle()
    text = bundle.to_json()
    assert text == make_bundle().to_json()
    assert text.endswith("\n") and "\n  " in text  # indented
    data = json.loads(text)
    assert list(data) == [
        "schema_version", "project", "environment", "type", "created_at",
        "host", "services", "store_locator", "tunnel",
    ]
    assert list(data["services"]) == ["atlas", "postgres"]  # nested keys sorted
    assert list(data["services"]["postgres"]) == sorted(data["services"]["postgres"])


def test_new_bundle_stamps_time_and_host() -> None:
    bundle = new_bundle(project="p", environment="local", type="local", services={}, store_locator=None)
    stamp = datetime.fromisoformat(bundle.created_at)
    assert stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 60
    assert bundle.host


def test_bundle_is_frozen_and_copies_its_dicts() -> None:
    services = {"postgres": {"host": "h", "port": 5432, "pid": 1}}
    bundle = new_bundle(project="p", environment="e", type="local", services=services, store_locator=None, host="h")
    services["postgres"]["port"] = 1
    assert bundle.services["postgres"]["port"] == 5432
    with pytest.raises(AttributeError):
        bundle.project = "q"  # type: ignore[misc]


def test_invalid_bundle_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="pid or a job_id"):
        new_bundle(project="p", environment="e", type="local", services={"pg": {"host": "h", "port": 1}}, store_locator=None)


def test_repr_and_masked_json_hide_secrets() -> None:
    bundle = make_bundle()
    shown = repr(bundle) + bundle.to_json(mask_secrets=True)
    assert "s3cret" not in shown and "abc123" not in shown
    assert "researcher:***@" in shown
    assert "s3cret" in bundle.to_json()  # the file itself carries the credentials


# --------------------------------------------------------------------------- corrupt files


def _valid_data() -> dict:
    return json.loads(make_bundle().to_json())


def _drop_host(data: dict) -> dict:
    del data["host"]
    return data


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps(_drop_host(_valid_data())), "missing field host"),
        (json.dumps({**_valid_data(), "schema_version": 2}), "unsupported bundle schema_version 2"),
        (json.dumps({**_valid_data(), "services": {"pg": {"host": "h", "port": "x", "pid": 1}}}), "port"),
    ],
    ids=["invalid-json", "not-object", "missing-field", "schema-version", "bad-port"],
)
def test_corrupt_bundle_raises_with_path(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(text)
    with pytest.raises(BundleCorrupt) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and why in message
    assert "\n" not in message
    assert isinstance(info.value, MetalabError) and info.value.exit_code == 1


def test_unreadable_bundle_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.mkdir()  # reading a directory fails even as root
    with pytest.raises(BundleCorrupt, match=str(path)):
        load(path)


def test_load_missing_is_none(tmp_path: Path) -> None:
    assert load(tmp_path / "nope" / "bundle.json") is None


def test_move_aside_keeps_the_file_under_a_new_name(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text("garbage")
    first = move_aside(path)
    assert not path.exists() and first.read_text() == "garbage"
    assert first.name.startswith("bundle.json.corrupt-") and first.name.endswith("Z")
    path.write_text("more garbage")
    second = move_aside(path)  # same second: must not overwrite the first
    assert second != first and first.read_text() == "garbage" and second.read_text() == "more garbage"


def test_remove_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    save(path, make_bundle())
    remove(path)
    assert not path.exists()
    remove(path)


# --------------------------------------------------------------------------- atomic, private writes


def test_mode_is_0600_even_with_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "services" / "bundle.json"
    old = os.umask(0)
    try:
        save(path, make_bundle())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # An existing, wider file is replaced by a 0600 one, not written through.
        path.chmod(0o644)
        save(path, make_bundle(environment="other"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_temp_file_is_0600_from_the_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bundle.json"
    seen: list[int] = []
    real_open = os.open

    def spying_open(file, flags, mode=0o777, *args, **kwargs):
        if str(file).endswith(".tmp"):
            seen.append(mode)
            assert flags & os.O_CREAT and flags & os.O_EXCL
        return real_open(file, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    save(path, make_bundle())
    assert seen == [0o600]


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError("disk on fire")


@pytest.mark.parametrize("target", ["replace", "fsync", "write"])
def test_failed_save_keeps_old_bundle_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    path = tmp_path / "services" / "bundle.json"
    old = make_bundle()
    save(path, old)
    monkeypatch.setattr(os, target, _fail)
    with pytest.raises(OSError, match="disk on fire"):
        save(path, make_bundle(environment="new"))
    monkeypatch.undo()
    assert load(path) == old
    assert files_in(path.parent) == ["bundle.json"]


def test_failed_serialisation_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bundle.json"
    old = make_bundle()
    save(path, old)
    new = make_bundle(environment="new")
    monkeypatch.setattr(bundle_mod.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(TypeError("boom")))
    with pytest.raises(TypeError):
        save(path, new)
    monkeypatch.undo()
    assert load(path) == old
    assert files_in(tmp_path) == ["bundle.json"]


# --------------------------------------------------------------------------- lock


def test_lock_file_sits_beside_bundle_in_private_dir(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".metalab" / "services" / "local" / "bundle.json"
    with lock(path) as lock_path:
        assert lock_path == path.with_name("bundle.json.lock")
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_lock_is_reentrant_in_one_thread(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    with lock(path, timeout=1), lock(path, timeout=1):
        save(path, make_bundle())
    assert load(path) is not None


def test_second_thread_blocks_until_first_releases(tmp_path: Path) -> None:
    path = tmp_path / "services" / "bundle.json"
    held, release, acquired = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        with lock(path):
            held.set()
            release.wait(10)

    def waiter() -> None:
        try:
            with lock(path):  # no timeout: waits for as long as it takes
                acquired.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(5)
    try:
        with pytest.raises(bundle_mod.LockTimeout):
            with lock(path, timeout=0.1):
                pass
        second = threading.Thread(target=waiter)
        second.start()
        assert not acquired.wait(0.3)  # still blocked while the first holds it
    finally:
        release.set()
        first.join(5)
    second.join(5)
    assert acquired.is_set() and not errors


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "services" / "bundle.json"
    child = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from metalab.bundle import lock
        with lock(Path({str(path)!r})):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(bundle_mod.LockTimeout):
            with lock(path, timeout=0.2):
                pass
        proc.stdin.write("go\n")
        proc.stdin.flush()
        start = time.monotonic()
        with lock(path, timeout=10):
            assert time.monotonic() - start < 10
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert proc.returncode == 0


# --------------------------------------------------------------------------- discover


CONFIG = """\
[project]
name = "p"
default_env = "local"

[environments.local]
type = "local"
file_root = "./runs"

[environments.other]
type = "local"
file_root = "./other"

[environments.nofileroot]
type = "local"
"""


def test_discover_walks_up_from_nested_directory_of_file_root(tmp_path: Path) -> None:
    root = tmp_path / "shared" / "experiments"
    save(bundle_path(file_root=root, env_name="slurm"), make_bundle())
    nested = root / "exp1" / "run_0003" / "artifacts"
    nested.mkdir(parents=True)
    found = discover(nested, {})  # no config at hand, as on a compute node
    assert found.bundle.store_locator == LOCATOR and found.path == root / "services" / "bundle.json"
    assert find_bundle(nested, {}) == root / "services" / "bundle.json"


def test_discover_uses_active_environment_from_config(tmp_path: Path) -> None:
    (tmp_path / ".metalab.toml").write_text(CONFIG)
    save(bundle_path(file_root=tmp_path / "runs", env_name="local"), make_bundle(store_locator="postgresql://a@h/local"))
    save(bundle_path(file_root=tmp_path / "other", env_name="other"), make_bundle(store_locator="postgresql://a@h/other"))
    elsewhere = tmp_path / "src" / "pkg"
    elsewhere.mkdir(parents=True)
    assert discover(elsewhere, {}).bundle.store_locator == "postgresql://a@h/local"  # default_env
    assert discover(elsewhere, {"METALAB_ENV": "other"}).bundle.store_locator == "postgresql://a@h/other"


def test_discover_uses_home_bundle_when_profile_has_no_file_root(tmp_path: Path) -> None:
    (tmp_path / ".metalab.toml").write_text(CONFIG)
    home = tmp_path / "home"
    save(bundle_path(file_root=None, env_name="nofileroot", home=home), make_bundle())
    assert discover(tmp_path, {"METALAB_ENV": "nofileroot"}, home=home).bundle.store_locator == LOCATOR


GATEWAY_CONFIG = """\
[project]
name = "{name}"

[environments.slurm]
type = "slurm"
gateway = "hpc-gateway.invalid"
file_root = "/shared/experiments"
"""


def test_a_workstation_keeps_its_bundle_per_project_and_discovers_it(tmp_path: Path) -> None:
    """file_root is on the cluster (not here): each project's copy lives under ~/.metalab/clusters."""
    home = tmp_path / "home"
    paths = {}
    for name in ("alpha", "beta"):
        project = tmp_path / name
        project.mkdir()
        (project / ".metalab.toml").write_text(GATEWAY_CONFIG.format(name=name))
        paths[name] = workstation_bundle_path(project=name, env_name="slurm", home=home)
        save(paths[name], make_bundle(store_locator=f"postgresql://a@127.0.0.1:1/{name}?file_root=/shared/experiments"))
    assert paths["alpha"] == home / ".metalab/clusters/alpha/slurm/bundle.json" != paths["beta"]
    for name in ("alpha", "beta"):
        found = discover(tmp_path / name, {}, home=home)
        assert found.path == paths[name] and found.bundle.store_locator.endswith(f"/{name}?file_root=/shared/experiments")
    with pytest.raises(ConfigError, match="project name '..'"):
        workstation_bundle_path(project="..", env_name="slurm", home=home)


def test_discover_without_config_or_bundle_says_run_up(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        discover(tmp_path, {})
    message = str(info.value)
    assert "no running services found" in message and "metalab services up" in message
    assert str(tmp_path) in message
    assert info.value.exit_code == 3


def test_discover_with_config_but_no_bundle_names_both_paths(tmp_path: Path) -> None:
    (tmp_path / ".metalab.toml").write_text(CONFIG)
    with pytest.raises(NotFoundError) as info:
        discover(tmp_path, {"METALAB_ENV": "other"})
    message = str(info.value)
    assert "metalab services up --env other" in message
    assert str(tmp_path / "other" / "services" / "bundle.json") in message


def test_discover_bundle_without_store(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    save(bundle_path(file_root=root, env_name="local"), make_bundle(store_locator=None))
    with pytest.raises(NotFoundError, match=r"provide no store.*\[services\.postgres\]"):
        discover(root, {})


def test_discover_reports_corrupt_bundle(tmp_path: Path) -> None:
    path = tmp_path / "services" / "bundle.json"
    path.parent.mkdir()
    path.write_text("{")
    with pytest.raises(BundleCorrupt, match=str(path)):
        discover(tmp_path, {})


def test_import_stays_light() -> None:
    code = (
        "import sys, metalab.bundle; "
        "print(sorted(m for m in ('filelock', 'metalab.config', 'dacite', 'psycopg', 'fabric', 'jinja2', 'socket') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
