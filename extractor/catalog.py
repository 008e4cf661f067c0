"""SQLite catalog: file hashes, datasets and members with splits, shards, vectors, failures, jobs."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from extractor.catalog_jobs import JobTable
from extractor.catalog_rows import RowQueries
from extractor.catalog_views import ViewTable
from extractor.errors import HeadstartError
from extractor.schema import SCHEMA_VERSION, upgrade

SOURCE_FIELDS = ("root", "kind", "labels_csv", "path_column", "label_column", "prefix")


class Catalog(JobTable, RowQueries, ViewTable):
    """One SQLite file in WAL mode; short connections, so readers never block the writer."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # a home this process cannot write (a serving container's `:ro` volume, another user's home): read-only
        # connections, the commands that only read work and writes are refused (see _check_read_only)
        self.read_only = self.path.is_file() and not os.access(self.path.parent, os.W_OK)
        self._uri = f"{self.path.resolve().as_uri()}?mode=ro"
        if self.read_only:
            self._check_read_only()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._migrate(con)

    def _migrate(self, con: sqlite3.Connection) -> None:
        """Create or upgrade the schema in one transaction; a second process waits and then finds it done."""
        con.isolation_level = None
        con.execute("BEGIN IMMEDIATE")
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HeadstartError(f"catalog {self.path} has schema {version}, newer than this headstart reads "
                                     f"({SCHEMA_VERSION}); upgrade headstart")
            if version < SCHEMA_VERSION:
                upgrade(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _check_read_only(self) -> None:
        """How a catalog this process cannot write is read. While a writer (another user's process) has it open,
        its WAL side files exist and a read-only connection shares its locks. Without them SQLite cannot make them
        here, and the file is read as immutable: unless a stopped process left writes in its WAL, which such a read
        would not see. A schema other than this headstart's is refused (an upgrade writes)."""
        try:
            with self.connect() as con:
                version = con.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.is_file() and wal.stat().st_size:
                raise HeadstartError(f"the home {self.path.parent} is read-only and its catalog still has writes in "
                                     f"{wal.name} (a process stopped before merging them); open it once where it "
                                     f"can be written (any `headstart datasets`), then read it read-only") from None
            self._uri += "&immutable=1"
            with self.connect() as con:
                version = con.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise HeadstartError(f"catalog {self.path} has schema {version} and this headstart reads "
                                 f"{SCHEMA_VERSION}; the home is read-only, so it cannot be upgraded: open it once "
                                 f"where it can be written" if version < SCHEMA_VERSION else
                                 f"catalog {self.path} has schema {version}, newer than this headstart reads "
                                 f"({SCHEMA_VERSION}); upgrade headstart")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose `with con:` blocks are transactions (commit, or rollback on error)."""
        if self.read_only:
            con = sqlite3.connect(self._uri, uri=True, timeout=30.0)
        else:
            con = sqlite3.connect(self.path, timeout=30.0)
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        except sqlite3.OperationalError as exc:
            if self.read_only and "readonly" in str(exc):
                raise HeadstartError(f"the home {self.path.parent} is read-only, and this command writes to it; "
                                     f"use a home that can be written (--home, HEADSTART_HOME) or mount it "
                                     f"read-write") from None
            raise
        finally:
            con.close()

    # --- file hash cache -------------------------------------------------------------------
    def cached_hashes(self, root: str) -> dict[str, tuple[int, int, str]]:
        """Remembered (size, mtime_ns, sha256) of the files below `root` (a range scan on the key)."""
        low = root.rstrip("/") + "/"
        with self.connect() as con:
            rows = con.execute("SELECT path, size, mtime_ns, sha256 FROM files WHERE path >= ? AND path < ?",
                               (low, low[:-1] + "0"))  # "0" sorts right after "/"
            return {p: (s, m, h) for p, s, m, h in rows}

    def remember_hashes(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        with self.connect() as con, con:
            con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

    # --- datasets ----------------------------------------------------------------------------
    def dataset(self, name: str) -> dict | None:
        with self.connect() as con:
            row = con.execute("SELECT name, root, kind, split, seed, created, updated FROM datasets "
                              "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        keys = ("name", "root", "kind", "split", "seed", "created", "updated")
        return dict(zip(keys, row, strict=True))

    def dataset_names(self) -> list[str]:
        with self.connect() as con:
            return [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name")]

    def members(self, dataset: str) -> list[tuple[str, str, str | None, str]]:
        """(path, sha256, label, split) sorted by path."""
        with self.connect() as con:
            return list(con.execute("SELECT path, sha256, label, split FROM members WHERE dataset = ? "
                                    "ORDER BY path", (dataset,)))

    def member_of(self, dataset: str, sha256: str) -> tuple[str, int] | None:
        """(path, source index) of one member with this content, or None when the dataset has none."""
        with self.connect() as con:
            return con.execute("SELECT path, source FROM members WHERE dataset = ? AND sha256 = ? ORDER BY path "
                               "LIMIT 1", (dataset, sha256)).fetchone()

    def member_sources(self, dataset: str) -> list[tuple[str, str, int]]:
        """(path, sha256, source index) of a dataset's members, sorted by path."""
        with self.connect() as con:
            return list(con.execute("SELECT path, sha256, source FROM members WHERE dataset = ? ORDER BY path",
                                    (dataset,)))

    def sources(self, dataset: str) -> list[dict]:
        """The folders (and CSVs) a dataset is made of, in the order they were added."""
        with self.connect() as con:
            rows = con.execute(f"SELECT {', '.join(SOURCE_FIELDS)} FROM sources WHERE dataset = ? ORDER BY idx",
                               (dataset,)).fetchall()
        return [dict(zip(SOURCE_FIELDS, row, strict=True)) for row in rows]

    def save_dataset(self, info: dict, members: list[tuple[str, str, str | None, str, int]],
                     sources: list[dict]) -> None:
        """Replace a dataset's definition (sources) and members (path, sha256, label, split, source) at once."""
        now = time.time()
        with self.connect() as con, con:
            con.execute(
                "INSERT INTO datasets VALUES (:name, :root, :kind, :split, :seed, :now, :now) "
                "ON CONFLICT(name) DO UPDATE SET root=:root, kind=:kind, split=:split, seed=:seed, updated=:now",
                {**info, "now": now})
            con.execute("DELETE FROM sources WHERE dataset = ?", (info["name"],))
            con.executemany("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [(info["name"], i, *(s[k] for k in SOURCE_FIELDS)) for i, s in enumerate(sources)])
            con.execute("DELETE FROM members WHERE dataset = ?", (info["name"],))
            con.executemany("INSERT INTO members VALUES (?, ?, ?, ?, ?, ?)",
                            [(info["name"], *m) for m in members])

    def drop_dataset(self, name: str) -> None:
        """Forget a dataset's definition, members and failures (cached vectors stay: they are by content)."""
        with self.connect() as con, con:
            for table, column in (("datasets", "name"), ("sources", "dataset"), ("members", "dataset"),
                                  ("failures", "dataset")):
                con.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))

    def set_failures(self, dataset: str, failures: list[tuple[str, str]]) -> None:
        """Replace a dataset's recorded failures: (path, reason)."""
        now = time.time()
        with self.connect() as con, con:
            con.execute("DELETE FROM failures WHERE dataset = ?", (dataset,))
            con.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                            [(dataset, p, r, now) for p, r in failures])

    def failures(self, dataset: str, limit: int | None = None) -> list[tuple[str, str]]:
        with self.connect() as con:
            return list(con.execute("SELECT path, reason FROM failures WHERE dataset = ? ORDER BY path LIMIT ?",
                                    (dataset, -1 if limit is None else limit)))

    def bad_content(self, limits: str) -> dict[str, str]:
        with self.connect() as con:
            return dict(con.execute("SELECT sha256, reason FROM bad_content WHERE limits = ?", (limits,)))

    def remember_bad_content(self, limits: str, rows: list[tuple[str, str]]) -> None:
        with self.connect() as con, con:
            con.executemany("INSERT OR REPLACE INTO bad_content VALUES (?, ?, ?)",
                            [(sha, limits, reason) for sha, reason in rows])

    # --- fingerprints, shards, vectors -----------------------------------------------------------
    def register_fingerprint(self, fp_id: str, backbone: str, dim: int, spec: str, source: str) -> None:
        """Record a fingerprint; `source` (how the weights were given) is updated to the latest."""
        with self.connect() as con, con:
            con.execute("INSERT INTO fingerprints VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET source = ?",
                        (fp_id, backbone, dim, spec, source, source))

    def fingerprint(self, fp_id: str) -> dict | None:
        with self.connect() as con:
            row = con.execute("SELECT id, backbone, dim, spec, source FROM fingerprints WHERE id = ?",
                              (fp_id,)).fetchone()
        return None if row is None else dict(zip(("id", "backbone", "dim", "spec", "source"), row, strict=True))

    def commit_shards(self, fp_id: str, dtype: str, shards: list[tuple[str, list[str], int | None]], recipe: str = "",
                      views: list[list[int]] | None = None) -> None:
        """Make renamed shard files visible, all in one transaction: each file's row (with its size in bytes) and
        all its vectors. With a `recipe`, their rows are views (`views` gives each shard's rows' view indices)."""
        if bool(recipe) != (views is not None) or (views is not None and len(views) != len(shards)):
            raise ValueError("view shards come with their rows' view indices, one list per shard; clean ones without")
        now = time.time()
        with self.connect() as con, con:
            for k, (file, shas, size) in enumerate(shards):
                shard = con.execute("INSERT INTO shards (fingerprint, file, rows, dtype, created, bytes, recipe) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (fp_id, file, len(shas), dtype, now, size, recipe)).lastrowid
                if recipe:
                    con.executemany("INSERT OR IGNORE INTO views VALUES (?, ?, ?, ?, ?, ?)",
                                    [(fp_id, recipe, sha, index, shard, row)
                                     for row, (sha, index) in enumerate(zip(shas, views[k], strict=True))])
                else:
                    con.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?)",
                                    [(fp_id, sha, shard, row) for row, sha in enumerate(shas)])

    def shard_files(self, fp_id: str) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT file FROM shards WHERE fingerprint = ?", (fp_id,))}

    SHARD_FIELDS = ("id", "fingerprint", "file", "rows", "dtype", "bytes", "recipe")

    def shards(self, fp_id: str | None = None, dataset: str | None = None) -> list[dict]:
        """Committed shards: all, one fingerprint's, or (with `dataset`) those holding the dataset's vectors."""
        cols = ", ".join(f"s.{c}" for c in self.SHARD_FIELDS)
        if dataset is not None:  # clean and view shards the dataset's members have rows in
            sql = (f"SELECT {cols} FROM shards s WHERE s.id IN (SELECT v.shard FROM members m JOIN vectors v ON "
                   f"v.fingerprint = ? AND v.sha256 = m.sha256 WHERE m.dataset = ? UNION SELECT w.shard FROM members "
                   f"m JOIN views w ON w.fingerprint = ? AND w.sha256 = m.sha256 WHERE m.dataset = ?) ORDER BY s.id")
            args: tuple = (fp_id, dataset, fp_id, dataset)
        else:
            sql = f"SELECT {cols} FROM shards s {'WHERE s.fingerprint = ?' if fp_id else ''} ORDER BY s.id"
            args = (fp_id,) if fp_id else ()
        with self.connect() as con:
            return [dict(zip(self.SHARD_FIELDS, r, strict=True)) for r in con.execute(sql, args)]

    def shard_vectors(self, shard: int) -> list[tuple[str, int, int]]:
        """(sha256, view, row) of what the catalog reads from one shard (view -1 for clean vectors)."""
        with self.connect() as con:
            return list(con.execute("SELECT sha256, -1, row FROM vectors WHERE shard = ? UNION ALL "
                                    "SELECT sha256, view, row FROM views WHERE shard = ? ORDER BY 3", (shard, shard)))

    def drop_shards(self, ids: list[int]) -> int:
        """Forget damaged shards and their vectors (the next extract computes them again); vectors dropped."""
        dropped = 0
        with self.connect() as con, con:
            for shard in ids:
                dropped += con.execute("DELETE FROM vectors WHERE shard = ?", (shard,)).rowcount
                dropped += con.execute("DELETE FROM views WHERE shard = ?", (shard,)).rowcount
                con.execute("DELETE FROM shards WHERE id = ?", (shard,))
        return dropped

    def missing_vectors(self, dataset: str, fp_id: str) -> list[str]:
        """Distinct sha256 of the dataset's members that have no vector under this fingerprint."""
        with self.connect() as con:
            return [r[0] for r in con.execute(
                "SELECT DISTINCT m.sha256 FROM members m LEFT JOIN vectors v "
                "ON v.fingerprint = ? AND v.sha256 = m.sha256 WHERE m.dataset = ? AND v.sha256 IS NULL "
                "ORDER BY m.path", (fp_id, dataset))]

    def vector_locations(self, fp_id: str, shas: list[str]) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        with self.connect() as con:
            for start in range(0, len(shas), 500):
                chunk = shas[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for sha, file, row in con.execute(
                        f"SELECT v.sha256, s.file, v.row FROM vectors v JOIN shards s ON s.id = v.shard "
                        f"WHERE v.fingerprint = ? AND v.sha256 IN ({marks})", (fp_id, *chunk)):
                    out[sha] = (file, row)
        return out

    def dataset_summary(self, dataset: str) -> dict:
        """Usable images per split (recorded failures left out) and, per fingerprint, members with vectors."""
        with self.connect() as con:
            splits = dict(con.execute(
                "SELECT split, COUNT(*) FROM members m WHERE dataset = ? AND NOT EXISTS "
                "(SELECT 1 FROM failures f WHERE f.dataset = m.dataset AND f.path = m.path) GROUP BY split",
                (dataset,)))
            per_fp = con.execute(
                "SELECT f.id, f.backbone, f.spec, COUNT(*), f.source FROM members m "
                "JOIN vectors v ON v.sha256 = m.sha256 "
                "JOIN fingerprints f ON f.id = v.fingerprint WHERE m.dataset = ? GROUP BY f.id ORDER BY f.id",
                (dataset,)).fetchall()
            failed = con.execute("SELECT COUNT(*) FROM failures WHERE dataset = ?", (dataset,)).fetchone()[0]
        return {"splits": splits, "fingerprints": per_fp, "failed": failed}
