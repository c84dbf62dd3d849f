"""PostgresStore without a server: locator parsing, password sources, masking, index values."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

from metalab.errors import ConfigError
from metalab.store import StoreConfig, mask_locator, open_store
from metalab.store.index_rows import (
    Catalogue,
    LineBatch,
    as_number,
    copy_array,
    numbers_row,
    to_jsonb,
    value_type,
)
from metalab.store.locator import mask_postgres_locator, parse_locator
from metalab.store.postgres import PostgresStore
from metalab.store.records import RunRecord

SECRET = "s3cr3t-Pa55"


def test_a_full_locator_parses_into_its_parts(tmp_path: Path) -> None:
    target = parse_locator(f"postgresql://alice:{SECRET}@db.example:6543/lab?file_root={tmp_path}")
    assert (target.user, target.host, target.port, target.dbname) == ("alice", "db.example", 6543, "lab")
    assert target.file_root == tmp_path
    assert target.password is not None and target.password.reveal() == SECRET
    assert target.options == {}
    kwargs = target.connect_kwargs()
    assert kwargs["host"] == "db.example" and kwargs["port"] == 6543 and kwargs["user"] == "alice"
    assert kwargs["dbname"] == "lab" and "password" not in kwargs


def test_the_postgres_scheme_and_a_locator_without_password_or_port(tmp_path: Path) -> None:
    target = parse_locator(f"postgres://bob@127.0.0.1/lab?file_root={tmp_path}")
    assert (target.user, target.host, target.port, target.dbname, target.password) == (
        "bob", "127.0.0.1", None, "lab", None,
    )
    assert "port" not in target.connect_kwargs()


def test_percent_encoding_ipv6_and_query_parameters(tmp_path: Path) -> None:
    target = parse_locator(
        f"postgresql://us%40er:p%40ss%3Aw%2Frd@[::1]:5433/my%20db?file_root={tmp_path}/a+b&sslmode=disable"
    )
    assert target.user == "us@er" and target.password.reveal() == "p@ss:w/rd"
    assert (target.host, target.port, target.dbname) == ("::1", 5433, "my db")
    assert target.file_root == tmp_path / "a+b"  # a plus in a path stays a plus
    assert target.options == {"sslmode": "disable"}
    # a unix socket directory, as libpq takes it: percent-encoded host or ?host=
    assert parse_locator(f"postgresql://u@%2Ftmp%2Fsock/db?file_root={tmp_path}").host == "/tmp/sock"
    assert parse_locator(f"postgresql:///db?host=/run/pg&port=5444&file_root={tmp_path}").host == "/run/pg"
    assert parse_locator(f"postgresql:///db?host=/run/pg&port=5444&file_root={tmp_path}").port == 5444


def test_a_relative_file_root_is_taken_from_the_current_directory(tmp_path: Path) -> None:
    assert parse_locator("postgresql://u@h/db?file_root=runs", cwd=tmp_path).file_root == tmp_path / "runs"


def test_a_raw_at_sign_in_the_password_is_kept_whole_and_masked(tmp_path: Path) -> None:
    locator = f"postgresql://u:pa@ss@h:5432/db?file_root={tmp_path}"
    assert parse_locator(locator).password.reveal() == "pa@ss"
    assert "pa@ss" not in mask_locator(locator) and "ss@" not in mask_locator(locator)
    assert mask_locator(locator) == f"postgresql://u:***@h:5432/db?file_root={tmp_path}"


def test_a_password_query_parameter_counts_and_is_masked(tmp_path: Path) -> None:
    locator = f"postgresql://u@h/db?password={SECRET}&file_root={tmp_path}"
    target = parse_locator(locator)
    assert target.password.reveal() == SECRET
    assert SECRET not in target.display and "password=***" in target.display
    assert SECRET not in mask_locator(locator)
    assert SECRET not in repr(StoreConfig(locator))


@pytest.mark.parametrize(
    "locator",
    [
        f"postgresql://u:{SECRET}@h:5432/db",
        f"postgresql://u:{SECRET}@h:5432/db?sslmode=require",
        f"postgresql://u:{SECRET}@h:5432/db?file_root=",
    ],
)
def test_a_missing_file_root_is_a_one_line_config_error_without_the_password(locator: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStore.from_locator(locator)
    text = str(caught.value)
    assert "file_root" in text and "\n" not in text and SECRET not in text


@pytest.mark.parametrize("port", ["abc", "0", "70000", "54a"])
def test_a_bad_port_is_a_config_error_without_the_password(port: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_locator(f"postgresql://u:{SECRET}@h:{port}/db?file_root={tmp_path}")
    assert SECRET not in str(caught.value) and "port" in str(caught.value)


def test_a_locator_must_be_postgresql() -> None:
    with pytest.raises(ConfigError):
        parse_locator("mysql://u@h/db?file_root=/x")


# -- password sources, first found --------------------------------------------------------


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def password_of(store: PostgresStore) -> str | None:
    return store.target.password.reveal() if store.target.password else None


def test_the_password_in_the_locator_wins_over_every_file(tmp_path: Path) -> None:
    given = write_secret(tmp_path / "given.pw", "from-file\n")
    write_secret(tmp_path / "services" / "postgres.password", "from-services\n")
    store = PostgresStore.from_locator(f"postgresql://u:inline@h/db?file_root={tmp_path}", password_file=given)
    assert password_of(store) == "inline"


def test_then_the_password_file_first_line(tmp_path: Path) -> None:
    given = write_secret(tmp_path / "given.pw", "from-file\nsecond line\n")
    write_secret(tmp_path / "services" / "postgres.password", "from-services\n")
    store = PostgresStore.from_locator(f"postgresql://u@h/db?file_root={tmp_path}", password_file=given)
    assert password_of(store) == "from-file"


def test_then_the_services_password_under_file_root(tmp_path: Path) -> None:
    write_secret(tmp_path / "services" / "postgres.password", "from-services\n")
    assert password_of(PostgresStore.from_locator(f"postgresql://u@h/db?file_root={tmp_path}")) == "from-services"


def test_else_no_password_so_libpq_applies_its_own(tmp_path: Path) -> None:
    assert password_of(PostgresStore.from_locator(f"postgresql://u@h/db?file_root={tmp_path}")) is None


def test_a_missing_password_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.pw"):
        PostgresStore.from_locator(f"postgresql://u@h/db?file_root={tmp_path}", password_file=tmp_path / "nope.pw")


def test_a_password_file_readable_by_others_is_warned_about(tmp_path: Path, caplog) -> None:
    given = write_secret(tmp_path / "loose.pw", f"{SECRET}\n", mode=0o644)
    with caplog.at_level(logging.WARNING, logger="metalab.store"):
        store = PostgresStore.from_locator(f"postgresql://u@h/db?file_root={tmp_path}", password_file=given)
    assert password_of(store) == SECRET
    assert "loose.pw" in caplog.text and "chmod 600" in caplog.text and SECRET not in caplog.text


def test_open_store_and_discover_style_construction_do_not_connect(tmp_path: Path) -> None:
    # port 1 on loopback: nothing listens; constructing must not try
    store = open_store(f"postgresql://u:{SECRET}@127.0.0.1:1/db?file_root={tmp_path}")
    assert isinstance(store, PostgresStore) and store.kind == "postgres"
    assert store.file_root == tmp_path and store.files("e").directory == tmp_path / "e"


def test_describe_and_repr_show_stars_for_the_password(tmp_path: Path) -> None:
    store = PostgresStore.from_locator(f"postgresql://u:{SECRET}@h:5432/db?file_root={tmp_path}")
    for text in (store.describe(), repr(store), str(store), store.locator, repr(store.target), str(vars(store))):
        assert SECRET not in text, text
    assert "postgresql://u:***@h:5432/db" in store.describe() and str(tmp_path) in store.describe()


def test_a_password_from_a_file_is_not_shown_either(tmp_path: Path) -> None:
    write_secret(tmp_path / "services" / "postgres.password", f"{SECRET}\n")
    store = PostgresStore.from_locator(f"postgresql://u@h:5432/db?file_root={tmp_path}")
    assert SECRET not in store.describe() + repr(store) + repr(store.target)


def test_mask_postgres_locator_leaves_locators_without_password_alone(tmp_path: Path) -> None:
    plain = f"postgresql://u@h:5432/db?file_root={tmp_path}&sslmode=require"
    assert mask_postgres_locator(plain) == plain
    assert mask_postgres_locator("postgresql://u:@h/db?file_root=/x") == "postgresql://u:***@h/db?file_root=/x"


def test_importing_the_store_does_not_load_psycopg() -> None:
    code = (
        "import sys, metalab.store, metalab.store.postgres as p\n"
        "p.PostgresStore.from_locator('postgresql://u:x@127.0.0.1:1/db?file_root=/tmp/x')\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- index values ----------------------------------------------------------------------------


def test_to_jsonb_writes_non_finite_numbers_as_strings_float8_reads() -> None:
    text = to_jsonb({"a": math.nan, "b": [math.inf, -math.inf], "c": 1.5})
    assert json.loads(text) == {"a": "NaN", "b": ["Infinity", "-Infinity"], "c": 1.5}
    assert "\\u0000" not in to_jsonb({"s": "a\x00b"})


def test_a_line_batch_keeps_each_runs_current_line_made_fit_for_copy_and_jsonb() -> None:
    def line(**changes: object) -> str:
        fields = dict(run_id="r1", params={"x": 1}, seed=3, replicate=0, status="failed", started_at=1.0)
        return RunRecord(**{**fields, **changes}).to_json() + "\n"  # type: ignore[arg-type]

    batch = LineBatch()
    batch.add(line(status="success", started_at=1.0, metrics={"m": 0.5}))
    batch.add(line(status="failed", started_at=9.0))  # a later failure does not beat a success
    batch.add(line(run_id="r2", seed=2**70, metrics={"m": math.nan}, error="Traceback\x00"))
    batch.add("not json\n")
    batch.add('{"run_id": "r3"}\n')  # not a record
    assert len(batch) == 2
    rows = {row.split("\t")[0]: row.split("\t") for row in batch.copy_lines({("metric", "m"): 1})}
    assert rows["r1"][1] == "{0.5}" and json.loads(rows["r1"][2])["status"] == "success"
    r2 = json.loads(rows["r2"][2].replace("\\\\", "\\"))
    assert r2["seed"] is None and r2["metrics"] == {"m": "NaN"}  # beyond bigint; NaN as float8 reads it
    assert "\\u0000" not in rows["r2"][2] and rows["r2"][1] == "{NaN}"
    assert batch.catalogue.take() == (["metric", "param"], ["m", "x"], ["number", "number"])


def test_value_types_and_the_catalogue_hands_out_new_names_once() -> None:
    assert [value_type(v) for v in (None, True, 3, 2.5, "s", [1], {"a": 1})] == [
        "null", "bool", "number", "number", "string", "json", "json",
    ]
    catalogue = Catalogue()
    catalogue.add({"lr": 0.1, "opt": "sgd"}, {"loss": 1.0})
    assert catalogue.take() == (["metric", "param", "param"], ["loss", "lr", "opt"], ["number", "number", "string"])
    catalogue.add({"lr": 0.2, "opt": "adam"}, {"loss": 0.5})
    assert catalogue.take() is None  # nothing new: nothing to send
    catalogue.add({"lr": None, "opt": 3}, {"loss": 0.5})
    assert catalogue.take() == (["param", "param"], ["lr", "opt"], ["null", "number"])


def test_numbers_row_places_numeric_values_at_their_slots() -> None:
    import numpy as np

    slots = {("param", "lr"): 1, ("param", "opt"): 2, ("metric", "loss"): 4, ("metric", "flag"): 3}
    row = numbers_row(slots, {"lr": np.float32(0.5), "opt": "sgd", "unknown": 1}, {"loss": 10**400, "flag": True})
    assert row == [0.5]  # strings, bools and ints beyond float range have no number; trailing gaps are cut
    assert numbers_row(slots, {"lr": 2}, {"loss": float("nan")})[0] == 2.0
    assert numbers_row(slots, {}, {}) is None
    assert as_number(np.int64(3)) == 3.0 and as_number(np.bool_(True)) is None and as_number([1]) is None
    assert copy_array([1.5, None, float("nan"), float("-inf")]) == "{1.5,NULL,NaN,-Infinity}"
    assert copy_array(None) == "\\N"
