"""FeatureStore: immutable HDF5 shards (tmp, fsync, rename) indexed by the SQLite catalog; one writer each."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from extractor.backbones import Fingerprint, get_spec, make_fingerprint, resolve_size
from extractor.catalog import Catalog
from extractor.durable import publish
from extractor.errors import Conflict, HeadstartError, NotFound
from extractor.weights import identity, parse_weights

DTYPES = {"float32": np.float32, "float16": np.float16}
SHARD_BYTES = 64 * 1024 * 1024
FLOAT16_MAX = float(np.finfo(np.float16).max)
_HELD: set[str] = set()  # fingerprints this process is writing (POSIX locks do not conflict within a process)
_HELD_GUARD = threading.Lock()


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

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog.sqlite")

    def shard_dir(self, fp_id: str) -> Path:
        return self.home / "features" / fp_id

    def writer(self, fp: Fingerprint, dtype: str = "float32", shard_rows: int | None = None,
               flush_seconds: float = 60.0) -> "ShardWriter":
        return ShardWriter(self, fp, check_dtype(dtype), shard_rows, flush_seconds)

    def read_rows(self, locations: list[tuple[str, int]], dim: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """Vectors at (shard file, row) locations, in the given order; one open per shard."""
        out = np.empty((len(locations), dim), dtype=dtype)
        by_file: dict[str, list[int]] = {}
        for pos, (file, _) in enumerate(locations):
            by_file.setdefault(file, []).append(pos)
        for file, positions in by_file.items():
            rows = np.array([locations[p][1] for p in positions])
            unique, inverse = np.unique(rows, return_inverse=True)
            with h5py.File(self.home / file, "r", locking=False) as fh:
                data = fh["features"]
                block = data[()][unique] if len(unique) * 8 > data.shape[0] else data[unique]
            out[positions] = block[inverse]
        return out

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

    def overview(self, with_failures: bool = False, max_failures: int | None = None) -> list[dict]:
        """One row per dataset: kind, root, split, counts per split, vectors per fingerprint, failures
        (the first `max_failures` by path; `failed` counts them all)."""
        rows = []
        for name in self.catalog.dataset_names():
            info = self.catalog.dataset(name)
            summary = self.catalog.dataset_summary(name)
            rows.append({
                "name": name, "kind": info["kind"], "root": info["root"], "split": info["split"],
                "seed": info["seed"], "splits": summary["splits"], "failed": summary["failed"],
                "features": [{"fingerprint": fp, "backbone": b, "weights": json.loads(spec)["weights"], "vectors": n}
                             for fp, b, spec, n in summary["fingerprints"]],
                "failures": [{"path": p, "reason": r} for p, r in self.catalog.failures(name, max_failures)]
                             if with_failures else [],
            })
        return rows

    def resolve(self, dataset: str, backbone: str, weights: str | None = None, size: int | None = None) -> str:
        """The fingerprint id of `dataset`'s features for `backbone` (and weights, when several exist)."""
        if self.catalog.dataset(dataset) is None:
            names = ", ".join(self.catalog.dataset_names()) or "none yet"
            raise NotFound(f"no dataset {dataset!r}; known datasets: {names}. Run `headstart extract` first")
        spec = get_spec(backbone)
        if weights is not None:
            return make_fingerprint(spec, resolve_size(spec, size), identity(parse_weights(weights), spec)).id
        found = [(fp, json.loads(s)["weights"]) for fp, b, s, _ in
                 self.catalog.dataset_summary(dataset)["fingerprints"] if b == backbone]
        if not found:
            raise NotFound(f"dataset {dataset!r} has no {backbone} features; "
                           f"run `headstart extract DATA_DIR --dataset {dataset} --backbone {backbone}`")
        if len(found) > 1:
            options = "; ".join(f"{fp} ({w})" for fp, w in found)
            raise HeadstartError(f"dataset {dataset!r} has {backbone} features from several weights: {options}; "
                                 f"pass --weights to choose")
        return found[0][0]


class ShardWriter:
    """Buffers vectors and writes them as immutable shards; holds the fingerprint's writer lock."""

    def __init__(self, store: FeatureStore, fp: Fingerprint, dtype: np.dtype, shard_rows: int | None,
                 flush_seconds: float) -> None:
        self.store, self.fp, self.dtype = store, fp, dtype
        self.shard_rows = shard_rows or max(1, SHARD_BYTES // (fp.dim * dtype.itemsize))
        self.flush_seconds = flush_seconds
        self.dir = store.shard_dir(fp.id)
        self._shas: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._last_flush = time.monotonic()
        self._lock_fh = None
        self.written = 0

    def __enter__(self) -> "ShardWriter":
        """Take the writer lock: a POSIX record lock (the kernel drops it the instant this process dies, even
        while forked DataLoader workers still hold the file open) plus a registry for writers in this process."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.dir / "writer.lock"
        with _HELD_GUARD:
            if self.fp.id in _HELD:
                raise self._busy(lock_path.read_text().strip())
            fh = open(lock_path, "a+")
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip()
                fh.close()
                raise self._busy(holder) from None
            _HELD.add(self.fp.id)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        self._lock_fh = fh
        self._clean()
        self.store.catalog.register_fingerprint(self.fp.id, self.fp.backbone, self.fp.dim, self.fp.to_json(),
                                                self.fp.source)
        return self

    def _busy(self, holder: str) -> Conflict:
        return Conflict(f"another extraction is already writing {self.fp.id} features ({holder or 'another process'});"
                        f" wait for it to finish, or stop it, then run again")

    def _clean(self) -> None:
        """Remove leftovers of a crash: temp files, and renamed shards the catalog never committed."""
        known = {Path(f).name for f in self.store.catalog.shard_files(self.fp.id)}
        for path in self.dir.iterdir():
            if path.name.endswith(".tmp") or (path.suffix == ".h5" and path.name not in known):
                path.unlink(missing_ok=True)

    def add(self, shas: list[str], vectors: np.ndarray) -> None:
        self._shas.extend(shas)
        self._vectors.append(np.asarray(vectors))
        if len(self._shas) >= self.shard_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._shas:
            return
        data = np.concatenate(self._vectors).astype(np.float32, copy=False)
        if self.dtype == np.float16:
            data = np.clip(data, -FLOAT16_MAX, FLOAT16_MAX)
        data = data.astype(self.dtype, copy=False)
        for start in range(0, len(self._shas), self.shard_rows):
            self._write(self._shas[start:start + self.shard_rows], data[start:start + self.shard_rows])
        self._shas, self._vectors = [], []

    def _write(self, shas: list[str], data: np.ndarray) -> None:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.h5"
        tmp, final = self.dir / (name + ".tmp"), self.dir / name
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("features", data=data)
            fh.create_dataset("sha256", data=np.array(shas, dtype="S64"))
            fh.attrs["fingerprint"] = self.fp.id
        publish(tmp, final)
        self.store.catalog.commit_shard(self.fp.id, final.relative_to(self.store.home).as_posix(),
                                        self.dtype.name, shas)
        self.written += len(shas)

    def __exit__(self, *exc) -> None:
        try:
            self.flush()  # keep finished work, also when interrupted
        finally:
            if self._lock_fh is not None:
                with _HELD_GUARD:
                    fcntl.lockf(self._lock_fh, fcntl.LOCK_UN)
                    self._lock_fh.close()
                    self._lock_fh = None
                    _HELD.discard(self.fp.id)

