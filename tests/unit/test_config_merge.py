from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalab.config import deep_merge

keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=3))
tables = st.recursive(
    st.dictionaries(keys, scalars, max_size=4),
    lambda children: st.dictionaries(keys, st.one_of(scalars, children), max_size=4),
    max_leaves=12,
)
# The machine is shared and noisy: judge the property, not generation speed.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_tables_merge_key_by_key_at_every_depth():
    base = {"environments": {"slurm": {"user": "researcher", "services": {"partition": "cpu", "time": "1:00:00"}}}}
    local = {"environments": {"slurm": {"user": "jsmith", "services": {"partition": "mine"}}}}
    assert deep_merge(base, local) == {
        "environments": {"slurm": {"user": "jsmith", "services": {"partition": "mine", "time": "1:00:00"}}}
    }


def test_arrays_are_replaced_not_concatenated():
    assert deep_merge({"modules": ["a", "b"]}, {"modules": ["c"]}) == {"modules": ["c"]}


def test_a_table_replaces_a_scalar_and_vice_versa():
    assert deep_merge({"x": 1}, {"x": {"y": 2}}) == {"x": {"y": 2}}
    assert deep_merge({"x": {"y": 2}}, {"x": 1}) == {"x": 1}


@relaxed
@given(tables, tables)
def test_every_override_leaf_wins(base, override):
    merged = deep_merge(base, override)

    def leaves(table, prefix=()):
        for key, value in table.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key), value

    def lookup(table, path):
        for part in path:
            table = table[part]
        return table

    for path, value in leaves(override):
        got = lookup(merged, path)
        if isinstance(value, dict):  # an empty override table merges into whatever table was there
            assert isinstance(got, dict)
        else:
            assert got == value


@relaxed
@given(tables, tables)
def test_inputs_are_not_mutated(base, override):
    import copy

    before = (copy.deepcopy(base), copy.deepcopy(override))
    deep_merge(base, override)
    assert (base, override) == before


@relaxed
@given(tables)
def test_merging_with_empty_is_identity(table):
    assert deep_merge(table, {}) == table
    assert deep_merge({}, table) == table
