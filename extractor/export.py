"""Export one dataset's cached features as a single plain HDF5 file any h5py user can read."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import h5py
import numpy as np

from extractor.durable import cannot_write, output_file, publish
from extractor.errors import HeadstartError, NotFound
from extractor.store import FeatureStore, check_dtype

CHUNK_ROWS = 4096  # features are copied in blocks: memory stays bounded for millions of rows


def export(store: FeatureStore, dataset: str, fp_id: str, out: Path, dtype: str = "float32",
           views: bool = True) -> dict:
    """Write features, labels, label_names, paths, split, sha256 and the fingerprint (attrs) atomically; with
    `views`, also the train images' cached augmented views in the group `views` (features, sha256, index, recipe:
    a row's label is that of the clean row with the same sha256)."""
    np_dtype = check_dtype(dtype)
    info = store.catalog.fingerprint(fp_id)
    if info is None:
        raise NotFound(f"no features with fingerprint {fp_id}")
    rows = store.catalog.dataset_rows(dataset, fp_id)  # (path, sha, label, split, shard, row)
    if not rows:
        raise HeadstartError(f"dataset {dataset!r} has no cached {fp_id} vectors to export; run extract first")
    out = output_file(out, "--out", f"{dataset}.h5")
    tmp = out.with_name(out.name + ".tmp")
    try:
        exported_views = _write(tmp, store, dataset, fp_id, info, rows, np_dtype, views)
        publish(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # h5py's own text is long: the system's reason is enough
            raise cannot_write(out, "--out", exc) from None
        raise
    return {"out": str(out), "rows": len(rows), "dim": int(info["dim"]), "fingerprint": fp_id,
            "classes": len({r[2] for r in rows if r[2] is not None}), "views": exported_views}


def _write(tmp: Path, store: FeatureStore, dataset: str, fp_id: str, info: dict, rows: list, np_dtype: np.dtype,
           views: bool) -> int:
    """The export file's content, written to `tmp`; returns the number of views rows."""
    names = sorted({r[2] for r in rows if r[2] is not None})
    index = {name: i for i, name in enumerate(names)}
    text = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as fh:
        features = fh.create_dataset("features", shape=(len(rows), info["dim"]), dtype=np_dtype)
        for start in range(0, len(rows), CHUNK_ROWS):
            block = rows[start:start + CHUNK_ROWS]
            features[start:start + len(block)] = store.read_rows([(r[4], r[5]) for r in block], info["dim"], np_dtype)
        fh.create_dataset("labels", data=np.array([index.get(r[2], -1) for r in rows], dtype=np.int64))
        fh.create_dataset("label_names", data=np.array(names, dtype=object), dtype=text)
        fh.create_dataset("paths", data=np.array([r[0] for r in rows], dtype=object), dtype=text)
        fh.create_dataset("split", data=np.array([r[3] for r in rows], dtype=object), dtype=text)
        fh.create_dataset("sha256", data=np.array([r[1] for r in rows], dtype="S64"))
        exported_views = _views(fh, store, dataset, fp_id, info["dim"], np_dtype) if views else 0
        spec = json.loads(info["spec"])
        fh.attrs.update({
            "fingerprint": json.dumps(spec, sort_keys=True), "fingerprint_id": fp_id, "backbone": spec["backbone"],
            "dataset": dataset, "created": time.time(), "failed": len(store.catalog.failures(dataset)),
        })
    return exported_views


def _views(fh: h5py.File, store: FeatureStore, dataset: str, fp_id: str, dim: int, np_dtype: np.dtype) -> int:
    """The `views` group: every recipe's views of the dataset's train images, streamed in blocks."""
    from extractor.augment import TTA, parse

    rows = []
    for summary in store.catalog.view_summary(dataset):
        if summary["fingerprint"] == fp_id and summary["recipe"] != TTA:
            recipe = summary["recipe"]
            rows += [(recipe, *r) for r in store.catalog.view_rows(dataset, fp_id, recipe, 1 << 30, "train")]
    if not rows:
        return 0
    group = fh.create_group("views")
    features = group.create_dataset("features", shape=(len(rows), dim), dtype=np_dtype)
    for start in range(0, len(rows), CHUNK_ROWS):
        block = rows[start:start + CHUNK_ROWS]
        features[start:start + len(block)] = store.read_rows([(r[3], r[4]) for r in block], dim, np_dtype)
    group.create_dataset("sha256", data=np.array([r[1] for r in rows], dtype="S64"))
    group.create_dataset("index", data=np.array([r[2] for r in rows], dtype=np.int32))
    group.create_dataset("recipe", data=np.array([parse(r[0]).name for r in rows], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
    return len(rows)
