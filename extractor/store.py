"""FeatureStore: immutable HDF5 shards (tmp, fsync, rename) indexed by the SQLite catalog; one writer each."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from extractor.backbones import Fingerprint
from extractor.catalog import Catalog
from extractor.durable import publish, storage_error
from extractor.errors import CacheDamaged, Conflict, HeadstartError, NotFound
from extractor.locks import Busy, FileLock, SharedLock
from extractor.shardfile import shard_folder, write_shard

DTYPES = {"float32": np.float32, "float16": np.float16}
SHARD_BYTES = 64 * 1024 * 1024


def check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise HeadstartError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return np.dtype(DTYPES[dtype])


def default_home() -> Path:
    return Path(os.environ.get("HEADSTART_HOME") or Path.home() / ".headstart").expanduser()


@dataclass
class FeatureTable:
    """A dataset's cached vectors with their metadata, rows sorted by path."""

    features: np.ndarray
    paths: list[str]
    sha256: list[str]
    labels: list[str | None]
    splits: list[str]
    fingerprint: dict
    source: str = ""  # how the weights were given when these features were computed


class FeatureStore:
    """All cached features under one home directory."""

    def __init__(self, home: Path | str | None = None, create: bool = True) -> None:
        """`create=False` (commands that only read) refuses a home without a catalog instead of making one."""
        self.home = Path(home).expanduser() if home else default_home()
        if not create and not (self.home / "catalog.sqlite").is_file():
            raise NotFound(f"{self.home} holds no headstart catalog (nothing extracted there yet)",
                           cli="run `headstart extract` first, or pass the right --home")
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog.sqlite")

    def shard_dir(self, fp_id: str) -> Path:
        return shard_folder(self.home, fp_id)

    def writer_lock(self, fp_id: str) -> "WriterLock":
        """The one-writer-per-fingerprint lock (also taken by `verify --repair` before deleting files)."""
        return WriterLock(self.shard_dir(fp_id) / "writer.lock", fp_id)

    def dataset_lock(self, name: str) -> SharedLock:
        """Held shared by each extraction of the dataset, exclusively by its removal (`datasets rm`)."""
        return SharedLock(self.home / "locks" / f"dataset-{name}.lock")

    def writer(self, fp: Fingerprint, dtype: str = "float32", shard_rows: int | None = None,
               flush_seconds: float = 60.0, recipe: str = "") -> "ShardWriter":
        """A writer of clean vectors, or (with `recipe`) of augmented views, under the fingerprint's lock."""
        return ShardWriter(self, fp, check_dtype(dtype), shard_rows, flush_seconds, recipe)

    def read_rows(self, locations: list[tuple[str, int]], dim: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """Vectors at (shard file, row) locations, in the given order; one open per shard."""
        out = np.empty((len(locations), dim), dtype=dtype)
        by_file: dict[str, list[int]] = {}
        for pos, (file, _) in enumerate(locations):
            by_file.setdefault(file, []).append(pos)
        for file, positions in by_file.items():
            out[positions] = self.read_shard(file, np.array([locations[p][1] for p in positions]))
        return out

    def read_shard(self, file: str, rows: np.ndarray) -> np.ndarray:
        """The vectors at `rows` (any order, repeats allowed) of one shard file, as stored."""
        unique, inverse = np.unique(rows, return_inverse=True)
        try:
            with h5py.File(self.home / file, "r", locking=False) as fh:
                data = fh["features"]
                block = data[()][unique] if len(unique) * 8 > data.shape[0] else data[unique]
        except (OSError, KeyError, IndexError, ValueError) as exc:
            raise _damaged(file, len(rows), exc) from None
        return block[inverse]

    def read(self, fp_id: str, shas: list[str], dim: int) -> np.ndarray:
        where = self.catalog.vector_locations(fp_id, shas)
        absent = [s for s in shas if s not in where]
        if absent:
            raise NotFound(f"{len(absent)} image(s) have no {fp_id} vector (first {absent[0][:12]})")
        return self.read_rows([where[s] for s in shas], dim)

    def table(self, dataset: str, fp_id: str, dtype: np.dtype = np.float32) -> FeatureTable:
        info = self.catalog.fingerprint(fp_id)
        if info is None:
            raise NotFound(f"no features with fingerprint {fp_id}")
        rows = self.catalog.dataset_rows(dataset, fp_id)
        features = self.read_rows([(r[4], r[5]) for r in rows], info["dim"], dtype)
        return FeatureTable(features, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                            [r[3] for r in rows], json.loads(info["spec"]), info["source"])

    def views(self, dataset: str, fp_id: str, recipe: str, count: int, split: str = "train",
              dtype: np.dtype = np.float32) -> tuple[np.ndarray, list[str], list[int]]:
        """The split's views 0..count-1 under a recipe: (vectors, content hash and view index of each row)."""
        info = self.catalog.fingerprint(fp_id)
        rows = self.catalog.view_rows(dataset, fp_id, recipe, count, split)
        features = self.read_rows([(r[2], r[3]) for r in rows], info["dim"], dtype) if rows else \
            np.empty((0, info["dim"]), dtype)
        return features, [r[0] for r in rows], [r[1] for r in rows]

    def overview(self, with_failures: bool = False, max_failures: int | None = None) -> list[dict]:
        """One row per dataset: kind, root, sources, split, counts per split, vectors per fingerprint, failures
        (the first `max_failures` by path; `failed` counts them all)."""
        rows = []
        for name in self.catalog.dataset_names():
            info = self.catalog.dataset(name)
            summary = self.catalog.dataset_summary(name)
            features = []
            for fp, backbone, spec, n, source in summary["fingerprints"]:
                body = json.loads(spec)
                features.append({"fingerprint": fp, "backbone": backbone, "weights": body["weights"],
                                 "source": source, "input_size": body.get("input_size"), "vectors": n})
            rows.append({
                "name": name, "kind": info["kind"], "root": info["root"], "sources": self.catalog.sources(name),
                "split": info["split"], "seed": info["seed"], "splits": summary["splits"],
                "failed": summary["failed"], "features": features, "views": self._views_overview(name),
                "failures": [{"path": p, "reason": r} for p, r in self.catalog.failures(name, max_failures)]
                             if with_failures else [],
            })
        return rows

    def _views_overview(self, dataset: str) -> list[dict]:
        from extractor.augment import TTA, parse

        return [{**v, "recipe_name": parse(v["recipe"]).name} for v in self.catalog.view_summary(dataset)
                if v["recipe"] != TTA]

    MIN_TIMED = 16  # fewer vectors computed in one run give no extraction rate worth keeping

    def rates(self) -> dict[str, float]:
        """Extraction img/s per fingerprint on this machine, from the last run that computed enough to time."""
        try:
            return json.loads((self.home / "rates.json").read_text())
        except (OSError, ValueError):
            return {}

    def record_rate(self, fp_id: str, vectors: int, seconds: float) -> None:
        """Keep a run's extraction rate (best effort: a read-only home keeps none)."""
        if vectors < self.MIN_TIMED or seconds <= 0:
            return
        rates = {**self.rates(), fp_id: round(vectors / seconds, 2)}
        tmp, final = self.home / "rates.json.tmp", self.home / "rates.json"
        try:
            tmp.write_text(json.dumps(rates, indent=1, sort_keys=True))
            publish(tmp, final)
        except OSError:
            tmp.unlink(missing_ok=True)

    def resolve(self, dataset: str, backbone: str | None, weights: str | None = None, size: int | None = None) -> str:
        """The fingerprint id of `dataset`'s features for `backbone` (extractor.lookup.resolve)."""
        from extractor.lookup import resolve

        return resolve(self, dataset, backbone, weights, size)

    def cached_backbone(self, dataset: str, backbone: str | None) -> str:
        """`backbone`, or the one the dataset's features are of (extractor.lookup.cached_backbone)."""
        from extractor.lookup import cached_backbone

        return cached_backbone(self, dataset, backbone)


class WriterLock(FileLock):
    """A fingerprint's writer lock; a second writer gets one line naming the holder."""

    def __init__(self, path: Path, fp_id: str) -> None:
        super().__init__(path)
        self.fp_id = fp_id

    def acquire(self, wait: bool = False) -> "WriterLock":
        try:
            return super().acquire(wait)
        except Busy as busy:
            raise Conflict(f"another extraction is already writing {self.fp_id} features ({busy.holder}); wait "
                           f"for it to finish, or stop it, then run again") from None


def _damaged(file: str, count: int, exc: Exception) -> CacheDamaged:
    why = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({type(exc).__name__})"
    return CacheDamaged(f"{count} cached vectors are in the shard file {file}, which is {why}",
                        cli="run the same `headstart extract` again to compute them anew, or `headstart verify "
                            "--repair` to check the whole cache",
                        api="POST /extract for this dataset again to compute them anew")


class ShardWriter:
    """Buffers vectors and writes them as immutable shards; holds the fingerprint's writer lock."""

    def __init__(self, store: FeatureStore, fp: Fingerprint, dtype: np.dtype, shard_rows: int | None,
                 flush_seconds: float, recipe: str = "") -> None:
        self.store, self.fp, self.dtype, self.recipe = store, fp, dtype, recipe
        self._views: list[int] = []
        self.shard_rows = shard_rows or max(1, SHARD_BYTES // (fp.dim * dtype.itemsize))
        self.flush_seconds = flush_seconds
        self.dir = store.shard_dir(fp.id)
        self._shas: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._last_flush = time.monotonic()
        self._lock: WriterLock | None = None
        self.written = 0

    def __enter__(self) -> "ShardWriter":
        """Take the fingerprint's writer lock (extractor.locks), clean up after a crash, register the fingerprint."""
        self._lock = self.store.writer_lock(self.fp.id).acquire()
        try:
            self.clean()
            self.store.catalog.register_fingerprint(self.fp.id, self.fp.backbone, self.fp.dim, self.fp.to_json(),
                                                    self.fp.source)
        except BaseException:
            self._lock.release()
            raise
        return self

    def clean(self) -> None:
        """Remove leftovers of a crash: temp files, and renamed shards the catalog never committed (on entering;
        the Ray engine also when its run ends: a killed actor may have published a file never reported)."""
        known = {Path(f).name for f in self.store.catalog.shard_files(self.fp.id)}
        for path in self.dir.iterdir():
            if path.name.endswith(".tmp") or (path.suffix == ".h5" and path.name not in known):
                path.unlink(missing_ok=True)

    def add(self, shas: list[str], vectors: np.ndarray, views: list[int] | None = None) -> None:
        """Buffer rows: clean vectors, or (a views writer) views with their indices."""
        if bool(self.recipe) != (views is not None):
            raise ValueError("a views writer takes view indices, a clean writer none")
        self._shas.extend(shas)
        self._views.extend(views or [])
        self._vectors.append(np.asarray(vectors))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        elif len(self._shas) >= self.shard_rows:
            self.flush(full_only=True)

    def flush(self, full_only: bool = False) -> None:
        """Write the buffered rows as shards of `shard_rows` (`full_only`: keep a last partial one buffered). The
        buffered batches are written as they are, with no copy of a whole shard first."""
        if not full_only:
            self._last_flush = time.monotonic()
        cut = len(self._shas) - len(self._shas) % self.shard_rows if full_only else len(self._shas)
        while cut:
            n, parts, got, queue = min(self.shard_rows, cut), [], 0, list(self._vectors)
            while got < n:
                head = queue.pop(0)
                parts.append(head[:n - got])
                got += len(parts[-1])
                if len(parts[-1]) < len(head):
                    queue.insert(0, head[len(parts[-1]):])
            self._write(self._shas[:n], parts, self._views[:n] if self.recipe else None)
            # only a committed shard leaves the buffer (a failed write keeps its rows for the next flush)
            self._shas, self._views, self._vectors, cut = self._shas[n:], self._views[n:], queue, cut - n

    def _write(self, shas: list[str], parts: list[np.ndarray], views: list[int] | None = None) -> None:
        """Write one shard file (tmp, fsync, rename), then commit it; on a failed write or commit nothing stays
        that a reader could see, and a full or read-only disk is one line (StorageFull)."""
        file, size = write_shard(self.store.home, self.dir, self.fp.id, self.fp.dim, self.dtype, shas, parts,
                                 self.recipe, views)
        self.commit([(file, shas, size)], None if views is None else [views])

    def commit(self, shards: list[tuple[str, list[str], int]], views: list[list[int]] | None = None) -> None:
        """Make published shard files (file relative to the home, content hashes, bytes; a views writer: with
        each shard's view indices) visible in one catalog transaction; when the commit fails the files are removed
        (nothing uncommitted stays to be read)."""
        try:
            self.store.catalog.commit_shards(self.fp.id, self.dtype.name, shards, self.recipe, views)
        except sqlite3.Error as exc:
            for file, _, _ in shards:
                (self.store.home / file).unlink(missing_ok=True)
            raise storage_error(exc, f"committing {len(shards)} shard(s) to the catalog") or exc from None
        self.written += sum(len(shas) for _, shas, _ in shards)

    def __exit__(self, *exc) -> None:
        try:
            self.flush()  # keep finished work, also when interrupted
        finally:
            self._lock.release()
