"""The PostgreSQL index schema shared by the indexer (its only writer) and Atlas (reader).

The index is derived from the files (the indexer, ``metalab.store.indexer``, reads it from them
again whenever ``record_files`` is empty), so the schema can be upgraded freely. It is
versioned: ``{INDEX_SCHEMA}.schema_version`` holds one row, and ``MIGRATIONS`` lists the steps from nothing to ``SCHEMA_VERSION``, each applied once, in order,
under a transaction-level advisory lock (two processes meeting a fresh database at the same time
create it once).

Tables (version 6):

    experiments  experiment_id PK, name, version, description jsonb (experiment.json),
                 created_at, updated_at
    runs         (experiment_id, run_id) PK, status ('success' | 'failed', or for a run in
                 progress 'running', whose finished_at is its last heartbeat, or 'interrupted';
                 text, so a status needs no migration), started_at,
                 finished_at, duration (seconds), replicate, seed (null beyond bigint), params jsonb,
                 metrics jsonb (name -> final value; NaN and infinities as the strings
                 "NaN", "Infinity", "-Infinity", which ``::float8`` reads back), error (the
                 traceback of a failed run, null on success)
                 numbers float8[] (numbers[slot] = the run's value of the catalogue entry with
                 that slot, when it is a number; NULL otherwise)
    catalogue    (experiment_id, kind, name) PK, type, slot: every param and metric name an
                 experiment's records have, kind 'param' | 'metric', type 'number' | 'string' |
                 'bool' | 'json' (lists, objects) | 'null' | 'mixed' (records disagree); slot is
                 its position in runs.numbers, fixed once given
    run_counts   (experiment_id, status) PK, runs, last_finished: kept by a statement trigger on
                 runs, so the experiment list never counts rows
    record_files (experiment_id, file) PK, indexed_bytes: how much of each record file
                 (``runs/{file}``) the index holds; whole lines only
    steps        (experiment_id, run_id, name) PK, steps bytea, vals bytea: each stepped
                 metric of the run's current record (``capture.metric(name, v, step=s)``), in
                 the record's order, as big-endian float8s (``float8send``; NULL steps: 0, 1, ...,
                 n-1); a value that is not a number is NaN. Follows its run row.
    sort_indexes (experiment_id, filter_slot, sort_slot) PK, index_name: the partial indexes on
                 (numbers[filter_slot], numbers[sort_slot], run_id) made for one large
                 experiment (``metalab.store.sort_indexes``), each listed once it is built;
                 experiments.sort_indexes_planned says they were chosen

Atlas sorts, filters and plots on ``numbers[slot]``: a float8 array element costs a fraction of a
jsonb number (which PostgreSQL converts through text), and slots 1..SLOT_INDEXES each have a
partial index on (experiment_id, numbers[slot], run_id) that also carries ``numbers``, so a page
sorted by one field and filtered on another is an index-only scan. Each slot also has expression
statistics (ANALYZE ignores a partial index's), so the planner knows how many runs a filter keeps.

A run's row follows the record ``records.pick_latest`` picks (a success beats a failure, which
beats a running line; then the later start), so the index and the files agree on every run. Only the indexer
(``metalab.store.indexer``) writes rows; it reads them from the record files.
"""

from __future__ import annotations

__all__ = [
    "CATALOGUE_MERGE",
    "CATALOGUE_NEW",
    "CATALOGUE_PRUNE",
    "CATALOGUE_SET",
    "CATALOGUE_SLOTS",
    "EXPERIMENT_STAMP",
    "EXPERIMENT_UPSERT",
    "FILES_FORGET",
    "FILES_READ",
    "FILES_WRITE",
    "INDEX_LOCK",
    "INDEX_LOCK_CLASS",
    "INDEX_SCHEMA",
    "LINE_COPY",
    "LINE_DDL",
    "LINE_MERGE",
    "LINE_PLAN",
    "LINE_PRUNE",
    "LINE_TABLE",
    "LINE_UPSERT",
    "MIGRATIONS",
    "SCHEMA_LOCK_KEY",
    "SCHEMA_VERSION",
    "SLOT_INDEXES",
    "SORT_INDEXES_READ",
    "SORT_LOCK_CLASS",
    "STEPS_FILL",
    "STEPS_PRUNE",
]

INDEX_SCHEMA = "metalab"
SCHEMA_VERSION = 6
SCHEMA_LOCK_KEY = 0x6D6C_6978_0000_0001  # pg_advisory_xact_lock key for creating/upgrading the schema
INDEX_LOCK_CLASS = 0x6D6C_0003  # with hashtext(experiment_id): one indexer at a time per experiment
SORT_LOCK_CLASS = 0x6D6C_0004  # with hashtext(experiment_id): one builder of its sort indexes at a time
SLOT_INDEXES = 16  # fields beyond this slot still sort and filter, by scanning

_V1 = f"""
CREATE SCHEMA IF NOT EXISTS {INDEX_SCHEMA};
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.experiments (
    experiment_id text PRIMARY KEY,
    name          text NOT NULL,
    version       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.runs (
    run_id        text PRIMARY KEY,
    experiment_id text NOT NULL REFERENCES {INDEX_SCHEMA}.experiments ON DELETE CASCADE,
    status        text NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON {INDEX_SCHEMA}.runs (experiment_id, status);
"""

# Run ids are unique within an experiment; keying on (experiment_id, run_id) keeps a copied
# experiment folder (same run ids, another name) from taking over the original's rows. Ids are
# ASCII: the "C" collation compares them bytewise, which makes index upkeep several times cheaper
# than a libc locale. The (experiment_id, status) index goes: the primary key serves per-experiment
# scans, and without it changing a run's status is a HOT update.
_V2 = f"""
ALTER TABLE {INDEX_SCHEMA}.runs DROP CONSTRAINT IF EXISTS runs_experiment_id_fkey;
ALTER TABLE {INDEX_SCHEMA}.runs DROP CONSTRAINT IF EXISTS runs_pkey;
DROP INDEX IF EXISTS {INDEX_SCHEMA}.runs_by_experiment;
ALTER TABLE {INDEX_SCHEMA}.experiments
    ALTER COLUMN experiment_id TYPE text COLLATE "C",
    ADD COLUMN IF NOT EXISTS description jsonb NOT NULL DEFAULT '{{}}';
ALTER TABLE {INDEX_SCHEMA}.runs
    ALTER COLUMN experiment_id TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ADD COLUMN IF NOT EXISTS started_at timestamptz,
    ADD COLUMN IF NOT EXISTS duration   double precision,
    ADD COLUMN IF NOT EXISTS replicate  integer,
    ADD COLUMN IF NOT EXISTS seed       bigint,
    ADD COLUMN IF NOT EXISTS params     jsonb NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS metrics    jsonb NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS error      text;
ALTER TABLE {INDEX_SCHEMA}.runs ADD CONSTRAINT runs_pkey PRIMARY KEY (experiment_id, run_id);
ALTER TABLE {INDEX_SCHEMA}.runs ADD CONSTRAINT runs_experiment_id_fkey
    FOREIGN KEY (experiment_id) REFERENCES {INDEX_SCHEMA}.experiments ON DELETE CASCADE;
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.catalogue (
    experiment_id text COLLATE "C" NOT NULL REFERENCES {INDEX_SCHEMA}.experiments ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('param', 'metric')),
    name          text NOT NULL,
    type          text NOT NULL,
    PRIMARY KEY (experiment_id, kind, name)
);
"""

# Version 3: typed numbers per run (see the module docstring), slots for the catalogue's entries,
# and run counts kept by a trigger. Existing rows get their numbers from their jsonb here; from
# now on the indexer sends them (metalab.store.index_rows.numbers_row).
_V3 = f"""
ALTER TABLE {INDEX_SCHEMA}.catalogue ADD COLUMN IF NOT EXISTS slot integer;
UPDATE {INDEX_SCHEMA}.catalogue c SET slot = s.n
FROM (SELECT experiment_id, kind, name, row_number() OVER (PARTITION BY experiment_id ORDER BY kind, name) AS n
      FROM {INDEX_SCHEMA}.catalogue) s
WHERE (c.experiment_id, c.kind, c.name) = (s.experiment_id, s.kind, s.name);
ALTER TABLE {INDEX_SCHEMA}.catalogue ALTER COLUMN slot SET NOT NULL;
ALTER TABLE {INDEX_SCHEMA}.catalogue DROP CONSTRAINT IF EXISTS catalogue_slot_key;
ALTER TABLE {INDEX_SCHEMA}.catalogue ADD CONSTRAINT catalogue_slot_key UNIQUE (experiment_id, slot);
ALTER TABLE {INDEX_SCHEMA}.runs ADD COLUMN IF NOT EXISTS numbers double precision[];
UPDATE {INDEX_SCHEMA}.runs r SET numbers = (
    SELECT array_agg(CASE jsonb_typeof(v)
        WHEN 'number' THEN CASE WHEN v < '1e308' AND v > '-1e308' THEN v::float8 END
        WHEN 'string' THEN CASE WHEN v IN ('"NaN"', '"Infinity"', '"-Infinity"') THEN (v #>> '{{}}')::float8 END
        END ORDER BY c.slot)
    FROM {INDEX_SCHEMA}.catalogue c,
         LATERAL (SELECT (CASE c.kind WHEN 'param' THEN r.params ELSE r.metrics END) -> c.name AS v) AS value
    WHERE c.experiment_id = r.experiment_id);
""" + "".join(
    f"""CREATE INDEX IF NOT EXISTS runs_slot_{k} ON {INDEX_SCHEMA}.runs (experiment_id, (numbers[{k}]), run_id)
    INCLUDE (numbers) WHERE numbers[{k}] IS NOT NULL;
CREATE STATISTICS IF NOT EXISTS {INDEX_SCHEMA}.runs_slot_{k}_values ON (numbers[{k}]) FROM {INDEX_SCHEMA}.runs;
"""
    for k in range(1, SLOT_INDEXES + 1)
) + f"""
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.run_counts (
    experiment_id text COLLATE "C" NOT NULL,
    status        text NOT NULL,
    runs          bigint NOT NULL,
    last_finished timestamptz,
    PRIMARY KEY (experiment_id, status)
);
INSERT INTO {INDEX_SCHEMA}.run_counts (experiment_id, status, runs, last_finished)
SELECT experiment_id, status, count(*), max(finished_at) FROM {INDEX_SCHEMA}.runs GROUP BY 1, 2
ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION {INDEX_SCHEMA}.count_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Deltas per (experiment, status), applied in key order so concurrent writers lock alike.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {INDEX_SCHEMA}.run_counts AS c (experiment_id, status, runs, last_finished)
        SELECT experiment_id, status, count(*), max(finished_at) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (experiment_id, status) DO UPDATE
        SET runs = c.runs + excluded.runs, last_finished = greatest(c.last_finished, excluded.last_finished);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {INDEX_SCHEMA}.run_counts AS c (experiment_id, status, runs, last_finished)
        SELECT experiment_id, status, sum(n), max(f) FROM (
            SELECT experiment_id, status, 1 AS n, finished_at AS f FROM new_rows
            UNION ALL SELECT experiment_id, status, -1, NULL FROM old_rows) d
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (experiment_id, status) DO UPDATE
        SET runs = c.runs + excluded.runs, last_finished = greatest(c.last_finished, excluded.last_finished);
    ELSE
        UPDATE {INDEX_SCHEMA}.run_counts AS c SET runs = c.runs - d.n
        FROM (SELECT experiment_id, status, count(*) AS n FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2) d
        WHERE (c.experiment_id, c.status) = (d.experiment_id, d.status);
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER runs_counted_insert AFTER INSERT ON {INDEX_SCHEMA}.runs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {INDEX_SCHEMA}.count_runs();
CREATE OR REPLACE TRIGGER runs_counted_update AFTER UPDATE ON {INDEX_SCHEMA}.runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {INDEX_SCHEMA}.count_runs();
CREATE OR REPLACE TRIGGER runs_counted_delete AFTER DELETE ON {INDEX_SCHEMA}.runs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {INDEX_SCHEMA}.count_runs();
"""

# Version 4: the index follows the record files (metalab.store.indexer). record_files remembers
# how many bytes of each file are in the index, committed with the rows they hold, so a crash
# of the indexer never loses or repeats a line; description_stamp says which experiment.json
# the experiment's row was made from.
_V4 = f"""
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.record_files (
    experiment_id text COLLATE "C" NOT NULL REFERENCES {INDEX_SCHEMA}.experiments ON DELETE CASCADE,
    file          text COLLATE "C" NOT NULL,
    indexed_bytes bigint NOT NULL,
    PRIMARY KEY (experiment_id, file)
);
ALTER TABLE {INDEX_SCHEMA}.experiments ADD COLUMN IF NOT EXISTS description_stamp text;
"""

# Version 5: the runs' stepped metrics, for Atlas's curves of many runs at once (one row per run
# and metric: a curve is one index lookup, not a parse of the run's record). Packed floats, not
# float8[]: a thousand runs of a thousand steps are 8 MB to send and one numpy.frombuffer each,
# where arrays were 24 MB and a Python float per value (measured: the curves' budget). Forgetting
# what the index has read makes the indexer read every file again, which fills the table.
_V5 = f"""
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.steps (
    experiment_id text COLLATE "C" NOT NULL,
    run_id        text COLLATE "C" NOT NULL,
    name          text COLLATE "C" NOT NULL,
    steps         bytea,
    vals          bytea NOT NULL,
    PRIMARY KEY (experiment_id, run_id, name),
    FOREIGN KEY (experiment_id, run_id) REFERENCES {INDEX_SCHEMA}.runs ON DELETE CASCADE
);
DELETE FROM {INDEX_SCHEMA}.record_files;
"""

# Version 6: sort indexes for large experiments (metalab.store.sort_indexes says why and when).
_V6 = f"""
CREATE TABLE IF NOT EXISTS {INDEX_SCHEMA}.sort_indexes (
    experiment_id text COLLATE "C" NOT NULL REFERENCES {INDEX_SCHEMA}.experiments ON DELETE CASCADE,
    filter_slot   integer NOT NULL,
    sort_slot     integer NOT NULL,
    index_name    text NOT NULL,
    PRIMARY KEY (experiment_id, filter_slot, sort_slot)
);
ALTER TABLE {INDEX_SCHEMA}.experiments ADD COLUMN IF NOT EXISTS sort_indexes_planned boolean NOT NULL DEFAULT false;
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (6, _V6))

# -- indexing runs from the files: their record lines COPY'd verbatim, unpacked by the server ---

LINE_TABLE = "metalab_line_batch"
LINE_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {LINE_TABLE} (
    run_id text COLLATE "C" NOT NULL, numbers double precision[], line jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
LINE_COPY = f"COPY {LINE_TABLE} (run_id, numbers, line) FROM STDIN"

_LINE_INSERT = f"""
INSERT INTO {INDEX_SCHEMA}.runs AS r
    (experiment_id, run_id, status, started_at, finished_at, duration, replicate, seed, params, metrics, error, numbers)
SELECT %s, run_id, l->>'status', to_timestamp(s), to_timestamp(s + d), d,
       (l->>'replicate')::integer, (l->>'seed')::bigint, l->'params', coalesce(l->'metrics', '{{}}'), l->>'error', numbers
FROM (SELECT run_id, numbers, line AS l, coalesce((line->>'started_at')::float8, 0) AS s,
             coalesce((line->>'duration')::float8, 0) AS d
      FROM {LINE_TABLE}) AS b
ON CONFLICT (experiment_id, run_id) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration = excluded.duration, replicate = excluded.replicate, seed = excluded.seed,
    params = excluded.params, metrics = excluded.metrics, error = excluded.error, numbers = excluded.numbers
WHERE (r.status, r.started_at, r.finished_at, r.duration, r.replicate, r.seed, r.params, r.metrics, r.error, r.numbers)
      IS DISTINCT FROM (excluded.status, excluded.started_at, excluded.finished_at, excluded.duration,
                        excluded.replicate, excluded.seed, excluded.params, excluded.metrics, excluded.error,
                        excluded.numbers)
"""

# A rebuild: the files' current record of each run replaces whatever the index holds; rows that
# already agree are left as they are, so rebuilding a sound index writes nothing.
LINE_UPSERT = _LINE_INSERT

# Following the files: the lines are new, and a row changes only for a record that wins as
# records.pick_latest says (a success beats a failure, which beats a running or interrupted
# line: records.status_rank; then the later start), so a late duplicate never overwrites a
# better record already indexed, and a run's provisional line never a finished one.
_RANK = "CASE {t}.status WHEN 'success' THEN 2 WHEN 'running' THEN 0 WHEN 'interrupted' THEN 0 ELSE 1 END"
LINE_MERGE = _LINE_INSERT + f"""
  AND ({_RANK.format(t="excluded")}, excluded.started_at) >= ({_RANK.format(t="r")}, coalesce(r.started_at, '-infinity'))
"""

# The batch's stepped metrics, for the runs whose row is now the batch's line (same status and
# start: a line that lost to a better record changes nothing). A step value that is not a
# number (hand-edited files) becomes NaN rather than failing the batch.
_ROW_IS_LINE = ("r.experiment_id = %(experiment)s AND r.run_id = b.run_id AND r.status = b.line->>'status' "
                "AND r.started_at = to_timestamp(coalesce((b.line->>'started_at')::float8, 0))")
_NUMBER = "CASE WHEN jsonb_typeof(e->{i}) = 'number' OR e->>{i} IN ('NaN', 'Infinity', '-Infinity') THEN (e->>{i})::float8 ELSE 'NaN' END"
STEPS_FILL = f"""
INSERT INTO {INDEX_SCHEMA}.steps AS t (experiment_id, run_id, name, steps, vals)
SELECT %(experiment)s, b.run_id, s.key, packed.steps, packed.vals
FROM {LINE_TABLE} b JOIN {INDEX_SCHEMA}.runs r ON {_ROW_IS_LINE}
CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(b.line->'steps') WHEN 'object' THEN b.line->'steps' ELSE '{{}}' END) s
CROSS JOIN LATERAL (
    SELECT CASE WHEN bool_and({_NUMBER.format(i=0)} = ord - 1) THEN NULL
                ELSE string_agg(float8send({_NUMBER.format(i=0)}), '' ORDER BY ord) END AS steps,
           coalesce(string_agg(float8send({_NUMBER.format(i=1)}), '' ORDER BY ord), '') AS vals
    FROM jsonb_array_elements(s.value) WITH ORDINALITY AS p(e, ord)
) packed
WHERE b.line ? 'steps' AND jsonb_typeof(s.value) = 'array'
ON CONFLICT (experiment_id, run_id, name) DO UPDATE SET steps = excluded.steps, vals = excluded.vals
WHERE (t.steps, t.vals) IS DISTINCT FROM (excluded.steps, excluded.vals)
"""
# Series the run's current line no longer has (a rerun that stopped recording one).
STEPS_PRUNE = f"""
DELETE FROM {INDEX_SCHEMA}.steps t
WHERE t.experiment_id = %(experiment)s AND EXISTS (
    SELECT 1 FROM {LINE_TABLE} b JOIN {INDEX_SCHEMA}.runs r ON {_ROW_IS_LINE}
    WHERE b.run_id = t.run_id AND NOT coalesce(b.line->'steps' ? t.name, false))
"""

# The experiment's rows the files no longer have. The batch table has no statistics and the
# runs' may be stale (a fresh experiment looks empty), so the planner could pick a nested loop
# over the whole batch for every row: LINE_PLAN rules that out for the rebuild's transaction.
# Ruling it out inflates the plans' costs past jit_above_cost, and compiling them would take
# longer than running them (measured: 0.4-0.6 s of a 10,000-run rebuild), so no JIT either.
LINE_PLAN = "SET LOCAL enable_nestloop = off; SET LOCAL jit = off"
LINE_PRUNE = f"""
DELETE FROM {INDEX_SCHEMA}.runs r
WHERE r.experiment_id = %s AND NOT EXISTS (SELECT 1 FROM {LINE_TABLE} b WHERE b.run_id = r.run_id)
"""

# One indexer per experiment at a time, for the whole transaction: it reads and advances the
# files' offsets, and hands out the catalogue's next free slots (a slot never changes).
INDEX_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

_ENTRIES = "unnest(%(kinds)s::text[], %(names)s::text[], %(types)s::text[]) AS t(kind, name, type)"

CATALOGUE_NEW = f"""
INSERT INTO {INDEX_SCHEMA}.catalogue (experiment_id, kind, name, type, slot)
SELECT %(experiment)s, t.kind, t.name, t.type, top.slot + row_number() OVER (ORDER BY t.kind, t.name)
FROM {_ENTRIES}
CROSS JOIN (SELECT coalesce(max(slot), 0) AS slot FROM {INDEX_SCHEMA}.catalogue
            WHERE experiment_id = %(experiment)s) AS top
WHERE NOT EXISTS (SELECT 1 FROM {INDEX_SCHEMA}.catalogue c
                  WHERE (c.experiment_id, c.kind, c.name) = (%(experiment)s, t.kind, t.name))
"""

# Following the files: a name whose type differs between runs becomes 'mixed' ('null' yields).
CATALOGUE_MERGE = f"""
UPDATE {INDEX_SCHEMA}.catalogue c SET type = CASE
    WHEN c.type = 'null' THEN t.type
    WHEN t.type = 'null' THEN c.type
    ELSE 'mixed' END
FROM {_ENTRIES}
WHERE (c.experiment_id, c.kind, c.name) = (%(experiment)s, t.kind, t.name) AND c.type <> t.type
"""

# A rebuild's view: the files say exactly what the types are, and which names exist.
CATALOGUE_SET = f"""
UPDATE {INDEX_SCHEMA}.catalogue c SET type = t.type
FROM {_ENTRIES}
WHERE (c.experiment_id, c.kind, c.name) = (%(experiment)s, t.kind, t.name) AND c.type <> t.type
"""
CATALOGUE_PRUNE = f"""
DELETE FROM {INDEX_SCHEMA}.catalogue c
WHERE c.experiment_id = %(experiment)s
  AND (c.kind, c.name) NOT IN (SELECT t.kind, t.name FROM {_ENTRIES})
"""

CATALOGUE_SLOTS = f"SELECT kind, name, slot FROM {INDEX_SCHEMA}.catalogue WHERE experiment_id = %s"

EXPERIMENT_UPSERT = f"""
INSERT INTO {INDEX_SCHEMA}.experiments (experiment_id, name, version, description, description_stamp)
VALUES (%s, %s, %s, %s::jsonb, %s)
ON CONFLICT (experiment_id) DO UPDATE SET
    name = excluded.name, version = excluded.version, description = excluded.description,
    description_stamp = excluded.description_stamp, updated_at = now()
"""

EXPERIMENT_STAMP = f"SELECT description_stamp FROM {INDEX_SCHEMA}.experiments WHERE experiment_id = %s"

# -- how far the index has read each record file ---------------------------------------------

FILES_READ = f"SELECT file, indexed_bytes FROM {INDEX_SCHEMA}.record_files WHERE experiment_id = %s"
FILES_WRITE = f"""
INSERT INTO {INDEX_SCHEMA}.record_files (experiment_id, file, indexed_bytes)
SELECT %(experiment)s, f, n FROM unnest(%(files)s::text[], %(sizes)s::bigint[]) AS t(f, n)
ON CONFLICT (experiment_id, file) DO UPDATE SET indexed_bytes = excluded.indexed_bytes
"""
FILES_FORGET = f"DELETE FROM {INDEX_SCHEMA}.record_files WHERE experiment_id = %s"

# -- sort indexes (metalab.store.sort_indexes builds them, Atlas's pages use them) -----------------

# The (filter slot, sort slot) pairs of an experiment whose index is built and valid (an index
# left half-built by a killed CREATE INDEX CONCURRENTLY stays invalid, and is not used).
SORT_INDEXES_READ = f"""
SELECT s.filter_slot, s.sort_slot FROM {INDEX_SCHEMA}.sort_indexes s
JOIN pg_class c ON c.relname = s.index_name AND c.relnamespace = '{INDEX_SCHEMA}'::regnamespace
JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
WHERE s.experiment_id = %s
"""
