"""Catalog schema versions: a catalog written by an earlier headstart is upgraded in place, keeping every row."""

from __future__ import annotations

import json
import sqlite3

import pytest

from extractor.catalog import SCHEMA_VERSION, Catalog
from extractor.errors import HeadstartError

# The tables as the first release wrote them: fingerprints without `source`, failures with a `sha256` column,
# no jobs table, no user_version.
FIRST_RELEASE = """
CREATE TABLE datasets (
    name TEXT PRIMARY KEY, root TEXT NOT NULL, kind TEXT NOT NULL, split TEXT NOT NULL,
    seed INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE fingerprints (id TEXT PRIMARY KEY, backbone TEXT NOT NULL, dim INTEGER NOT NULL, spec TEXT NOT NULL);
CREATE TABLE failures (
    dataset TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (dataset, path)) WITHOUT ROWID;
"""


def first_release_catalog(path):
    con = sqlite3.connect(path)
    con.executescript(FIRST_RELEASE)
    specs = {"vgg16-a": "imagenet:VGG16_Weights.IMAGENET1K_V1", "tiny-b": "random:seed=7:init=headstart-kaiming/1",
             "vgg16-c": "file:sha256=abc"}
    con.executemany("INSERT INTO fingerprints VALUES (?, ?, ?, ?)",
                    [(fp, fp.split("-")[0], 8, json.dumps({"weights": w})) for fp, w in specs.items()])
    con.execute("INSERT INTO datasets VALUES ('pets', '/data/pets', 'folders', '0.6,0.2,0.2', 42, 1.0, 1.0)")
    con.execute("INSERT INTO failures VALUES ('pets', 'cats/x.jpg', NULL, 'empty file (0 bytes)', 1.0)")
    con.commit()
    con.close()


def test_first_release_catalog_is_upgraded_in_place(tmp_path):
    path = tmp_path / "catalog.sqlite"
    first_release_catalog(path)
    catalog = Catalog(path)
    assert catalog.failures("pets") == [("cats/x.jpg", "empty file (0 bytes)")]
    assert catalog.dataset("pets")["root"] == "/data/pets"
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        sources = dict(con.execute("SELECT id, source FROM fingerprints"))
    assert sources == {"vgg16-a": "imagenet", "tiny-b": "random:7", "vgg16-c": ""}
    catalog.set_failures("pets", [("dogs/y.jpg", "not an image")])  # the current code writes the new layout
    assert Catalog(path).failures("pets") == [("dogs/y.jpg", "not an image")] and catalog.jobs() == []


def test_a_catalog_from_a_newer_headstart_is_refused(tmp_path):
    path = tmp_path / "catalog.sqlite"
    Catalog(path)
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HeadstartError, match="newer than this headstart reads"):
        Catalog(path)
