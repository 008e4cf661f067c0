"""One immutable shard file: vectors and their content hashes written as `*.tmp`, fsynced, renamed.

Used by the local ShardWriter (which commits each file to the catalog at once) and by the Ray engine's actors
(which only write files and report them; the driver commits)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from extractor.durable import publish, storage_error

FLOAT16_MAX = float(np.finfo(np.float16).max)


def shard_folder(home: Path, fp_id: str) -> Path:
    """Where a fingerprint's shard files live under a home (FeatureStore.shard_dir; the Ray actors, which have
    no catalog, too)."""
    return home / "features" / fp_id


def stored(part: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Vectors as stored: float32 computed, clipped to float16's range when stored as float16."""
    part = np.asarray(part, dtype=np.float32)
    if dtype == np.float16:
        part = np.clip(part, -FLOAT16_MAX, FLOAT16_MAX)
    return part.astype(dtype, copy=False)


def write_shard(home: Path, folder: Path, fp_id: str, dim: int, dtype: np.dtype, shas: list[str],
                parts: list[np.ndarray], recipe: str = "", views: list[int] | None = None) -> tuple[str, int]:
    """Write `parts` (rows in order) as one published shard in `folder`: (its path relative to `home`, bytes).
    On any failure nothing is left under either name; a full or read-only disk is one line (StorageFull)."""
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.h5"
    tmp, final = folder / (name + ".tmp"), folder / name
    rel = final.relative_to(home).as_posix()
    try:
        with h5py.File(tmp, "w") as fh:
            features = fh.create_dataset("features", shape=(len(shas), dim), dtype=dtype)
            row = 0
            for part in parts:
                features[row:row + len(part)] = stored(part, dtype)
                row += len(part)
            fh.create_dataset("sha256", data=np.array(shas, dtype="S64"))
            fh.attrs["fingerprint"] = fp_id
            if recipe:
                fh.create_dataset("view", data=np.array(views, dtype=np.int32))
                fh.attrs["recipe"] = recipe
        publish(tmp, final)
        return rel, final.stat().st_size
    except OSError as exc:
        for path in (tmp, final):
            path.unlink(missing_ok=True)
        raise storage_error(exc, f"writing shard {rel}") or exc from None
