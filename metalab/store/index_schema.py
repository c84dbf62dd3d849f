"""The PostgreSQL index schema shared by PostgresStore (writer) and Atlas (reader)."""

from __future__ import annotations

__all__ = ["INDEX_SCHEMA", "SCHEMA_DDL", "SCHEMA_VERSION"]

INDEX_SCHEMA = "metalab"
SCHEMA_VERSION = 1

SCHEMA_DDL = f"""
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
