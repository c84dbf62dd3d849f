"""The PostgreSQL index schema shared by PostgresStore (writer) and Atlas (reader).

The index is derived from the files (``PostgresStore.rebuild_index`` restores it), so the schema
can be upgraded freely. It is versioned: ``{INDEX_SCHEMA}.schema_version`` holds one row, and
``MIGRATIONS`` lists the steps from nothing to ``SCHEMA_VERSION``, each applied once, in order,
under a transaction-level advisory lock (two processes meeting a fresh database at the same time
create it once).

Tables (version 2):

    experiments  experiment_id PK, name, version, description jsonb (experiment.json),
                 created_at, updated_at
    runs         (experiment_id, run_id) PK, status ('success' | 'failed'), started_at,
                 finished_at, duration (seconds), replicate, seed (null beyond bigint), params jsonb,
                 metrics jsonb (name -> final value; NaN and infinities as the strings
                 "NaN", "Infinity", "-Infinity", which ``::float8`` reads back), error (the
                 traceback of a failed run, null on success)
    catalogue    (experiment_id, kind, name) PK, type: every param and metric name an
                 experiment's records have, kind 'param' | 'metric', type 'number' | 'string' |
                 'bool' | 'json' (lists, objects) | 'null' | 'mixed' (records disagree)

A run's row follows the record ``FileStore.load`` picks (a success beats a failure, then the
later start), so the index and the files agree on every run.
"""

from __future__ import annotations

__all__ = [
    "BATCH_COPY",
    "BATCH_DDL",
    "BATCH_TABLE",
    "CATALOGUE_CLEAR",
    "CATALOGUE_UPSERT",
    "EXPERIMENT_ENSURE",
    "EXPERIMENT_UPSERT",
    "INDEX_SCHEMA",
    "LINE_COPY",
    "LINE_DDL",
    "LINE_PLAN",
    "LINE_PRUNE",
    "LINE_TABLE",
    "LINE_UPSERT",
    "MIGRATIONS",
    "RUN_COLUMNS",
    "RUN_UPSERT",
    "SCHEMA_LOCK_KEY",
    "SCHEMA_VERSION",
]

INDEX_SCHEMA = "metalab"
SCHEMA_VERSION = 2
SCHEMA_LOCK_KEY = 0x6D6C_6978_0000_0001  # pg_advisory_xact_lock key for creating/upgrading the schema

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

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2))

# -- writing runs: COPY into a per-connection temp table, then one upsert per batch ----------

BATCH_TABLE = "metalab_run_batch"
# The order of the values a writer sends for each run (the batch table's columns).
RUN_COLUMNS = (
    "experiment_id", "run_id", "status", "started", "duration", "replicate", "seed", "params", "metrics", "error",
)  # fmt: skip

BATCH_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {BATCH_TABLE} (
    experiment_id text, run_id text, status text, started double precision, duration double precision,
    replicate integer, seed bigint, params jsonb, metrics jsonb, error text
) ON COMMIT DELETE ROWS
"""

BATCH_COPY = f"COPY {BATCH_TABLE} ({', '.join(RUN_COLUMNS)}) FROM STDIN"

# The row a run keeps agrees with FileStore.load (records.pick_latest): a success beats a
# failure, then the later start wins; so a late duplicate never overwrites a better record.
RUN_UPSERT = f"""
INSERT INTO {INDEX_SCHEMA}.runs AS r
    (experiment_id, run_id, status, started_at, finished_at, duration, replicate, seed, params, metrics, error)
SELECT experiment_id, run_id, status, to_timestamp(started), to_timestamp(started + duration), duration,
       replicate, seed, params, metrics, error
FROM {BATCH_TABLE}
ON CONFLICT (experiment_id, run_id) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration = excluded.duration, replicate = excluded.replicate, seed = excluded.seed,
    params = excluded.params, metrics = excluded.metrics, error = excluded.error
WHERE (excluded.status = 'success', excluded.started_at)
   >= (r.status = 'success', coalesce(r.started_at, '-infinity'))
"""

# -- restoring runs from the files: their record lines COPY'd verbatim, unpacked by the server ----

LINE_TABLE = "metalab_line_batch"
LINE_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {LINE_TABLE} (run_id text COLLATE "C" NOT NULL, line jsonb NOT NULL)
ON COMMIT DELETE ROWS
"""
LINE_COPY = f"COPY {LINE_TABLE} (run_id, line) FROM STDIN"

# The same values as a writer's batch (see PostgresSink / run_row); rows that already agree with
# the files are left as they are, so rebuilding a sound index writes nothing.
LINE_UPSERT = f"""
INSERT INTO {INDEX_SCHEMA}.runs AS r
    (experiment_id, run_id, status, started_at, finished_at, duration, replicate, seed, params, metrics, error)
SELECT %s, run_id, l->>'status', to_timestamp(s), to_timestamp(s + d), d,
       (l->>'replicate')::integer, (l->>'seed')::bigint, l->'params', coalesce(l->'metrics', '{{}}'), l->>'error'
FROM (SELECT run_id, line AS l, coalesce((line->>'started_at')::float8, 0) AS s,
             coalesce((line->>'duration')::float8, 0) AS d
      FROM {LINE_TABLE}) AS b
ON CONFLICT (experiment_id, run_id) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration = excluded.duration, replicate = excluded.replicate, seed = excluded.seed,
    params = excluded.params, metrics = excluded.metrics, error = excluded.error
WHERE (r.status, r.started_at, r.finished_at, r.duration, r.replicate, r.seed, r.params, r.metrics, r.error)
      IS DISTINCT FROM (excluded.status, excluded.started_at, excluded.finished_at, excluded.duration,
                        excluded.replicate, excluded.seed, excluded.params, excluded.metrics, excluded.error)
"""

# The experiment's rows the files no longer have. The batch table has no statistics and the
# runs' may be stale (a fresh experiment looks empty), so the planner could pick a nested loop
# over the whole batch for every row: LINE_PLAN rules that out for the rebuild's transaction.
LINE_PLAN = "SET LOCAL enable_nestloop = off"
LINE_PRUNE = f"""
DELETE FROM {INDEX_SCHEMA}.runs r
WHERE r.experiment_id = %s AND NOT EXISTS (SELECT 1 FROM {LINE_TABLE} b WHERE b.run_id = r.run_id)
"""

# New names only; a name whose type differs between runs becomes 'mixed' ('null' yields).
CATALOGUE_UPSERT = f"""
INSERT INTO {INDEX_SCHEMA}.catalogue AS c (experiment_id, kind, name, type)
SELECT %s, kind, name, type FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(kind, name, type)
ON CONFLICT (experiment_id, kind, name) DO UPDATE SET type = CASE
    WHEN c.type = 'null' THEN excluded.type
    WHEN excluded.type = 'null' THEN c.type
    ELSE 'mixed' END
WHERE c.type IS DISTINCT FROM excluded.type
"""

CATALOGUE_CLEAR = f"DELETE FROM {INDEX_SCHEMA}.catalogue WHERE experiment_id = %s"

EXPERIMENT_UPSERT = f"""
INSERT INTO {INDEX_SCHEMA}.experiments (experiment_id, name, version, description)
VALUES (%s, %s, %s, %s::jsonb)
ON CONFLICT (experiment_id) DO UPDATE SET
    name = excluded.name, version = excluded.version, description = excluded.description, updated_at = now()
"""

# A sink's first flush makes sure its experiment has a row (a SLURM task may start on a database
# that never saw write_experiment), without overwriting what write_experiment stored.
EXPERIMENT_ENSURE = f"""
INSERT INTO {INDEX_SCHEMA}.experiments (experiment_id, name, version, description)
VALUES (%s, %s, %s, %s::jsonb)
ON CONFLICT (experiment_id) DO NOTHING
"""
