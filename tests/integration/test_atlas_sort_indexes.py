"""Sort indexes (metalab.store.sort_indexes) on real PostgreSQL behind a real Atlas: the services'
follower builds them for a large experiment, the runs pages then read over them (the plan says
so) and give exactly the pages the plain walk gave, and a build that was killed is redone."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.datastructures import QueryParams

import metalab
from atlas_support import Site, atlas_over, records_of
from cluster_support import wait_until
from metalab.atlas.asks import runs_query
from metalab.atlas.query import Catalogue
from metalab.store import open_store, sort_indexes
from metalab.store.index_schema import SORT_INDEXES_READ
from metalab.store.indexer import IndexFollower

pytestmark = pytest.mark.integration

WIDTHS = (8, 16, 32, 64)
LRS = (0.1, 0.01, 0.001)
# each filter, and what it keeps of a run's params
FILTERS = {
    "width <= 16": lambda p: p["width"] <= 16,
    "width = 16": lambda p: p["width"] == 16,
    "width in (8, 64)": lambda p: p["width"] in (8, 64),
    "(width = 8 or width >= 32) and lr = 0.01": lambda p: (p["width"] == 8 or p["width"] >= 32) and p["lr"] == 0.01,
    "width != 16 and lr >= 0.01": lambda p: p["width"] != 16 and p["lr"] >= 0.01,
    "width > 1000": lambda p: False,
}


@metalab.operation
def fit(params, seeds, capture):
    """Small widths have the largest losses: the runs a width filter keeps sit at one end of the loss order."""
    rng = seeds.rng()
    capture.metric("loss", 8 / params["width"] + params["lr"] + 0.01 * rng.random())
    capture.metric("accuracy", rng.random())


EXPERIMENT = metalab.Experiment(name="sorted", version="1", operation=fit,
                                params=metalab.grid(width=list(WIDTHS), lr=list(LRS)),
                                seeds=metalab.seeds(base=3, replicates=25))
EXP = EXPERIMENT.experiment_id


@pytest.fixture(scope="module")
def site(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with atlas_over(pg_server, tmp_path_factory.mktemp("sorted"), records_of(EXPERIMENT)) as found:
        yield found


def owner(site: Site) -> psycopg.Connection:
    return open_store(site.locator).connect()


def walk(site: Site, params: dict) -> list[str]:
    """The run ids of every page, following next_cursor (7 a page, so a filter spans pages)."""
    ids, cursor = [], None
    while True:
        page = site.json(site.runs_path(EXP), {**params, "limit": 7, **({"cursor": cursor} if cursor else {})})
        ids += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def expected(site: Site, keep: Any, descending: bool) -> list[str]:
    runs = [r for r in site.probe_records.values() if keep(r.params)]
    runs.sort(key=lambda r: (r.metrics["loss"], r.run_id), reverse=descending)
    return [r.run_id for r in runs]


def listed(site: Site) -> set[tuple[int, int]]:
    with owner(site) as conn:
        return set(conn.execute(SORT_INDEXES_READ, (EXP,)).fetchall())


def slots(site: Site) -> dict[str, int]:
    with owner(site) as conn:
        return dict(conn.execute("SELECT name, slot FROM metalab.catalogue WHERE experiment_id = %s", (EXP,)).fetchall())


def follow_once(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The services' follower, with this experiment's 300 runs counted as large, until its first
    pass is done and its sort-index builder has looked at the experiment."""
    monkeypatch.setattr(sort_indexes, "SORTED_FROM_RUNS", 300)
    follower = IndexFollower(open_store(site.locator), lambda: (EXP,), sort_indexes=True).start()
    try:
        wait_until(lambda: follower.passed_at is not None and follower.sorter.waiting() == 0, 60, "the sort indexes")
    finally:
        follower.stop()


def merged_plan(site: Site, where: str) -> str:
    """EXPLAIN of the statement behind the first page, as Atlas's session plans it."""
    with owner(site) as conn:
        catalogue = Catalogue(conn.execute("SELECT kind, name, type, slot FROM metalab.catalogue "
                                           "WHERE experiment_id = %s", (EXP,)).fetchall())
        query = runs_query(EXP, catalogue, QueryParams({"sort": "loss", "where": where}))
        query = dataclasses.replace(query, sort_indexes=frozenset(conn.execute(SORT_INDEXES_READ, (EXP,)).fetchall()))
        (_, statement, args), *_ = query.segments()
        rows = conn.execute(f"EXPLAIN {statement}", args, prepare=False).fetchall()  # as Index.page runs it
        return "\n".join(line for (line,) in rows)


def test_pages_over_sort_indexes_are_the_pages_of_the_plain_walk(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 runs: under the services' threshold, so Atlas's own follower built none
    assert len(site.probe_records) == 300 and listed(site) == set()
    asked = [(where, order) for where in FILTERS for order in ("asc", "desc")]
    before = {ask: walk(site, {"sort": "loss", "where": ask[0], "order": ask[1]}) for ask in asked}
    for (where, order), ids in before.items():
        assert ids == expected(site, FILTERS[where], order == "desc"), (where, order)

    follow_once(site, monkeypatch)
    s = slots(site)
    # every numeric param of few values, with every numeric metric
    assert listed(site) == {(s[p], s[m]) for p in ("width", "lr") for m in ("loss", "accuracy")}
    for ask, ids in before.items():
        assert walk(site, {"sort": "loss", "where": ask[0], "order": ask[1]}) == ids, ask
    name = sort_indexes.index_name(EXP, s["width"], s["loss"])
    assert name in merged_plan(site, "width <= 16")
    assert "runs_sorted_" not in merged_plan(site, "not (width <= 16)")  # a run without width passes a not

    follow_once(site, monkeypatch)  # chosen once: a second pass builds nothing more
    with owner(site) as conn:
        count = conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'runs_sorted_%'").fetchone()[0]
    assert count == 4


def test_an_index_whose_build_was_killed_is_not_used_and_is_built_again(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    follow_once(site, monkeypatch)
    s = slots(site)
    pair = (s["width"], s["loss"])
    name = sort_indexes.index_name(EXP, *pair)
    with owner(site) as conn:
        conn.autocommit = True
        conn.execute(f"DROP INDEX metalab.{name}")
        # a concurrent build that fails half way leaves its index invalid, as a killed one does
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON metalab.runs ((numbers[{pair[0]}]))")
        conn.execute("UPDATE metalab.experiments SET sort_indexes_planned = false WHERE experiment_id = %s", (EXP,))
    assert pair not in listed(site)
    assert walk(site, {"sort": "loss", "where": "width <= 16"}) == expected(site, FILTERS["width <= 16"], False)

    follow_once(site, monkeypatch)
    assert pair in listed(site)
    assert name in merged_plan(site, "width <= 16")
    assert walk(site, {"sort": "loss", "where": "width <= 16"}) == expected(site, FILTERS["width <= 16"], False)
