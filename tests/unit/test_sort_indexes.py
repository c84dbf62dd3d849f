"""Which sort indexes are made (metalab.store.sort_indexes) and when a runs page reads over one
(RunsQuery in metalab.atlas.query): the pure parts. The pages themselves, against real
PostgreSQL, are in tests/integration/test_atlas_sort_indexes.py."""

from __future__ import annotations

import dataclasses
import time

import pytest
from starlette.datastructures import QueryParams

from metalab.atlas.asks import runs_query
from metalab.atlas.query import Catalogue
from metalab.store.sort_indexes import MAX_INDEXES, MAX_VALUES, SortIndexBuilder, choose_pairs, index_name

CATALOGUE = Catalogue([
    ("metric", "loss", "number", 1), ("metric", "note", "string", 2), ("param", "width", "number", 3),
    ("param", "lr", "number", 4), ("param", "opt", "string", 5), ("param", "tag", "mixed", 6),
    ("param", "flag", "bool", 7),
])


def query(where: str, sort: str = "loss", pairs: frozenset = frozenset({(3, 1), (4, 1)})):
    q = runs_query("exp-1", CATALOGUE, QueryParams({"sort": sort, "where": where}))
    return dataclasses.replace(q, sort_indexes=pairs)


def keyed_statement(q) -> str:
    return q.segments()[0][1]


def test_pairs_are_the_params_of_few_values_with_every_metric_in_slot_order() -> None:
    # param slot -> distinct values: 1 value (a constant), a grid axis, too many values
    assert choose_pairs([(5, 3), (4, 1), (6, MAX_VALUES + 1), (3, MAX_VALUES)], [2, 1]) == [(3, 1), (3, 2), (5, 1), (5, 2)]
    assert choose_pairs([(3, 10)], []) == [] and choose_pairs([], [1]) == []
    many = choose_pairs([(slot, 4) for slot in range(10, 40)], [1, 2])
    assert len(many) == MAX_INDEXES and many[0] == (10, 1)


def test_index_names_fit_postgresql_and_tell_experiments_apart() -> None:
    long = "x" * 500 + "-1"
    assert len(index_name(long, 9999, 9999).encode()) <= 63
    assert index_name("a-1", 3, 1) != index_name("b-1", 3, 1) != index_name("a-1", 1, 3)
    assert index_name("a-1", 3, 1) == index_name("a-1", 3, 1)


@pytest.mark.parametrize("where, candidates", [
    ("width <= 16", [(3, 1)]),
    ("width in (8, 16)", [(3, 1)]),
    ("(width = 8 or width > 100) and lr = 0.1", [(3, 1), (4, 1)]),
    ("width = 8 and width < 100", [(3, 1)]),
    ("width = 8 or lr = 0.1", []),  # two params in one part: no single param to merge over
    ("not width = 8", []),  # a run without width passes it
    ("opt = 'sgd'", []),  # text
    ("tag = 'x'", []),  # a text value of a mixed field: not in numbers
    ("flag = true", []),
    ("status = success", []),
])
def test_a_page_can_merge_over_a_condition_on_one_numeric_param_only(where: str, candidates: list) -> None:
    assert query(where).merge_candidates() == candidates


def test_only_a_metric_sort_merges() -> None:
    assert query("width <= 16", sort="lr").merge_candidates() == []
    assert query("width <= 16", sort="run_id").merge_candidates() == []


def test_the_page_reads_over_a_sort_index_only_when_one_is_listed_for_the_pair() -> None:
    assert "WITH RECURSIVE" in keyed_statement(query("width <= 16"))
    assert "WITH RECURSIVE" not in keyed_statement(query("width <= 16", pairs=frozenset({(4, 1)})))
    assert "WITH RECURSIVE" not in keyed_statement(query("width <= 16", pairs=frozenset()))
    # the first condition whose pair is listed; the others filter each value's runs
    statement = keyed_statement(query("width <= 16 and lr = 0.1", pairs=frozenset({(4, 1)})))
    assert "min(numbers[4])" in statement and "numbers[3] <=" in statement


class UnreachableStore:
    """A store whose database refuses every connection; counts the attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self, **_: object) -> None:
        self.attempts += 1
        raise OSError("connection refused")

    def scrub(self, error: BaseException) -> str:
        return str(error)


def test_a_build_that_fails_is_logged_and_not_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    store = UnreachableStore()
    builder = SortIndexBuilder(store).start()
    try:
        builder.offer("exp-1")
        deadline = time.monotonic() + 10
        while builder.waiting() and time.monotonic() < deadline:
            time.sleep(0.01)
        builder.offer("exp-1")  # failed once: not offered again
        assert builder.waiting() == 0 and store.attempts == 1
    finally:
        builder.stop()
    assert "no sort indexes for exp-1 (connection refused)" in caplog.text
