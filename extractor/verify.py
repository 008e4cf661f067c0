"""Cache checks: a cheap one at extract time (shard files present and whole), and a full one (`headstart verify`)
that reads every shard against the catalog and finds leftover files; both can drop what is damaged, so that
the next extract computes it again."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from extractor.errors import Conflict
from extractor.store import FeatureStore


def _quick(store: FeatureStore, shard: dict) -> str | None:
    """Why a shard file cannot be used, from a stat alone (missing, or not the size it was committed with)."""
    try:
        size = (store.home / shard["file"]).stat().st_size
    except FileNotFoundError:
        return "file is missing"
    except OSError as exc:
        return f"file cannot be read ({exc.strerror or exc})"
    if shard["bytes"] is not None and size != shard["bytes"]:
        return f"file is {size} bytes; {shard['bytes']} were committed (truncated or overwritten)"
    return None


def heal(store: FeatureStore, fp_id: str, dataset: str) -> int:
    """Drop the dataset's shards under `fp_id` whose files are missing or resized; the vectors dropped."""
    bad = [s["id"] for s in store.catalog.shards(fp_id, dataset) if _quick(store, s)]
    return store.catalog.drop_shards(bad) if bad else 0


def _full(store: FeatureStore, shard: dict, dims: dict[str, int]) -> str | None:
    """Why a shard cannot be used: the quick check, then its contents against the catalog's rows."""
    problem = _quick(store, shard)
    if problem:
        return problem
    try:
        with h5py.File(store.home / shard["file"], "r", locking=False) as fh:
            features, shas = fh["features"], fh["sha256"][()]
            if features.shape != (shard["rows"], dims.get(shard["fingerprint"], -1)):
                return f"holds {features.shape} features; the catalog expects ({shard['rows']}, " \
                       f"{dims.get(shard['fingerprint'])})"
            stored = np.asarray(shas).astype(str)
            views = fh["view"][()] if "view" in fh else None
            wrong = [row for sha, index, row in store.catalog.shard_vectors(shard["id"])
                     if stored[row] != sha or (index >= 0 and (views is None or views[row] != index))]
            if wrong:
                return f"{len(wrong)} rows hold other images than the catalog says (first row {wrong[0]})"
            features[()]  # every byte read: a damaged chunk fails here
    except (OSError, KeyError, IndexError, ValueError) as exc:
        return f"file is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _leftovers(store: FeatureStore) -> dict[str, list[Path]]:
    """Per fingerprint folder: temp files and shard files the catalog never committed."""
    out: dict[str, list[Path]] = {}
    root = store.home / "features"
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        known = {Path(f).name for f in store.catalog.shard_files(folder.name)}
        files = [p for p in sorted(folder.iterdir())
                 if p.name.endswith(".tmp") or (p.suffix == ".h5" and p.name not in known)]
        if files:
            out[folder.name] = files
    return out


def verify(store: FeatureStore, repair: bool = False) -> dict:
    """Check every committed shard and every features folder; with `repair`, drop damaged shards from the
    catalog (their images are computed by the next extract) and delete leftover files."""
    dims = {fp: store.catalog.fingerprint(fp)["dim"] for fp in {s["fingerprint"] for s in store.catalog.shards()}}
    shards = store.catalog.shards()
    damaged = []
    for shard in shards:
        problem = _full(store, shard, dims)
        if problem:
            damaged.append({"file": shard["file"], "id": shard["id"], "rows": shard["rows"], "problem": problem})
    leftovers = _leftovers(store)
    report = {"shards": len(shards), "vectors": sum(s["rows"] for s in shards), "damaged": damaged,
              "leftovers": [str(p.relative_to(store.home)) for files in leftovers.values() for p in files],
              "repaired": False, "busy": []}
    if repair:
        report["dropped_vectors"] = store.catalog.drop_shards([d["id"] for d in damaged])
        for fp_id, files in leftovers.items():
            try:  # a live writer may be about to commit a renamed shard: only delete under its lock
                lock = store.writer_lock(fp_id).acquire()
            except Conflict:
                report["busy"].append(fp_id)
                continue
            try:
                for path in files:
                    path.unlink(missing_ok=True)
            finally:
                lock.release()
        for item in damaged:
            (store.home / item["file"]).unlink(missing_ok=True)
        report["repaired"] = True
    return report
