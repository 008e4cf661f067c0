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


def _home_with_a_head(tmp_path, capsys):
    from tests.conftest import make_folder, run_main

    make_folder(tmp_path / "data", {"a": 4, "b": 4})
    h = ["--home", str(tmp_path / "home")]
    assert run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights",
                    "random", *h)[0] == 0
    assert run_main(capsys, "train", "--dataset", "d", "--name", "h", *h)[0] == 0
    return tmp_path / "home", h


def test_a_read_only_home_is_read_and_writes_are_one_line(tmp_path, capsys, monkeypatch):
    """Before: on a home the process cannot write (a `:ro` volume), every command, reading ones too, was a traceback
    (sqlite3: unable to open database file), since SQLite could not make the WAL's side files."""
    import os

    from tests.conftest import assert_one_line_error, run_main

    home, h = _home_with_a_head(tmp_path, capsys)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK and os.fspath(p) == str(home)
                        else real(p, mode, **kw))
    code, out, err = run_main(capsys, "datasets", *h)
    assert code == 0 and out.startswith("NAME") and "\nd " in out, err
    code, out, err = run_main(capsys, "predict", "h", "--dataset", "d", "--split", "test", *h)
    assert code == 0 and out, err
    code, _, err = run_main(capsys, "datasets", "rm", "d", *h)  # its catalog write is refused
    assert_one_line_error(code, err, f"the home {home} is read-only, and this command writes to it")


def test_a_home_on_a_read_only_mount(tmp_path, capsys):
    """The same on a real read-only bind mount (needs the right to mount: skipped where there is none)."""
    import subprocess

    from tests.conftest import assert_one_line_error, run_main

    home, _ = _home_with_a_head(tmp_path, capsys)
    mounted = tmp_path / "ro"
    mounted.mkdir()
    h = ["--home", str(mounted)]

    def mount() -> None:
        for step in (["mount", "--bind", str(home), str(mounted)], ["mount", "-o", "remount,ro,bind", str(mounted)]):
            if subprocess.run(step, capture_output=True).returncode:
                subprocess.run(["umount", str(mounted)], capture_output=True)
                pytest.skip("cannot make a read-only bind mount here")

    try:
        mount()
        code, out, err = run_main(capsys, "evaluate", "h", "--json", *h)
        assert code == 0 and json.loads(out)["metrics"]["n"] > 0, err
        code, _, err = run_main(capsys, "heads", "rm", "h", *h)
        assert_one_line_error(code, err, "is on a read-only file system, and this command writes there")
        subprocess.run(["umount", str(mounted)], check=True)
        (home / "catalog.sqlite-wal").write_bytes(b"x" * 32)  # writes a stopped process left unmerged
        mount()
        code, _, err = run_main(capsys, "datasets", *h)
        assert_one_line_error(code, err, "is read-only and its catalog still has writes in catalog.sqlite-wal")
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)
