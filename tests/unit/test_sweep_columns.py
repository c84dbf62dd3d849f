"""The columns behind parallel coordinates and scatter (sweep_api._columns): run ids come as one
text, one per line, and an id with a newline in it (hand-edited records) is read again as an
array, so every id still lines up with its values. A fake index answers; the real one is in
tests/integration/test_atlas_sweeps.py."""

from __future__ import annotations

import struct

from starlette.datastructures import QueryParams

from metalab.atlas.query import Catalogue
from metalab.atlas.sweep_api import parallel_data

CATALOGUE = Catalogue([("param", "lr", "number", 1), ("metric", "loss", "number", 2)])


def packed(values: list[float]) -> bytes:
    """``array_send`` of a one-dimensional float8[]."""
    head = struct.pack(">iiiii", 1, 0, 701, len(values), 1)
    return head + b"".join(struct.pack(">id", 8, v) for v in values)


class FakeIndex:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.statements: list[str] = []

    def catalogue(self, experiment_id: str) -> Catalogue:
        return CATALOGUE

    def rows(self, statement: str, args: object = None, *, binary: bool = False) -> list[tuple]:
        self.statements.append(statement)
        if "run_counts" in statement:
            return [(len(self.ids),)]
        ids = "\n".join(self.ids) if "string_agg(run_id" in statement else self.ids
        return [(len(self.ids), ids, [0] * len(self.ids), packed([0.1] * len(self.ids)), packed([1.0] * len(self.ids)))]


class FakeAtlas:
    def __init__(self, index: FakeIndex) -> None:
        self.index = index


def test_run_ids_arrive_as_one_text_and_line_up_with_their_values() -> None:
    index = FakeIndex(["a1", "b2", "c3"])
    data = parallel_data(FakeAtlas(index), "exp-1", QueryParams({"metric": "loss"}))
    assert data["run_ids"] == ["a1", "b2", "c3"] and data["runs"] == 3
    assert [len(c["values"]) for c in data["columns"]] == [3, 3]
    assert sum("string_agg(run_id" in s for s in index.statements) == 1 and not any("array_agg(run_id)" in s for s in index.statements)


def test_an_id_with_a_newline_is_read_again_as_an_array() -> None:
    index = FakeIndex(["a\nb", "c"])
    data = parallel_data(FakeAtlas(index), "exp-1", QueryParams({"metric": "loss"}))
    assert data["run_ids"] == ["a\nb", "c"] and data["runs"] == 2
    assert any("array_agg(run_id)" in s for s in index.statements)
