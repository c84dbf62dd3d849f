"""Atlas queries: what a dashboard request asks (sort, where, cursor, columns) checked against the
experiment's catalogue and turned into read-only SQL in which every name and value is a bind
parameter, never part of the SQL text."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.atlas.asks import (
    bounded_int,
    default_sort,
    differing,
    run_columns,
    runs_query,
    value_of,
)
from metalab.atlas.query import (
    COLUMNS,
    MAX_DEPTH,
    RUN_FIELDS,
    SHOWN_STATUS,
    STATUSES,
    And,
    Args,
    Catalogue,
    Condition,
    Cursor,
    Field,
    Filter,
    In,
    Not,
    Or,
    RunsQuery,
    cursor_for,
    decode_cursor,
    encode_cursor,
    histogram_sql,
    parse_condition,
    parse_filter,
    parse_where,
    plot_sql,
    summary_sql,
    where_sql,
    where_text,
)
from metalab.errors import QueryError
from metalab.store.records import STALE_AFTER

PLACEHOLDER = re.compile(r"%\((p\d+)\)s")
# The only literals the SQL text may hold: the finite-value guards.
# the finite-number guards, and the shown status's (query.SHOWN_STATUS) statuses and staleness
FIXED_LITERALS = {"'-Infinity'", "'Infinity'", "'running'", "'interrupted'", f"'{STALE_AFTER:g} seconds'"}
EXP = "exp-1"

# A realistic catalogue: every entry has a slot (the index gives one to each), but only numbers
# and mixed entries are read from ``numbers[slot]``.
CATALOGUE = Catalogue([
    ("param", "lr", "number", 1),
    ("param", "optimizer", "string", 2),
    ("param", "batch", "mixed", 3),
    ("param", "flag", "bool", 4),
    ("param", "shared", "number", 5),
    ("param", "seed", "number", 6),  # shadowed by the run column of the same name
    ("metric", "shared", "number", 7),
    ("metric", "note", "string", 8),
    ("metric", "loss", "number", 9),
    ("metric", "acc", "number", 10),
])


def field(ref: str) -> Field:
    return CATALOGUE.field(ref)


def text_field(ref: str) -> Field:
    """The field a text comparison reads: from the JSON by name (so no slot)."""
    f = field(ref)
    return Field(f.kind, f.name, "string", None)


def cond(text: str) -> Condition:
    return parse_condition(text, CATALOGUE)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def like(text: str) -> str:
    """The LIKE pattern a ``~`` condition should bind: the text, escaped, anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def assert_bound(sql: str, args: Args, secrets: list[str] = ()) -> None:  # type: ignore[assignment]
    """Placeholders and Args agree exactly, the SQL holds no literal but the fixed guards, and no
    secret (a name or value a request or catalogue supplied) is part of the SQL text."""
    assert set(PLACEHOLDER.findall(sql)) == set(args)
    assert set(args) == {f"p{i}" for i in range(len(args))}
    rest = PLACEHOLDER.sub("", sql)
    assert "%" not in rest  # a stray % would break the driver's parameter substitution
    assert set(re.findall(r"'[^']*'", rest)) <= FIXED_LITERALS
    assert rest.count("'") == 2 * len(re.findall(r"'[^']*'", rest))
    assert set(re.findall(r'"[^"]*"', rest)) <= {'"C"'}
    assert rest.count('"') == 2 * len(re.findall(r'"[^"]*"', rest))
    for secret in secrets:
        assert secret not in sql, (secret, sql)


class FakeParams:
    """Starlette's QueryParams in miniature: a dict of lists."""

    def __init__(self, **values: str | list[str]) -> None:
        self.values = {k: v if isinstance(v, list) else [v] for k, v in values.items()}

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self.values.get(key)
        return values[-1] if values else default

    def getlist(self, key: str) -> list[str]:
        return list(self.values.get(key, []))


# -- Catalogue.field ----------------------------------------------------------------------------


def test_bare_names_resolve_to_the_param_or_metric():
    assert field("lr") == Field("param", "lr", "number", 1)
    assert field("optimizer") == Field("param", "optimizer", "string", 2)
    assert field("loss") == Field("metric", "loss", "number", 9)
    assert field("note") == Field("metric", "note", "string", 8)


def test_prefixed_names_resolve_to_their_kind():
    assert field("params.lr") == Field("param", "lr", "number", 1)
    assert field("metrics.loss") == Field("metric", "loss", "number", 9)
    assert field("params.shared") == Field("param", "shared", "number", 5)
    assert field("metrics.shared") == Field("metric", "shared", "number", 7)


def test_the_wrong_prefix_is_unknown():
    with pytest.raises(QueryError, match=r"unknown field 'params\.loss'"):
        field("params.loss")
    with pytest.raises(QueryError, match=r"unknown field 'metrics\.lr'"):
        field("metrics.lr")


@pytest.mark.parametrize(("name", "type_"), [
    ("run_id", "string"), ("status", "string"), ("started_at", "time"),
    ("duration", "number"), ("replicate", "number"), ("seed", "number"),
])
def test_run_columns_resolve(name, type_):
    got = field(name)
    assert got == Field("column", name, type_, None)
    assert got.ref == name
    assert COLUMNS[name] == type_


def test_a_run_column_shadows_a_param_of_the_same_name():
    assert field("seed") == Field("column", "seed", "number", None)
    assert field("params.seed") == Field("param", "seed", "number", 6)


def test_surrounding_spaces_in_a_request_are_ignored():
    assert field("  lr \t") == Field("param", "lr", "number", 1)
    assert field(" metrics.loss ") == Field("metric", "loss", "number", 9)


def test_a_name_that_is_both_param_and_metric_asks_for_the_prefix():
    with pytest.raises(QueryError) as caught:
        field("shared")
    message = str(caught.value)
    assert message == "'shared' is both a param and a metric: say params.shared or metrics.shared"


def test_an_unknown_name_lists_the_known_fields():
    with pytest.raises(QueryError) as caught:
        field("los")
    assert str(caught.value) == (
        "unknown field 'los': this experiment has params batch, flag, lr, optimizer, seed, shared; "
        "metrics acc, loss, note, shared; and run columns run_id, status, started_at, duration, "
        "replicate, seed"
    )


def test_an_empty_catalogue_says_none():
    with pytest.raises(QueryError, match="has params none; metrics none; and run columns run_id"):
        Catalogue([]).field("loss")


def test_an_empty_name_is_unknown():
    with pytest.raises(QueryError, match="unknown field ''"):
        field("   ")


ODD_NAMES = [
    "learning rate", "it's", 'say "hi"', "x; DROP TABLE runs; --", "a.b", "params", "ünï☃",
    "100%", "back\\slash", "%(p0)s", "numbers[1]", "run_id", "') OR 1=1 --",
]


def sql_for(catalogue: Catalogue, ref: str) -> list[tuple[str, dict]]:
    sort = catalogue.field(ref)
    conditions = (Condition(sort, "=", "v"), Condition(sort, "~", "w"))
    query = RunsQuery(EXP, conditions, sort, after=Cursor(0, "k", "r"))
    return [(sql, dict(args)) for _, sql, args in query.segments()] + [query.export()]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_in_the_catalogue_work_and_stay_out_of_the_sql(name):
    catalogue = Catalogue([("param", name, "string", 1), ("metric", "m", "number", 2)])
    expected = Field("param", name, "string", 1)
    if name not in COLUMNS:
        assert catalogue.field(name) == expected
    assert catalogue.field(f"params.{name}") == expected
    args = Args()
    assert Condition(expected, "=", "v").sql(args) == '(params ->> %(p0)s) COLLATE "C" = %(p1)s'
    assert args == {"p0": name, "p1": "v"}
    # the SQL is exactly what a plain name gives; only the bound name differs
    plain = sql_for(Catalogue([("param", "plain", "string", 1)]), "params.plain")
    odd = sql_for(catalogue, f"params.{name}")
    assert [sql for sql, _ in odd] == [sql for sql, _ in plain]
    for (sql, odd_args), (_, plain_args) in zip(odd, plain, strict=True):
        assert_bound(sql, odd_args)
        assert odd_args == {k: name if v == "plain" else v for k, v in plain_args.items()}


@pytest.mark.parametrize("name", [n for n in ODD_NAMES if not set(n) & set(";<>=!~&")])
def test_odd_names_in_a_where(name):
    catalogue = Catalogue([("param", name, "string", 1)])
    assert parse_where([f"params.{name} = v"], catalogue) == [Condition(Field("param", name, "string"), "=", "v")]


def test_numeric_field_refuses_text_and_the_string_columns():
    assert CATALOGUE.numeric_field("loss", "a plot") == field("loss")
    assert CATALOGUE.numeric_field("duration", "a plot") == field("duration")
    assert CATALOGUE.numeric_field("batch", "a plot") == field("batch")
    with pytest.raises(QueryError, match="^a histogram needs a numeric field; params.optimizer is string$"):
        CATALOGUE.numeric_field("optimizer", "a histogram")
    with pytest.raises(QueryError, match="^y needs a numeric field; run_id is string$"):
        CATALOGUE.numeric_field("run_id", "y")
    with pytest.raises(QueryError, match="^y needs a numeric field; started_at is time$"):
        CATALOGUE.numeric_field("started_at", "y")
    with pytest.raises(QueryError, match="^y needs a numeric field; params.flag is bool$"):
        CATALOGUE.numeric_field("flag", "y")


def test_field_numeric_and_expression():
    args = Args()
    assert field("loss").numeric and field("batch").numeric and field("duration").numeric
    assert not field("note").numeric and not field("flag").numeric and not field("started_at").numeric
    assert not Field("param", "x", "number", None).numeric  # no slot: read from the JSON
    assert field("loss").expression(args) == "numbers[9]"
    assert field("duration").expression(args) == "duration"
    assert field("started_at").expression(args) == "started_at"
    assert field("run_id").expression(args) == 'run_id COLLATE "C"'
    assert args == {}
    assert field("note").expression(args) == '(metrics ->> %(p0)s) COLLATE "C"'
    assert field("optimizer").expression(args) == '(params ->> %(p1)s) COLLATE "C"'
    assert args == {"p0": "note", "p1": "optimizer"}


# Names a catalogue may hold (not surrounded by spaces: those are the bug below).
plain_names = st.text(min_size=1, max_size=12).filter(lambda s: s == s.strip() and s != "")


@given(st.lists(st.tuples(st.sampled_from(["param", "metric"]), plain_names,
                          st.sampled_from(["number", "string", "bool", "mixed", "json"]),
                          st.integers(1, 50)), max_size=8))
def test_every_field_is_reached_by_its_ref(entries):
    catalogue = Catalogue(entries)
    for f in catalogue.fields:
        assert catalogue.field(f.ref) == f


def test_a_name_with_a_trailing_space_is_reached_by_its_ref():
    catalogue = Catalogue([("param", "x ", "string", 1)])
    (f,) = catalogue.fields
    assert catalogue.field(f.ref) == f  # f.ref == "params.x " -> "unknown field 'params.x'"


# -- the safety property ------------------------------------------------------------------------


def marked(middle: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text no SQL keyword or number contains, so ``marker not in sql`` means something."""
    return middle.map(lambda s: f"zq{s}qz")


names = marked(st.text(max_size=10))
entries = st.tuples(st.sampled_from(["param", "metric"]), names,
                    st.sampled_from(["number", "string", "bool", "mixed", "json"]),
                    st.one_of(st.none(), st.integers(0, 99)))
catalogues = st.lists(entries, min_size=1, max_size=6).map(Catalogue)
text_values = marked(st.text(max_size=10))
values = st.one_of(text_values, st.floats(), st.integers(), st.booleans(), st.datetimes())
ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "~"])


def secrets_of(catalogue: Catalogue, *more: object) -> list[str]:
    return [f.name for f in catalogue.fields] + [m for m in more if isinstance(m, str)]


@settings(max_examples=200)
@given(st.data(), catalogues, marked(st.text(max_size=6)))
def test_no_name_or_value_is_ever_part_of_the_sql(data, catalogue, experiment):
    fields = catalogue.fields + [catalogue.field(c) for c in COLUMNS]
    pick = st.sampled_from(fields)
    conditions = tuple(data.draw(st.lists(st.builds(Condition, pick, ops, values), max_size=4)))
    sort = data.draw(pick)
    key = data.draw(st.one_of(st.none(), text_values, st.floats(), st.integers(), st.datetimes()))
    run_id = data.draw(text_values)
    after = data.draw(st.one_of(st.none(), st.builds(Cursor, st.sampled_from([0, 1]), st.just(key), st.just(run_id))))
    limit = data.draw(st.integers(1, 500))
    secrets = secrets_of(catalogue, experiment, key, run_id, *(c.value for c in conditions))

    statements = []
    query = RunsQuery(experiment, conditions, sort, data.draw(st.booleans()), limit, after)
    for segment, sql, args in query.segments():
        assert segment in (0, 1)
        assert args[PLACEHOLDER.findall(sql)[-1]] == limit + 1
        statements.append((sql, args))
    statements.append(query.export())
    group = data.draw(st.one_of(st.none(), pick))
    statements.append(plot_sql(experiment, data.draw(pick), data.draw(pick), group, conditions))
    statements.append(histogram_sql(experiment, data.draw(pick), data.draw(st.integers(1, 200)), conditions))
    statements.append(summary_sql(experiment, data.draw(st.lists(pick, max_size=4))))
    for condition in conditions:
        args = Args()
        statements.append((condition.sql(args), args))

    for sql, args in statements:
        assert_bound(sql, args, secrets)
        for name in PLACEHOLDER.findall(sql):
            assert name in args
    # every value a condition compares with is bound (as itself, as a LIKE pattern, or as JSON)
    for condition in conditions:
        args = Args()
        condition.sql(args)
        bound = list(args.values())
        value = condition.value
        if isinstance(value, bool) and condition.field.kind != "column":
            assert json.dumps(value) in bound and condition.field.name in bound
        elif condition.op == "~":
            assert like(str(value)) in bound
        else:
            assert any(v is value for v in bound)
        if not condition.field.numeric and condition.field.kind != "column":
            assert condition.field.name in bound


# Names and values without what the filter language stops at (operators, separators, a ')').
safe_middle = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Z"], blacklist_characters="<>=!~;&|)"),
    max_size=8,
)
safe_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Z"], blacklist_characters=";&|)"),
    max_size=8,
)


@settings(max_examples=150)
@given(st.lists(marked(safe_middle), min_size=1, max_size=4, unique=True),
       st.lists(st.tuples(ops, marked(safe_values)), min_size=1, max_size=4), st.data())
def test_parsed_text_conditions_bind_their_names_and_values(text_names, comparisons, data):
    catalogue = Catalogue([("param", n, "string", i + 1) for i, n in enumerate(text_names)])
    refs = [data.draw(st.sampled_from(text_names)) for _ in comparisons]
    texts = [f"{ref} {op} {value}" for ref, (op, value) in zip(refs, comparisons, strict=True)]
    conditions = parse_where([" and ".join(texts)], catalogue)
    assert [(c.field.name, c.op, c.value) for c in conditions] == [
        (ref, op, value) for ref, (op, value) in zip(refs, comparisons, strict=True)
    ]
    sql, args = RunsQuery(EXP, tuple(conditions), catalogue.field(refs[0])).segments()[0][1:]
    assert_bound(sql, args, [*text_names, *(v for _, v in comparisons)])


@given(st.floats(allow_nan=False), st.integers(1, 99))
def test_parsed_numbers_use_the_slot_and_bind_the_number(number, slot):
    catalogue = Catalogue([("metric", "zqmetricqz", "number", slot)])
    (condition,) = parse_where([f"zqmetricqz >= {number!r}"], catalogue)
    assert condition.value == number
    args = Args()
    assert condition.sql(args) == f"numbers[{slot}] >= %(p0)s"
    assert args == {"p0": number}


# -- parse_where / parse_condition --------------------------------------------------------------


@pytest.mark.parametrize(("text", "op", "sql_op"), [
    ("loss < 0.2", "<", "<"), ("loss <= 0.2", "<=", "<="), ("loss > 0.2", ">", ">"),
    ("loss >= 0.2", ">=", ">="), ("loss = 0.2", "=", "="), ("loss == 0.2", "=", "="),
    ("loss != 0.2", "!=", "<>"), ("loss<0.2", "<", "<"), ("loss>=0.2", ">=", ">="),
    ("  loss   !=   0.2  ", "!=", "<>"),
])
def test_operators(text, op, sql_op):
    condition = cond(text)
    assert condition == Condition(field("loss"), op, 0.2)
    args = Args()
    assert condition.sql(args) == f"numbers[9] {sql_op} %(p0)s"
    assert args == {"p0": 0.2}


def test_contains_on_text_is_an_escaped_like():
    condition = cond("optimizer ~ ad")
    assert condition == Condition(text_field("optimizer"), "~", "ad")
    args = Args()
    assert condition.sql(args) == '(params ->> %(p0)s) COLLATE "C" LIKE %(p1)s'
    assert args == {"p0": "optimizer", "p1": "%ad%"}
    args = Args()
    cond("note ~ 50%_a\\b").sql(args)
    assert args["p1"] == "%50\\%\\_a\\\\b%"


@pytest.mark.parametrize("text", [
    "lr = 0.01 and status = failed", "lr = 0.01 AND status = failed", "lr = 0.01&&status = failed",
    "lr = 0.01 && status = failed", "lr = 0.01; status = failed", "lr = 0.01;status = failed",
    "lr = 0.01 ;; status = failed;", "lr = 0.01\nand\tstatus = failed",
])
def test_separators(text):
    assert parse_where([text], CATALOGUE) == [
        Condition(field("lr"), "=", 0.01),
        Condition(field("status"), "=", "failed"),
    ]


def test_several_texts_add_up_and_blank_parts_are_skipped():
    got = parse_where(["loss < 1", "", " ; ", "acc > 0.5 and optimizer = sgd"], CATALOGUE)
    assert got == [
        Condition(field("loss"), "<", 1.0),
        Condition(field("acc"), ">", 0.5),
        Condition(text_field("optimizer"), "=", "sgd"),
    ]
    assert parse_where([], CATALOGUE) == []


def test_and_inside_a_name_is_not_a_separator():
    catalogue = Catalogue([("param", "brand", "string", 1), ("param", "and", "string", 2)])
    assert parse_where(["brand = sandy"], catalogue) == [Condition(Field("param", "brand", "string"), "=", "sandy")]


@pytest.mark.parametrize(("raw", "value"), [
    ('"adam"', "adam"), ("'adam'", "adam"), ("\"it's\"", "it's"), ("'say \"hi\"'", 'say "hi"'),
    ("\"adam'", "\"adam'"), ("'", "'"), ("adam w", "adam w"), ('""', ""),
])
def test_quotes_are_stripped(raw, value):
    assert cond(f"optimizer = {raw}") == Condition(text_field("optimizer"), "=", value)


def test_a_quoted_value_may_hold_a_separator():
    assert parse_where(['optimizer = "rock and roll"'], CATALOGUE) == [
        Condition(text_field("optimizer"), "=", "rock and roll")
    ]


@pytest.mark.parametrize(("raw", "number"), [
    ("0.01", 0.01), ("3", 3.0), ("1e-3", 0.001), ("-2.5", -2.5), ("-1E+10", -1e10), (".5", 0.5),
    ("-7", -7.0), ("'0.5'", 0.5), ("inf", math.inf), ("-inf", -math.inf), ("1e999", math.inf),
])
def test_numbers_for_numeric_fields(raw, number):
    condition = cond(f"loss < {raw}")
    assert condition == Condition(field("loss"), "<", number)
    assert type(condition.value) is float


@pytest.mark.parametrize("raw", ["abc", "nan", "NaN", "0.1.2", "1e", "--1", "''"])
def test_a_non_number_for_a_number_field_names_the_field(raw):
    with pytest.raises(QueryError) as caught:
        cond(f"loss < {raw}")
    unquoted = raw.strip("'") if raw == "''" else raw
    assert str(caught.value) == f"metrics.loss is a number; {unquoted!r} is not"


def test_a_non_number_for_a_number_column_names_the_column():
    assert cond("duration > 1.5") == Condition(field("duration"), ">", 1.5)
    assert cond("replicate = 2") == Condition(field("replicate"), "=", 2.0)
    with pytest.raises(QueryError, match="^duration is a number; 'slow' is not$"):
        cond("duration > slow")
    with pytest.raises(QueryError, match="^seed is a number; 'x' is not$"):
        cond("seed = x")


def test_mixed_fields_compare_numbers_as_numbers_and_the_rest_as_text():
    assert cond("batch = 32") == Condition(field("batch"), "=", 32.0)
    text = cond("batch = auto")
    assert text == Condition(Field("param", "batch", "string", None), "=", "auto")
    args = Args()
    assert text.sql(args) == '(params ->> %(p0)s) COLLATE "C" = %(p1)s'
    assert args == {"p0": "batch", "p1": "auto"}
    assert cond("batch ~ aut").value == "aut"


def test_text_fields_compare_as_text_even_for_numbers():
    assert cond("optimizer = 0.1") == Condition(text_field("optimizer"), "=", "0.1")
    assert cond("note < 5") == Condition(text_field("note"), "<", "5")


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("false", False), ("TRUE", True), ("'False'", False)])
def test_bool_fields_take_true_and_false(raw, value):
    condition = cond(f"flag = {raw}")
    assert condition == Condition(field("flag"), "=", value)
    args = Args()
    assert condition.sql(args) == "(params -> %(p0)s) = %(p1)s::jsonb"
    assert args == {"p0": "flag", "p1": json.dumps(value)}
    negated = cond(f"flag != {raw}")
    args = Args()
    assert negated.sql(args) == "(params -> %(p0)s) <> %(p1)s::jsonb"


def test_bool_fields_with_other_words_compare_as_text():
    assert cond("flag = yes") == Condition(Field("param", "flag", "string", None), "=", "yes")
    assert cond("flag < true") == Condition(Field("param", "flag", "string", None), "<", "true")


@pytest.mark.parametrize(("text", "op", "value"), [
    ("status = success", "=", "success"), ("status == failed", "=", "failed"),
    ("status != failed", "!=", "failed"), ("status = 'success'", "=", "success"),
])
def test_status_takes_success_or_failed(text, op, value):
    condition = cond(text)
    assert condition == Condition(field("status"), op, value)
    args = Args()
    assert condition.sql(args) == f'status COLLATE "C" {"<>" if op == "!=" else "="} %(p0)s'
    assert args == {"p0": value}


@pytest.mark.parametrize("text", ["status = done", "status < success", "status ~ fail", "status = Success"])
def test_status_refuses_other_values_and_operators(text):
    with pytest.raises(QueryError, match="^status can be = or != to success or failed or running or interrupted, not "):
        cond(text)


@pytest.mark.parametrize("value", ["running", "interrupted"])
def test_running_and_interrupted_compare_the_status_atlas_shows(value):
    """A running row whose heartbeat stopped shows as interrupted: those two compare the shown
    status (SHOWN_STATUS), bound like any value; success and failed the stored one."""
    args = Args()
    assert cond(f"status = {value}").sql(args) == f'({SHOWN_STATUS}) COLLATE "C" = %(p0)s'
    assert args == {"p0": value}
    assert "finished_at < now() - interval '60 seconds'" in SHOWN_STATUS
    args = Args()
    assert In(field("status"), ("failed", value)).sql(args) == f'({SHOWN_STATUS}) COLLATE "C" IN (%(p0)s, %(p1)s)'
    assert In(field("status"), ("failed", "success")).sql(Args()) == 'status COLLATE "C" IN (%(p0)s, %(p1)s)'
    assert f"{SHOWN_STATUS} AS status" in RUN_FIELDS


def test_started_at_takes_an_iso_time():
    assert cond("started_at >= 2026-01-31T12:00:00") == Condition(
        field("started_at"), ">=", datetime(2026, 1, 31, 12, 0, 0)
    )
    aware = cond("started_at < '2026-01-31T12:00:00+02:00'")
    assert aware.value == datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=2)))
    assert cond("started_at > 2026-01-31").value == datetime(2026, 1, 31)
    with pytest.raises(QueryError, match=r"^started_at compares with a time like 2026-01-31T12:00:00, not 'yesterday'$"):
        cond("started_at > yesterday")


def test_contains_on_started_at_blames_the_operator():
    with pytest.raises(QueryError, match=r"^~ \(contains\) is for text; started_at is time$"):
        cond("started_at ~ 2026-01-01")


@pytest.mark.parametrize("ref", ["loss", "duration", "batch"])
def test_contains_on_a_numeric_field_is_an_error(ref):
    with pytest.raises(QueryError, match=r"^~ \(contains\) is for text; "):
        cond(f"{ref} ~ 1")


@pytest.mark.parametrize("text", ["loss <", "loss =   ", "loss", "< 3", "", "   ", "= ="])
def test_a_condition_without_field_op_and_value_is_an_error(text):
    with pytest.raises(QueryError, match="^cannot read the condition .*: write FIELD OP VALUE, OP one of"):
        cond(text)


def test_an_unknown_field_in_a_condition_is_an_error():
    with pytest.raises(QueryError, match="^unknown field 'los': this experiment has params"):
        cond("los < 1")


def test_a_field_name_with_spaces_parses():
    catalogue = Catalogue([("metric", "val loss", "number", 3)])
    assert parse_where(["val loss < 0.5"], catalogue) == [Condition(catalogue.field("val loss"), "<", 0.5)]


@given(st.text(max_size=40))
def test_errors_from_any_where_text_are_one_line(text):
    try:
        parse_where([text], CATALOGUE)
    except QueryError as error:
        assert "\n" not in str(error) and "\r" not in str(error)
        assert str(error)


@pytest.mark.parametrize("text", ["loss\n<\n0.2 and\n los < 1", "optimizer = 'a\nb' and x\n= 1", "\n<\n"])
def test_multiline_errors_are_one_line(text):
    with pytest.raises(QueryError) as caught:
        parse_where([text], CATALOGUE)
    assert "\n" not in str(caught.value)


# -- filters: or, in, not, parentheses ----------------------------------------------------------


def filt(text: str) -> Filter | None:
    return parse_filter(text, CATALOGUE)


def sql_of(node: Filter) -> tuple[str, dict]:
    args = Args()
    return node.sql(args), dict(args)


LR, LOSS, ACC, ADAM = cond("lr = 0.1"), cond("loss < 0.2"), cond("acc > 0.5"), cond("optimizer = adam")


@pytest.mark.parametrize(("text", "tree"), [
    ("lr = 0.1 or loss < 0.2 and acc > 0.5", Or((LR, And((LOSS, ACC))))),
    ("lr = 0.1 and loss < 0.2 or acc > 0.5", Or((And((LR, LOSS)), ACC))),
    ("lr = 0.1 || loss < 0.2 && acc > 0.5", Or((LR, And((LOSS, ACC))))),
    ("lr = 0.1||loss < 0.2&&acc > 0.5", Or((LR, And((LOSS, ACC))))),
    ("lr = 0.1 OR loss < 0.2 AnD acc > 0.5", Or((LR, And((LOSS, ACC))))),
    ("lr = 0.1 or loss < 0.2; acc > 0.5", Or((LR, And((LOSS, ACC))))),
    ("lr = 0.1 or loss < 0.2 or acc > 0.5", Or((LR, LOSS, ACC))),
    ("lr = 0.1 and loss < 0.2 and acc > 0.5", And((LR, LOSS, ACC))),
    ("(lr = 0.1 or loss < 0.2) and acc > 0.5", And((Or((LR, LOSS)), ACC))),
    ("lr = 0.1 and (loss < 0.2 or acc > 0.5)", And((LR, Or((LOSS, ACC))))),
    ("(lr = 0.1 and loss < 0.2) or acc > 0.5", Or((And((LR, LOSS)), ACC))),
    ("(lr = 0.1)", LR), ("((lr = 0.1))", LR), ("(  lr = 0.1\n)", LR),
    ("(lr=0.1)or(loss<0.2)", Or((LR, LOSS))), ("(lr = 0.1)and(loss < 0.2)", And((LR, LOSS))),
    ("((lr = 0.1 or loss < 0.2) and (acc > 0.5 or optimizer = adam)) or lr = 0.1",
     Or((And((Or((LR, LOSS)), Or((ACC, ADAM)))), LR))),
    ("(lr = 0.1 or (loss < 0.2 or acc > 0.5))", Or((LR, Or((LOSS, ACC))))),  # a group stays a group
    ("not lr = 0.1", Not(LR)), ("NOT lr = 0.1 or loss < 0.2", Or((Not(LR), LOSS))),
    ("not (lr = 0.1 or loss < 0.2)", Not(Or((LR, LOSS)))), ("not(lr = 0.1)", Not(LR)),
    ("not not lr = 0.1", Not(Not(LR))), ("lr = 0.1 and not loss < 0.2", And((LR, Not(LOSS)))),
    ("lr = 0.1 ; ; loss < 0.2 ;", And((LR, LOSS))),
])
def test_and_binds_tighter_than_or_and_parentheses_group(text, tree):
    assert filt(text) == tree


def test_a_blank_filter_is_none():
    assert filt("") is None and filt("  ; ;") is None


def test_trees_give_parenthesised_sql_with_every_value_bound():
    assert sql_of(filt("lr = 0.1 or loss < 0.2 and not optimizer in (adam, 'a, b')")) == (
        "(numbers[1] = %(p0)s OR (numbers[9] < %(p1)s AND "
        '(NOT coalesce((params ->> %(p2)s) COLLATE "C" IN (%(p3)s, %(p4)s), false))))',
        {"p0": 0.1, "p1": 0.2, "p2": "optimizer", "p3": "adam", "p4": "a, b"},
    )
    assert sql_of(filt("not (lr = 0.1 or flag = true)")) == (
        "(NOT coalesce((numbers[1] = %(p0)s OR (params -> %(p1)s) = %(p2)s::jsonb), false))",
        {"p0": 0.1, "p1": "flag", "p2": "true"},
    )


def test_where_sql_ands_the_filters_of_every_text():
    filters = parse_where(["lr = 0.1 or loss < 0.2", "(acc > 0.5 and optimizer = adam)", " ; "], CATALOGUE)
    assert filters == [Or((LR, LOSS)), ACC, ADAM]  # each text's top-level ands, flattened
    args = Args()
    assert where_sql(EXP, filters, args) == (
        "experiment_id = %(p0)s AND (numbers[1] = %(p1)s OR numbers[9] < %(p2)s) AND numbers[10] > %(p3)s"
        ' AND (params ->> %(p4)s) COLLATE "C" = %(p5)s'
    )
    assert args == {"p0": EXP, "p1": 0.1, "p2": 0.2, "p3": 0.5, "p4": "optimizer", "p5": "adam"}


@pytest.mark.parametrize(("text", "tree", "sql", "args"), [
    ("lr in (0.1, 0.01)", In(field("lr"), (0.1, 0.01)), "numbers[1] IN (%(p0)s, %(p1)s)", {"p0": 0.1, "p1": 0.01}),
    ("lr IN(1e-3)", In(field("lr"), (0.001,)), "numbers[1] IN (%(p0)s)", {"p0": 0.001}),
    ("metrics.loss in ( 1 ,2 )", In(field("loss"), (1.0, 2.0)), "numbers[9] IN (%(p0)s, %(p1)s)", {"p0": 1.0, "p1": 2.0}),
    ("optimizer in (adam, 'rock, roll', \"a (b) or c\")", In(text_field("optimizer"), ("adam", "rock, roll", "a (b) or c")),
     '(params ->> %(p0)s) COLLATE "C" IN (%(p1)s, %(p2)s, %(p3)s)',
     {"p0": "optimizer", "p1": "adam", "p2": "rock, roll", "p3": "a (b) or c"}),
    ("note in (f(x), '')", In(text_field("note"), ("f(x)", "")), '(metrics ->> %(p0)s) COLLATE "C" IN (%(p1)s, %(p2)s)',
     {"p0": "note", "p1": "f(x)", "p2": ""}),
    ("status in (success, failed)", In(field("status"), ("success", "failed")),
     f"{field('status').expression(Args())} IN (%(p0)s, %(p1)s)", {"p0": "success", "p1": "failed"}),
    ("flag in (true, FALSE)", In(field("flag"), (True, False)), "(params -> %(p0)s) IN (%(p1)s::jsonb, %(p2)s::jsonb)",
     {"p0": "flag", "p1": "true", "p2": "false"}),
    ("duration in (1, 2.5)", In(field("duration"), (1.0, 2.5)), "duration IN (%(p0)s, %(p1)s)", {"p0": 1.0, "p1": 2.5}),
    ("started_at in (2026-01-31, '2026-02-01T12:00:00')", In(field("started_at"), (datetime(2026, 1, 31), datetime(2026, 2, 1, 12))),
     "started_at IN (%(p0)s, %(p1)s)", {"p0": datetime(2026, 1, 31), "p1": datetime(2026, 2, 1, 12)}),
    ("lr not in (0.1, 0.01)", Not(In(field("lr"), (0.1, 0.01))), "(NOT coalesce(numbers[1] IN (%(p0)s, %(p1)s), false))",
     {"p0": 0.1, "p1": 0.01}),
    ("lr NOT  IN(0.1)", Not(In(field("lr"), (0.1,))), "(NOT coalesce(numbers[1] IN (%(p0)s), false))", {"p0": 0.1}),
    # a mixed field: its numbers compare as numbers, its texts as text
    ("batch in (32, auto)", Or((In(field("batch"), (32.0,)), In(Field("param", "batch", "string"), ("auto",)))),
     '(numbers[3] IN (%(p0)s) OR (params ->> %(p1)s) COLLATE "C" IN (%(p2)s))', {"p0": 32.0, "p1": "batch", "p2": "auto"}),
])
def test_in_and_not_in(text, tree, sql, args):
    assert filt(text) == tree
    assert sql_of(tree) == (sql, args)


def test_in_combines_with_the_rest():
    assert filt("lr in (0.1) or not (optimizer not in (adam) and loss < 0.2)") == Or((
        In(field("lr"), (0.1,)), Not(And((Not(In(text_field("optimizer"), ("adam",))), LOSS))),
    ))
    assert filt("optimizer in (a) and lr in (0.1)") == And((In(text_field("optimizer"), ("a",)), In(field("lr"), (0.1,))))


@pytest.mark.parametrize(("raw", "value"), [
    ("'a or b'", "a or b"), ('"x and y"', "x and y"), ("'not in (1, 2)'", "not in (1, 2)"), ("'(('", "(("),
    ("'a; b && c || d'", "a; b && c || d"), ("\"it's (or not)\"", "it's (or not)"), ("')'", ")"), ("' , '", " , "),
])
def test_quoted_values_may_hold_keywords_commas_and_parentheses(raw, value):
    expected = Condition(text_field("optimizer"), "=", value)
    assert filt(f"optimizer = {raw}") == expected
    assert filt(f"(optimizer = {raw}) or lr = 0.1") == Or((expected, LR))
    assert filt(f"lr = 0.1 or (optimizer = {raw})") == Or((LR, expected))
    assert filt(f"lr = 0.1 and optimizer = {raw}||loss < 0.2") == Or((And((LR, expected)), LOSS))
    assert filt(f"optimizer in ({raw}, {raw})") == In(text_field("optimizer"), (value, value))


@pytest.mark.parametrize(("text", "value"), [
    ("note = f(x)", "f(x)"), ("(note = f(x))", "f(x)"), ("note = order", "order"), ("note = brandnot", "brandnot"),
    ("note = a&b|c", "a&b|c"), ("note ~ inland", "inland"), ("note = in (x)", "in (x)"),
])
def test_unquoted_values_keep_their_own_parentheses_and_words_that_hold_keywords(text, value):
    assert filt(text) == Condition(text_field("note"), "~" if "~" in text else "=", value)


def test_a_field_called_not_is_a_field():
    catalogue = Catalogue([("param", "not", "number", 1)])
    assert parse_filter("not = 1 or not not < 2", catalogue) == Or((
        Condition(Field("param", "not", "number", 1), "=", 1.0), Not(Condition(Field("param", "not", "number", 1), "<", 2.0)),
    ))


KNOWN = (
    "this experiment has params batch, flag, lr, optimizer, seed, shared; metrics acc, loss, note, shared; "
    "and run columns run_id, status, started_at, duration, replicate, seed"
)
NEVER_CLOSED = "unbalanced parenthesis: the '(' at character {at} of {text!r}: it is never closed; add a ')'"
CLOSES_NOTHING = "unbalanced parenthesis: the ')' at character {at} of {text!r}: it closes no '('; remove it or quote the value"
DANGLING = "a dangling {word!r} at character {at} of {text!r}: put a condition on each side of it"


@pytest.mark.parametrize(("text", "message"), [
    ("(lr = 0.1 or loss < 0.2", NEVER_CLOSED.format(at=1, text="(lr = 0.1 or loss < 0.2")),
    ("lr = 0.1 and (loss < 0.2 or (acc > 0.5)", NEVER_CLOSED.format(at=14, text="lr = 0.1 and (loss < 0.2 or (acc > 0.5)")),
    ("lr in (0.1, 0.2", NEVER_CLOSED.format(at=7, text="lr in (0.1, 0.2")),
    ("lr = 0.1)", CLOSES_NOTHING.format(at=9, text="lr = 0.1)")),
    ("(lr = 0.1)) or loss < 0.2", CLOSES_NOTHING.format(at=11, text="(lr = 0.1)) or loss < 0.2")),
    ("note = f(x))", CLOSES_NOTHING.format(at=12, text="note = f(x))")),
    ("lr in ()", "an empty in () at character 7 of 'lr in ()': list at least one value, as in lr in (0.1, 0.01)"),
    ("lr not in ( )", "an empty in () at character 11 of 'lr not in ( )': list at least one value, as in lr in (0.1, 0.01)"),
    ("lr in (0.1, , 0.2)", "an empty value at character 13 of 'lr in (0.1, , 0.2)': write a value between the commas ('' for empty text)"),
    ("lr in (0.1,)", "an empty value at character 12 of 'lr in (0.1,)': write a value between the commas ('' for empty text)"),
    ("lr = 0.1 or", DANGLING.format(word="or", at=10, text="lr = 0.1 or")),
    ("or lr = 0.1", DANGLING.format(word="or", at=1, text="or lr = 0.1")),
    ("lr = 0.1 or or loss < 0.2", DANGLING.format(word="or", at=10, text="lr = 0.1 or or loss < 0.2")),
    ("lr = 0.1 || ", DANGLING.format(word="||", at=10, text="lr = 0.1 || ")),
    ("(lr = 0.1 OR) and loss < 0.2", DANGLING.format(word="OR", at=11, text="(lr = 0.1 OR) and loss < 0.2")),
    ("lr = 0.1 and", DANGLING.format(word="and", at=10, text="lr = 0.1 and")),
    ("lr = 0.1 && or loss < 0.2", DANGLING.format(word="&&", at=10, text="lr = 0.1 && or loss < 0.2")),
    ("and lr = 0.1", DANGLING.format(word="and", at=1, text="and lr = 0.1")),
    ("lr = 0.1 and and loss < 0.2", DANGLING.format(word="and", at=14, text="lr = 0.1 and and loss < 0.2")),
    ("not", "a dangling 'not' at character 1 of 'not': put a condition after it"),
    ("lr = 0.1 and not", "a dangling 'not' at character 14 of 'lr = 0.1 and not': put a condition after it"),
    ("()", "empty parentheses at character 1 of '()': put a condition inside them"),
    ("lr = 0.1 and ( )", "empty parentheses at character 14 of 'lr = 0.1 and ( )': put a condition inside them"),
    ("(lr = 0.1) loss < 0.2",
     "'loss < 0.2' follows a condition at character 12 of '(lr = 0.1) loss < 0.2': join conditions with and, or, ;"),
    ("lr in (0.1) x", "'x' follows a condition at character 13 of 'lr in (0.1) x': join conditions with and, or, ;"),
    ("lr = 0.1 or los < 1", f"unknown field 'los': {KNOWN}"),
    ("(optimizer = adam or (los in (1, 2)))", f"unknown field 'los': {KNOWN}"),
    ("not los < 1", f"unknown field 'los': {KNOWN}"),
    ("lr in (0.1, fast)", "params.lr is a number; 'fast' is not"),
    ("status in (success, done)", f"status can be = or != to {' or '.join(STATUSES)}, not = 'done'"),
    ("lr = 0.1 or loss", "cannot read the condition 'loss': write FIELD OP VALUE, OP one of <= >= != == = < > ~ "
                         "(for example: loss < 0.2), or FIELD in (VALUE, ...)"),
    ("lr = 0.1 or (< 2)", "cannot read the condition '< 2': write FIELD OP VALUE, OP one of <= >= != == = < > ~ "
                          "(for example: loss < 0.2), or FIELD in (VALUE, ...)"),
])
def test_filter_errors_say_what_to_fix(text, message):
    with pytest.raises(QueryError) as caught:
        parse_where([text], CATALOGUE)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["(" * 40 + "lr = 0.1" + ")" * 40, "not " * 40 + "lr = 0.1"])
def test_a_filter_nested_too_deep_is_an_error_not_a_crash(text):
    with pytest.raises(QueryError, match=f"^too deep a filter at character .*: nest at most {MAX_DEPTH} parentheses and nots$"):
        filt(text)
    depth = MAX_DEPTH - 1
    assert filt("(" * depth + "lr = 0.1" + ")" * depth) == LR


@pytest.mark.parametrize("text", [
    "lr" + " " * 16000 + "= 1", "note = a" + " " * 16000 + "b", "lr = 1" + " and lr = 1" * 1500, "lr" + " \t" * 8000 + "in (1)",
    "note = " + "(" * 8000 + ")" * 8000, "lr in (" + "1, " * 5000 + "1)", "note = '" + "x" * 16000, "note = 'a' " * 1500,
    "lr = 1 " + " " * 16000 + "or lr = 2", " " * 16000 + "lr = 1", "note = " + "a " * 8000, "note in (" + " " * 16000 + ")",
])
def test_a_long_filter_parses_in_linear_time(text):
    """As long as a URL may be (16 kB): no pattern tries a run of spaces from each of its characters."""
    start = time.perf_counter()
    try:
        filt(text)
    except QueryError as error:
        assert len(str(error)) < 400  # a long text is shown around the place to fix
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(("texts", "text"), [
    ([], ""), (["lr = 0.1"], "lr = 0.1"), (["lr = 0.1 or loss < 0.2"], "lr = 0.1 or loss < 0.2"),
    (["lr = 0.1 or loss < 0.2", "acc > 0.5", " "], "(lr = 0.1 or loss < 0.2); acc > 0.5"),
    (["lr = 0.1 || loss < 0.2", "acc > 0.5 and lr = 0.1"], "(lr = 0.1 || loss < 0.2); acc > 0.5 and lr = 0.1"),
])
def test_where_text_joins_texts_for_the_filter_box_and_keeps_their_meaning(texts, text):
    assert where_text(texts) == text
    assert parse_where([where_text(texts)], CATALOGUE) == parse_where(texts, CATALOGUE)


def test_the_status_param_is_one_condition_never_a_filter():
    with pytest.raises(QueryError, match=r"^status can be = or != to .*, not = 'success or lr = 0\.1'$"):
        runs_query(EXP, CATALOGUE, FakeParams(status="success or lr = 0.1"))
    query = runs_query(EXP, CATALOGUE, FakeParams(where=["lr = 0.1 or loss < 0.2", "acc > 0.5"], status="failed"))
    assert query.conditions == (Or((LR, LOSS)), ACC, Condition(field("status"), "=", "failed"))


# -- filters: properties -------------------------------------------------------------------------

# Every token of the filter language, to be put together in any order with marked names and values.
FILTER_WORDS = ["and", "or", "not", "in", "not in", "AND", "Or", "NOT IN", "&&", "||", ";", "(", ")", ",", "'", '"',
                "=", "==", "!=", "<", "<=", ">", ">=", "~", "true", "false", "success", "failed"]
# What the SQL of a filter may be made of: placeholders, slots, run columns and fixed words.
SQL_TOKEN = re.compile(r'%\(p\d+\)s|numbers\[(\d+)\]|::jsonb|->>|->|<>|<=|>=|[=<>(),]|"C"|\w+')
SQL_WORDS = {"AND", "OR", "NOT", "IN", "LIKE", "COLLATE", '"C"', "coalesce", "false", "params", "metrics",
             "experiment_id", "::jsonb", "->>", "->", "=", "<>", "<", "<=", ">", ">=", "(", ")", ",", *COLUMNS}


def column_free(sql: str) -> str:
    """``sql`` with each run column's expression (fixed text, whatever it is) as the column's name."""
    sql = sql.replace(RUN_FIELDS, "run_fields")
    for name in COLUMNS:
        sql = sql.replace(field(name).expression(Args()), name)
    return sql


def assert_catalogue_sql(sql: str, catalogue: Catalogue) -> None:
    """``sql`` holds nothing but placeholders, the catalogue's slots, run columns and fixed words."""
    slots = {str(f.slot) for f in catalogue.fields if f.slot is not None}
    sql = column_free(sql)
    assert SQL_TOKEN.sub("", sql).strip() == "", sql
    for found in SQL_TOKEN.finditer(sql):
        token = found[0]
        assert token in SQL_WORDS or token.startswith("%(") or found[1] in slots, (token, sql)


def filter_text(draw: st.DrawFn, names: list[str]) -> str:
    tokens = draw(st.lists(st.one_of(
        st.sampled_from(names), text_values, st.sampled_from(FILTER_WORDS),
        text_values.map(lambda v: f"'{v}'"), text_values.map(lambda v: f'"{v}"'),
        st.floats(allow_nan=False).map(repr), st.datetimes().map(datetime.isoformat),
    ), max_size=16))
    return "".join(token + draw(st.sampled_from([" ", " ", "", "\n"])) for token in tokens)


@settings(max_examples=400)
@given(st.data(), catalogues)
def test_no_filter_text_is_ever_part_of_the_sql(data, catalogue):
    names = [f.ref for f in catalogue.fields] + [f.name for f in catalogue.fields] + list(COLUMNS)
    texts = [filter_text(data.draw, names) for _ in range(data.draw(st.integers(1, 2)))]
    try:
        filters = parse_where(texts, catalogue)
    except QueryError as error:
        assert str(error) and "\n" not in str(error) and "\r" not in str(error)
        return
    secrets = [*re.findall(r"zq.*?qz", "".join(texts), re.DOTALL), *(f.name for f in catalogue.fields)]
    args = Args()
    where = where_sql(EXP, filters, args)
    assert_catalogue_sql(where, catalogue)
    assert_bound(column_free(where), args, secrets)
    sort = catalogue.fields[0]
    statements = [(sql, a) for _, sql, a in RunsQuery(EXP, tuple(filters), sort, after=Cursor(0, 1.0, "r")).segments()]
    statements += [RunsQuery(EXP, tuple(filters), sort).export(), histogram_sql(EXP, sort, 10, filters),
                   plot_sql(EXP, sort, sort, None, filters)]
    for sql, statement_args in statements:
        assert_bound(column_free(sql), statement_args, secrets)


@settings(max_examples=200)
@given(st.text(alphabet="ab =<()',\"|&;!~ornditu\n", max_size=40))
def test_any_text_in_the_filter_alphabet_parses_or_is_a_one_line_query_error(text):
    catalogue = Catalogue([("param", "a", "number", 1), ("param", "b", "string", 2), ("metric", "ab", "bool", 3)])
    try:
        node = parse_filter(text, catalogue)
    except QueryError as error:
        assert str(error) and "\n" not in str(error)
        return
    if node is not None:
        assert_catalogue_sql(sql_of(node)[0], catalogue)


# Trees a request can ask for, over these fields, and how to write each of them.
quotable = st.text(max_size=8).filter(lambda s: not ("'" in s and '"' in s))
numbers = st.floats(allow_nan=False)


def leaves(ref: str, kind: str) -> st.SearchStrategy[Filter]:
    f = field(ref)
    values: st.SearchStrategy = {"number": numbers, "text": quotable, "time": st.datetimes(),
                                 "status": st.sampled_from(STATUS_VALUES), "bool": st.booleans()}[kind]
    target = text_field(ref) if kind == "text" else f
    ops = {"number": ["=", "!=", "<", "<=", ">", ">="], "time": ["=", "!=", "<", "<=", ">", ">="],
           "text": ["=", "!=", "<", ">=", "~"], "status": ["=", "!="], "bool": ["=", "!="]}[kind]
    return st.one_of(
        st.builds(Condition, st.just(target), st.sampled_from(ops), values),
        st.lists(values, min_size=1, max_size=3).map(lambda vs: In(target, tuple(vs))),
    )


STATUS_VALUES = ["success", "failed"]
LEAF_FIELDS = [("lr", "number"), ("loss", "number"), ("duration", "number"), ("optimizer", "text"),
               ("note", "text"), ("started_at", "time"), ("status", "status"), ("flag", "bool")]
filter_trees = st.recursive(
    st.one_of(*(leaves(ref, kind) for ref, kind in LEAF_FIELDS)),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda parts: And(tuple(parts))),
        st.lists(children, min_size=2, max_size=3).map(lambda parts: Or(tuple(parts))),
        children.map(Not),
    ),
    max_leaves=8,
).filter(lambda tree: depth_of(tree) <= MAX_DEPTH // 2)


def depth_of(node: Filter) -> int:
    if isinstance(node, (And, Or)):
        return 1 + max(depth_of(part) for part in node.parts)
    return 1 + depth_of(node.part) if isinstance(node, Not) else 1


def written(draw: st.DrawFn, node: Filter) -> str:
    """``node`` as a request may write it: any spelling of the keywords, parentheses only where
    needed (and sometimes where not)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return draw(st.sampled_from(["true", "TRUE", "True"] if v else ["false", "False"]))
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, datetime):
            return v.isoformat()
        if v in STATUS_VALUES:
            return str(v)
        return f'"{v}"' if "'" in str(v) else f"'{v}'"

    def name(f: Field) -> str:
        return f.name if f.kind == "column" else draw(st.sampled_from([f.name, f.ref]))

    def grouped(part: Filter, needs: tuple[type, ...]) -> str:
        text = written(draw, part)
        return f"({text})" if isinstance(part, needs) or draw(st.integers(0, 5)) == 0 else text

    if isinstance(node, Condition):
        op = "==" if node.op == "=" and draw(st.booleans()) else node.op
        return f"{name(node.field)}{draw(st.sampled_from([' ', '']))}{op} {value(node.value)}"
    if isinstance(node, In):
        return f"{name(node.field)} {draw(st.sampled_from(['in', 'IN']))} ({', '.join(value(v) for v in node.values)})"
    if isinstance(node, Not):
        if isinstance(node.part, In) and draw(st.booleans()):
            return written(draw, node.part).replace(" in (", " not in (").replace(" IN (", " NOT IN (")
        return f"{draw(st.sampled_from(['not ', 'NOT ', 'not']))}({written(draw, node.part)})"
    joins = [" and ", " AND ", " && ", "&&", " ; "] if isinstance(node, And) else [" or ", " OR ", " || ", "||"]
    needs = (And, Or) if isinstance(node, And) else (Or,)  # a nested group of the same kind stays a group
    return draw(st.sampled_from(joins)).join(grouped(part, needs) for part in node.parts)


@settings(max_examples=300)
@given(st.data(), filter_trees)
def test_written_trees_parse_back_to_themselves(data, tree):
    text = written(data.draw, tree)
    assert filt(text) == tree, text
    assert parse_where([text], CATALOGUE) == (list(tree.parts) if isinstance(tree, And) else [tree])
    sql, args = sql_of(tree)
    assert_catalogue_sql(sql, CATALOGUE)
    assert_bound(column_free(sql), Args(args))
    other = written(data.draw, data.draw(filter_trees))
    assert top_ands(parse_where([where_text([text, other])], CATALOGUE)) == top_ands(parse_where([text, other], CATALOGUE))


def top_ands(filters: list[Filter]) -> list[Filter]:
    """The same filters with any And among them as its parts: what they select stays the same."""
    return [leaf for f in filters for leaf in (top_ands(list(f.parts)) if isinstance(f, And) else [f])]


@pytest.mark.parametrize("key", [
    0.5, -0.0, 0.0, 1e-300, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, 0.1 + 0.2,
    0, 7, -3, 2**62, 10**30, "", "abc", "λ/☃ \"q\" 'x' \\", None,
])
@pytest.mark.parametrize("segment", [0, 1])
def test_cursor_round_trip(key, segment):
    cursor = Cursor(segment, key, "run-λ-1")
    text = encode_cursor(cursor)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    back = decode_cursor(text)
    assert back == cursor
    assert type(back.key) is type(key)
    if isinstance(key, float):
        assert math.copysign(1, back.key) == math.copysign(1, key)


def test_cursor_round_trip_nan():
    back = decode_cursor(encode_cursor(Cursor(0, math.nan, "r")))
    assert back.segment == 0 and back.run_id == "r"
    assert isinstance(back.key, float) and math.isnan(back.key)


@given(st.sampled_from([0, 1]),
       st.one_of(st.none(), st.floats(allow_nan=False), st.integers(), st.text()), st.text())
def test_cursor_round_trip_any(segment, key, run_id):
    back = decode_cursor(encode_cursor(Cursor(segment, key, run_id)))
    assert back == Cursor(segment, key, run_id)
    assert type(back.key) is type(key)


@pytest.mark.parametrize("when", [
    datetime(2026, 1, 31, 12, 0, 0), datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
])
def test_a_time_cursor_comes_back_as_a_time(when):
    text = encode_cursor(Cursor(0, when, "r7"))
    assert decode_cursor(text) == Cursor(0, when.isoformat(), "r7")
    assert cursor_for(text, field("started_at")) == Cursor(0, when, "r7")


@pytest.mark.parametrize("text", [
    "", "!!!", "not base64", "é", b64(b"hello"), b64(b"\xff\xfe\xfd"), b64json(None), b64json(3),
    b64json("abc"), b64json({"a": 1, "b": 2, "c": 3}), b64json([0, 1]), b64json([0, 1, "r", 4]),
    b64json([2, 1, "r"]), b64json([-1, 1, "r"]), b64json(["0", 1, "r"]), b64json([0, 1, 2]),
    b64json([0, 1, None]), b64json([0, {}, "r"]), b64json([0, ["f"], "r"]), b64json([0, ["f", "x"], "r"]),
    b64json([0, ["f", None], "r"]), b64json([0, [], "r"]), b64(b"[0, 1e5000000000000000000x, \"r\"]"),
])
def test_decoding_garbage_is_a_query_error(text):
    with pytest.raises(QueryError, match="^the page cursor is not one this Atlas gave out: start again from the first page$"):
        decode_cursor(text)


def test_a_huge_integer_key_is_a_query_error():
    text = b64(b"[0, " + b"9" * 5000 + b', "r"]')
    with pytest.raises(QueryError):
        decode_cursor(text)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=40))
def test_decoding_any_text_gives_a_cursor_or_a_query_error(text):
    try:
        cursor = decode_cursor(text)
    except QueryError:
        return
    assert cursor.segment in (0, 1)
    assert isinstance(cursor.run_id, str)


def test_a_deeply_nested_cursor_is_a_query_error():
    text = b64(b"[" * 1000)  # 1336 characters: a plausible URL
    with pytest.raises(QueryError):
        decode_cursor(text)


def test_cursor_for_keeps_a_matching_key():
    assert cursor_for(encode_cursor(Cursor(0, 0.25, "r")), field("loss")) == Cursor(0, 0.25, "r")
    assert cursor_for(encode_cursor(Cursor(0, 3, "r")), field("duration")) == Cursor(0, 3, "r")
    assert cursor_for(encode_cursor(Cursor(0, "r9", "r9")), field("run_id")) == Cursor(0, "r9", "r9")
    assert cursor_for(encode_cursor(Cursor(0, "adam", "r")), field("optimizer")) == Cursor(0, "adam", "r")
    assert cursor_for(encode_cursor(Cursor(0, None, "r")), field("loss")) == Cursor(0, None, "r")


def test_cursor_for_a_later_segment_drops_the_key():
    assert cursor_for(encode_cursor(Cursor(1, 0.5, "r")), field("loss")) == Cursor(1, None, "r")
    assert cursor_for(encode_cursor(Cursor(1, "x", "r")), field("loss")) == Cursor(1, None, "r")


@pytest.mark.parametrize(("key", "ref"), [
    ("0.5", "loss"), ("r1", "duration"), (0.5, "run_id"), (3, "optimizer"), (True, "loss"),
    (False, "duration"), (True, "run_id"), ("yesterday", "started_at"), (1.5, "started_at"),
    (True, "started_at"),
])
def test_cursor_for_refuses_a_key_of_another_sort(key, ref):
    text = encode_cursor(Cursor(0, key, "r"))
    with pytest.raises(QueryError, match="^the page cursor belongs to another sort: start again from the first page$"):
        cursor_for(text, field(ref))


def test_cursor_for_refuses_garbage():
    with pytest.raises(QueryError, match="not one this Atlas gave out"):
        cursor_for("garbage!", field("loss"))


# -- RunsQuery ----------------------------------------------------------------------------------

SELECT = re.compile(r"SELECT run_id(?: AS \w+)?, (?P<key>.+?)(?: AS \w+)? FROM metalab\.runs WHERE ")


def split(sql: str) -> tuple[str, str]:
    """A page statement's (selected key, text after ``WHERE``): how the columns are labelled is
    the caller's business, what is selected and which rows are not."""
    match = SELECT.match(sql)
    assert match, sql
    return match["key"], sql[match.end():]


KEYED = "experiment_id = %(p0)s AND numbers[9] IS NOT NULL ORDER BY numbers[9] ASC, run_id ASC LIMIT %(p1)s"
UNKEYED = "experiment_id = %(p0)s AND numbers[9] IS NULL ORDER BY run_id LIMIT %(p1)s"


def test_a_numeric_sort_without_cursor_gives_keyed_then_unkeyed():
    segments = RunsQuery(EXP, (), field("loss"), limit=20).segments()
    assert [(s, split(sql), args) for s, sql, args in segments] == [
        (0, ("numbers[9]", KEYED), {"p0": EXP, "p1": 21}),
        (1, ("NULL", UNKEYED), {"p0": EXP, "p1": 21}),
    ]


def test_the_default_limit_asks_for_51_rows():
    segments = RunsQuery(EXP, (), field("loss")).segments()
    assert len(segments) == 2
    for _, sql, args in segments:
        assert sql.endswith("LIMIT %(p1)s") and args["p1"] == 51


def test_a_cursor_in_the_keyed_segment_continues_after_it():
    segments = RunsQuery(EXP, (), field("loss"), limit=5, after=Cursor(0, 0.5, "r3")).segments()
    assert [s for s, _, _ in segments] == [0, 1]
    (_, keyed, keyed_args), (_, unkeyed, unkeyed_args) = segments
    assert split(keyed) == ("numbers[9]", (
        "experiment_id = %(p0)s AND numbers[9] IS NOT NULL AND (numbers[9], run_id) > (%(p1)s, %(p2)s)"
        " ORDER BY numbers[9] ASC, run_id ASC LIMIT %(p3)s"
    ))
    assert keyed_args == {"p0": EXP, "p1": 0.5, "p2": "r3", "p3": 6}
    assert (split(unkeyed), unkeyed_args) == (("NULL", UNKEYED), {"p0": EXP, "p1": 6})  # from its start


def test_a_cursor_in_the_unkeyed_segment_gives_only_the_unkeyed_statement():
    ((segment, sql, args),) = RunsQuery(EXP, (), field("loss"), limit=5, after=Cursor(1, None, "r3")).segments()
    assert segment == 1
    assert split(sql) == ("NULL", (
        "experiment_id = %(p0)s AND numbers[9] IS NULL AND run_id > %(p1)s ORDER BY run_id LIMIT %(p2)s"
    ))
    assert args == {"p0": EXP, "p1": "r3", "p2": 6}


@pytest.mark.parametrize(("ref", "segments"), [
    ("run_id", [0]), ("status", [0]), ("duration", [0]), ("replicate", [0]), ("seed", [0]),
    ("started_at", [0, 1]), ("loss", [0, 1]), ("optimizer", [0, 1]), ("params.seed", [0, 1]),
])
def test_which_segments_a_sort_has(ref, segments):
    assert [s for s, _, _ in RunsQuery(EXP, (), field(ref)).segments()] == segments
    assert [s for s, _, _ in RunsQuery(EXP, (), field(ref), after=Cursor(0, 1.0, "r")).segments()] == segments


def test_sorting_by_run_id_is_one_keyed_statement():
    ((segment, sql, args),) = RunsQuery(EXP, (), field("run_id"), limit=10, after=Cursor(0, "r5", "r5")).segments()
    assert segment == 0
    key = 'run_id COLLATE "C"'
    assert split(sql) == (key, (
        f"experiment_id = %(p0)s AND {key} IS NOT NULL"
        f" AND ({key}, run_id) > (%(p1)s, %(p2)s) ORDER BY {key} ASC, run_id ASC LIMIT %(p3)s"
    ))
    assert args == {"p0": EXP, "p1": "r5", "p2": "r5", "p3": 11}


def test_descending_uses_less_than_and_desc():
    segments = RunsQuery(EXP, (), field("loss"), descending=True, after=Cursor(0, 0.5, "r3")).segments()
    (_, keyed, _), (_, unkeyed, _) = segments
    assert split(keyed)[1] == (
        "experiment_id = %(p0)s AND numbers[9] IS NOT NULL AND (numbers[9], run_id) < (%(p1)s, %(p2)s)"
        " ORDER BY numbers[9] DESC, run_id DESC LIMIT %(p3)s"
    )
    assert split(unkeyed)[1] == UNKEYED  # runs without the key: still by run id
    ((_, only, _),) = RunsQuery(EXP, (), field("status"), descending=True).segments()
    assert split(only)[1].endswith('ORDER BY status COLLATE "C" DESC, run_id DESC LIMIT %(p1)s')


def test_a_text_sort_binds_the_name_before_the_conditions():
    condition = cond("status = failed")
    (_, keyed, args), (_, unkeyed, unkeyed_args) = RunsQuery(EXP, (condition,), field("note"), limit=1).segments()
    key = '(metrics ->> %(p0)s) COLLATE "C"'
    assert split(keyed) == (key, (
        f"experiment_id = %(p1)s AND status COLLATE \"C\" = %(p2)s"
        f" AND {key} IS NOT NULL ORDER BY {key} ASC, run_id ASC LIMIT %(p3)s"
    ))
    assert args == {"p0": "note", "p1": EXP, "p2": "failed", "p3": 2}
    assert split(unkeyed)[1].endswith(f"AND {key} IS NULL ORDER BY run_id LIMIT %(p3)s")
    assert unkeyed_args == args


def test_conditions_apply_to_every_segment():
    conditions = (cond("lr = 0.01"), cond("optimizer ~ ad"))
    for _, sql, args in RunsQuery(EXP, conditions, field("loss")).segments():
        assert split(sql)[1].startswith(
            'experiment_id = %(p0)s AND numbers[1] = %(p1)s AND (params ->> %(p2)s) COLLATE "C" LIKE %(p3)s AND '
        )
        assert args == {"p0": EXP, "p1": 0.01, "p2": "optimizer", "p3": "%ad%", "p4": 51}


def test_export_orders_like_the_pages_and_reads_the_run_fields():
    sql, args = RunsQuery(EXP, (cond("loss < 1"),), field("acc"), descending=True).export()
    assert sql == (
        f"SELECT {RUN_FIELDS} FROM metalab.runs WHERE experiment_id = %(p0)s AND numbers[9] < %(p1)s "
        "ORDER BY numbers[10] IS NULL, numbers[10] DESC, run_id DESC"
    )
    assert args == {"p0": EXP, "p1": 1.0}
    assert "numbers" not in RUN_FIELDS.split(", ")


def test_plot_sql():
    sql, args = plot_sql(EXP, field("lr"), field("loss"), field("optimizer"), [cond("acc > 0.5")])
    assert sql == (
        'SELECT (params ->> %(p0)s) COLLATE "C" AS g, numbers[1] AS x, avg(numbers[9]), '
        "coalesce(stddev_samp(numbers[9]), 0), count(*) FROM metalab.runs WHERE experiment_id = %(p1)s "
        "AND numbers[10] > %(p2)s AND numbers[1] IS NOT NULL AND numbers[9] > '-Infinity' AND numbers[9] < 'Infinity' "
        "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 20000"
    )
    assert args == {"p0": "optimizer", "p1": EXP, "p2": 0.5}
    sql, args = plot_sql(EXP, field("lr"), field("loss"), None, [])
    assert sql.startswith("SELECT NULL AS g, numbers[1] AS x,")
    assert args == {"p0": EXP}


def test_histogram_sql_binds_the_bins():
    sql, args = histogram_sql(EXP, field("loss"), 30, [cond("status = success")])
    assert args == {"p0": EXP, "p1": "success", "p2": 30}
    assert sql.startswith(
        'WITH v AS (SELECT numbers[9] AS v FROM metalab.runs WHERE experiment_id = %(p0)s AND status COLLATE "C" = %(p1)s'
        " AND numbers[9] > '-Infinity' AND numbers[9] < 'Infinity'), "
    )
    assert "width_bucket(v.v, r.lo, CASE WHEN r.hi > r.lo THEN r.hi ELSE r.lo + 1 END, %(p2)s), %(p2)s)" in sql


def test_summary_sql():
    sql, args = summary_sql(EXP, [field("loss"), field("duration")])
    assert args == {"p0": EXP}
    assert sql.count("percentile_cont(0.5)") == 2
    assert "count(numbers[9]) FILTER (WHERE numbers[9] > '-Infinity' AND numbers[9] < 'Infinity')" in sql
    assert "max(duration) FILTER (WHERE duration > '-Infinity' AND duration < 'Infinity')" in sql
    finished = " AND status NOT IN ('running', 'interrupted')"  # a run in progress has only values so far
    assert sql.endswith("FROM metalab.runs WHERE experiment_id = %(p0)s" + finished)
    assert summary_sql(EXP, []) == ("SELECT NULL FROM metalab.runs WHERE experiment_id = %(p0)s" + finished, {"p0": EXP})


# -- asks ---------------------------------------------------------------------------------------


def test_runs_query_defaults_to_the_first_numeric_metric():
    catalogue = Catalogue([("metric", "a_note", "string", 1), ("metric", "b_loss", "number", 2),
                           ("metric", "c_acc", "number", 3), ("param", "lr", "number", 4)])
    query = runs_query(EXP, catalogue, FakeParams())
    assert query == RunsQuery(EXP, (), Field("metric", "b_loss", "number", 2), False, 50, None)
    assert default_sort(catalogue) == Field("metric", "b_loss", "number", 2)


def test_without_a_numeric_metric_the_default_sort_is_the_run_id():
    catalogue = Catalogue([("param", "lr", "number", 1), ("metric", "note", "string", 2),
                           ("metric", "n", "number", None)])
    assert runs_query(EXP, catalogue, FakeParams()).sort == Field("column", "run_id", "string", None)
    assert default_sort(Catalogue([])) == Field("column", "run_id", "string", None)


def test_runs_query_reads_every_param():
    cursor = encode_cursor(Cursor(0, 0.5, "r3"))
    params = FakeParams(sort="metrics.acc", order="desc", limit="500", cursor=cursor,
                        where=["loss < 1", "  ", "optimizer = adam"], status="failed")
    assert runs_query(EXP, CATALOGUE, params) == RunsQuery(
        experiment_id=EXP,
        conditions=(
            Condition(field("loss"), "<", 1.0),
            Condition(text_field("optimizer"), "=", "adam"),
            Condition(field("status"), "=", "failed"),
        ),
        sort=field("acc"),
        descending=True,
        limit=500,
        after=Cursor(0, 0.5, "r3"),
    )


@pytest.mark.parametrize(("order", "descending"), [(None, False), ("", False), ("asc", False), ("desc", True)])
def test_order(order, descending):
    params = FakeParams() if order is None else FakeParams(order=order)
    assert runs_query(EXP, CATALOGUE, params).descending is descending


@pytest.mark.parametrize("order", ["DESC", "Asc", "down", " desc"])
def test_other_orders_are_an_error(order):
    with pytest.raises(QueryError, match=f"^order is asc or desc, not {re.escape(repr(order))}$"):
        runs_query(EXP, CATALOGUE, FakeParams(order=order))


@pytest.mark.parametrize(("limit", "expected"), [(None, 50), ("", 50), ("1", 1), ("500", 500), ("77", 77), (" 9 ", 9)])
def test_limit(limit, expected):
    params = FakeParams() if limit is None else FakeParams(limit=limit)
    assert runs_query(EXP, CATALOGUE, params).limit == expected


@pytest.mark.parametrize("limit", ["0", "501", "-1", "100000"])
def test_a_limit_out_of_range_is_an_error(limit):
    with pytest.raises(QueryError, match=f"^limit must be from 1 to 500, not {int(limit)}$"):
        runs_query(EXP, CATALOGUE, FakeParams(limit=limit))


@pytest.mark.parametrize("limit", ["abc", "2.5", "1e2", "ten", "0x10", "5;"])
def test_a_limit_that_is_not_a_whole_number_is_an_error(limit):
    with pytest.raises(QueryError, match=f"^limit must be a whole number from 1 to 500, not {re.escape(repr(limit))}$"):
        runs_query(EXP, CATALOGUE, FakeParams(limit=limit))


def test_bounded_int():
    assert bounded_int(FakeParams(), "bins", 20, 1, 200) == 20
    assert bounded_int(FakeParams(bins="200"), "bins", 20, 1, 200) == 200
    assert bounded_int(FakeParams(bins="-3"), "bins", 20, -5, 5) == -3
    with pytest.raises(QueryError, match="^bins must be from 1 to 200, not 201$"):
        bounded_int(FakeParams(bins="201"), "bins", 20, 1, 200)


def test_the_status_param_becomes_a_condition():
    assert runs_query(EXP, CATALOGUE, FakeParams(status="success")).conditions == (
        Condition(field("status"), "=", "success"),
    )
    assert runs_query(EXP, CATALOGUE, FakeParams(status="")).conditions == ()
    assert runs_query(EXP, CATALOGUE, FakeParams(status="running")).conditions == (
        Condition(field("status"), "=", "running"),
    )
    with pytest.raises(QueryError, match="^status can be = or != to success or failed or running or interrupted, "
                                         "not = 'done'$"):
        runs_query(EXP, CATALOGUE, FakeParams(status="done"))


def test_runs_query_errors():
    with pytest.raises(QueryError, match="^unknown field 'los'"):
        runs_query(EXP, CATALOGUE, FakeParams(sort="los"))
    with pytest.raises(QueryError, match="is both a param and a metric"):
        runs_query(EXP, CATALOGUE, FakeParams(sort="shared"))
    with pytest.raises(QueryError, match="^metrics.loss is a number; 'x' is not$"):
        runs_query(EXP, CATALOGUE, FakeParams(where="loss < x"))
    with pytest.raises(QueryError, match="belongs to another sort"):
        runs_query(EXP, CATALOGUE, FakeParams(sort="loss", cursor=encode_cursor(Cursor(0, "a", "r"))))
    with pytest.raises(QueryError, match="not one this Atlas gave out"):
        runs_query(EXP, CATALOGUE, FakeParams(cursor="%%%"))


def test_run_columns_default_to_params_then_metrics_up_to_a_dozen():
    small = Catalogue([("metric", "loss", "number", 1), ("param", "lr", "number", 2)])
    assert run_columns(small, FakeParams()) == [small.field("lr"), small.field("loss")]
    big = Catalogue([("metric", f"m{i:02}", "number", i) for i in range(10)]
                    + [("param", f"p{i:02}", "string", 20 + i) for i in range(5)])
    assert [f.ref for f in run_columns(big, FakeParams())] == (
        [f"params.p{i:02}" for i in range(5)] + [f"metrics.m{i:02}" for i in range(7)]
    )


@pytest.mark.parametrize("columns", [["loss,lr"], ["loss", "lr"], [" loss , ,lr, "], ["loss,", ",lr"]])
def test_run_columns_asked_for(columns):
    assert run_columns(CATALOGUE, FakeParams(columns=columns)) == [field("loss"), field("lr")]


def test_run_columns_may_name_run_columns_and_prefixed_fields():
    assert run_columns(CATALOGUE, FakeParams(columns="duration,metrics.shared,params.seed")) == [
        field("duration"), Field("metric", "shared", "number", 7), Field("param", "seed", "number", 6),
    ]
    assert run_columns(CATALOGUE, FakeParams(columns=" , ")) == CATALOGUE.fields[:12]
    with pytest.raises(QueryError, match="^unknown field 'nope'"):
        run_columns(CATALOGUE, FakeParams(columns="loss,nope"))


RUN = {"run_id": "r1", "status": "success", "duration": 2.5, "params": {"lr": 0.1, "shared": 1},
       "metrics": {"loss": 0.3, "shared": 2}}


def test_value_of():
    assert value_of(RUN, field("run_id")) == "r1"
    assert value_of(RUN, field("duration")) == 2.5
    assert value_of(RUN, field("seed")) is None
    assert value_of(RUN, field("lr")) == 0.1
    assert value_of(RUN, field("loss")) == 0.3
    assert value_of(RUN, field("params.shared")) == 1
    assert value_of(RUN, field("metrics.shared")) == 2
    assert value_of(RUN, field("optimizer")) is None
    assert value_of({"params": None}, field("lr")) is None
    assert value_of({}, field("loss")) is None


def test_differing():
    other = {**RUN, "run_id": "r2", "params": {"lr": 0.1, "shared": 5}, "metrics": {"loss": 0.3, "shared": 2}}
    fields = [field("run_id"), field("status"), field("lr"), field("params.shared"), field("metrics.shared"),
              field("loss"), field("optimizer")]
    assert differing([RUN, other], fields) == {"run_id", "params.shared"}
    assert differing([RUN], fields) == set()
    assert differing([], fields) == set()
    missing = {**RUN, "params": {"shared": 1}}
    assert differing([RUN, missing], fields) == {"params.lr"}
