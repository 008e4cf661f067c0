"""The catalog's SQLite schema, its version, and the steps that upgrade a catalog written by an earlier headstart."""

from __future__ import annotations

import json
import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY, root TEXT NOT NULL, kind TEXT NOT NULL, split TEXT NOT NULL,
    seed INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    dataset TEXT NOT NULL, idx INTEGER NOT NULL, root TEXT NOT NULL, kind TEXT NOT NULL, labels_csv TEXT,
    path_column TEXT, label_column TEXT, prefix TEXT NOT NULL, PRIMARY KEY (dataset, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    dataset TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, label TEXT, split TEXT NOT NULL,
    source INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (dataset, path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_sha ON members (sha256);
CREATE TABLE IF NOT EXISTS fingerprints (
    id TEXT PRIMARY KEY, backbone TEXT NOT NULL, dim INTEGER NOT NULL, spec TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, file TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL,
    dtype TEXT NOT NULL, created REAL NOT NULL, bytes INTEGER, recipe TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS vectors (
    fingerprint TEXT NOT NULL, sha256 TEXT NOT NULL, shard INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, sha256)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_shard ON vectors (shard);
CREATE TABLE IF NOT EXISTS views (
    fingerprint TEXT NOT NULL, recipe TEXT NOT NULL, sha256 TEXT NOT NULL, view INTEGER NOT NULL,
    shard INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (fingerprint, recipe, sha256, view)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS views_shard ON views (shard);
CREATE TABLE IF NOT EXISTS failures (
    dataset TEXT NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (dataset, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bad_content (
    sha256 TEXT PRIMARY KEY, limits TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, key TEXT, state TEXT NOT NULL, request TEXT NOT NULL,
    progress TEXT, result TEXT, error TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
"""

# PRAGMA user_version; 0 is a catalog from before versioning (or a new file).
# 2: fingerprints.source, failures without sha256. 3: sources (a dataset's folders and CSV), members.source,
# shards.bytes (a cheap check that a shard file is whole). 4: views (augmented views of images), shards.recipe.
SCHEMA_VERSION = 4


def _source_of(spec: str) -> str:
    """How the weights were given, recovered from a fingerprint spec (a weights file's path is not kept)."""
    weights = json.loads(spec).get("weights", "")
    if weights.startswith("imagenet:"):
        return "imagenet"
    if weights.startswith("random:seed="):
        return "random:" + weights.split(":")[1].removeprefix("seed=")
    return ""


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in con.execute(f"PRAGMA table_info({table})")}


def _create(con: sqlite3.Connection, table: str) -> None:
    """Run the one CREATE TABLE statement of `table` from SCHEMA."""
    start = SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    con.execute(SCHEMA[start:].split(";")[0])


def _to_2(con: sqlite3.Connection, tables: set[str]) -> None:
    if "fingerprints" in tables and "source" not in _columns(con, "fingerprints"):  # added with the service
        con.execute("ALTER TABLE fingerprints ADD COLUMN source TEXT NOT NULL DEFAULT ''")
        con.executemany("UPDATE fingerprints SET source = ? WHERE id = ?",
                        [(_source_of(spec), fp) for fp, spec in con.execute("SELECT id, spec FROM fingerprints")])
    if "failures" in tables and "sha256" in _columns(con, "failures"):  # an always-empty column, dropped
        con.execute("ALTER TABLE failures RENAME TO failures_old")
        _create(con, "failures")
        con.execute("INSERT INTO failures SELECT dataset, path, reason, at FROM failures_old")
        con.execute("DROP TABLE failures_old")


def _to_3(con: sqlite3.Connection, tables: set[str]) -> None:
    """Every dataset gets its one source (the labels CSV of a csv dataset was not recorded before)."""
    if "members" in tables and "source" not in _columns(con, "members"):
        con.execute("ALTER TABLE members ADD COLUMN source INTEGER NOT NULL DEFAULT 0")
    if "shards" in tables and "bytes" not in _columns(con, "shards"):
        con.execute("ALTER TABLE shards ADD COLUMN bytes INTEGER")
    _create(con, "sources")
    if "datasets" in tables:
        con.execute("INSERT OR IGNORE INTO sources SELECT name, 0, root, kind, NULL, NULL, NULL, '' FROM datasets")


def _to_4(con: sqlite3.Connection, tables: set[str]) -> None:
    """Shards say which recipe's views they hold ('' for clean vectors); the views table is new."""
    if "shards" in tables and "recipe" not in _columns(con, "shards"):
        con.execute("ALTER TABLE shards ADD COLUMN recipe TEXT NOT NULL DEFAULT ''")


def upgrade(con: sqlite3.Connection) -> None:
    """Bring a catalog (inside the caller's transaction) to SCHEMA_VERSION, keeping every row.

    Each step is idempotent: it looks at the columns it changes, so a new file (version 0, no tables) and
    a catalog of any earlier version take the same path."""
    tables = _tables(con)
    _to_2(con, tables)
    _to_3(con, tables)
    _to_4(con, tables)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            con.execute(statement)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
