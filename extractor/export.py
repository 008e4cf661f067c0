"""Export one dataset's cached features as a single plain HDF5 file any h5py user can read."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from extractor.durable import fsync_path
from extractor.errors import HeadstartError
from extractor.store import FeatureStore, check_dtype


def export(store: FeatureStore, dataset: str, fp_id: str, out: Path, dtype: str = "float32") -> dict:
    """Write features, labels, label_names, paths, split, sha256 and the fingerprint (attrs) atomically."""
    table = store.table(dataset, fp_id, check_dtype(dtype))
    if not table.paths:
        raise HeadstartError(f"dataset {dataset!r} has no cached {fp_id} vectors to export; run extract first")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    text = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as fh:
        fh.create_dataset("features", data=table.features)
        fh.create_dataset("labels", data=table.label_index())
        fh.create_dataset("label_names", data=np.array(table.label_names, dtype=object), dtype=text)
        fh.create_dataset("paths", data=np.array(table.paths, dtype=object), dtype=text)
        fh.create_dataset("split", data=np.array(table.splits, dtype=object), dtype=text)
        fh.create_dataset("sha256", data=np.array(table.sha256, dtype="S64"))
        fh.attrs.update({
            "fingerprint": json.dumps(table.fingerprint, sort_keys=True), "fingerprint_id": fp_id,
            "backbone": table.fingerprint["backbone"], "dataset": dataset, "created": time.time(),
            "failed": len(store.catalog.failures(dataset)),
        })
    fsync_path(tmp)
    os.replace(tmp, out)
    return {"out": str(out), "rows": len(table.paths), "dim": int(table.features.shape[1]),
            "fingerprint": fp_id, "classes": len(table.label_names)}
