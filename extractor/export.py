"""Export one dataset's cached features as one plain file: HDF5 (any h5py user reads it), NumPy's .npz (np.load,
no pickle) or CSV (a spreadsheet, R), the format chosen by the file's suffix. Vectors are copied in blocks."""

from __future__ import annotations

import contextlib
import json
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np

from extractor.durable import cannot_write, output_file, publish
from extractor.errors import HeadstartError, NotFound
from extractor.store import FeatureStore, check_dtype

CHUNK_ROWS = 4096  # features are copied in blocks: memory stays bounded for millions of rows
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", "")


def export_format(out: Path) -> str:
    """hdf5, npz or csv, by the file's suffix; one line for any other suffix (it was written as HDF5 whatever its
    name, so `--out features.csv` gave an HDF5 file)."""
    suffix = Path(out).suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    raise HeadstartError(f"--out {out}: expected a file name ending .h5 (HDF5), .npz (NumPy) or .csv, not "
                         f"{suffix}; the suffix chooses the format")


def export(store: FeatureStore, dataset: str, fp_id: str, out: Path, dtype: str = "float32",
           views: bool = True) -> dict:
    """Write features, labels, label_names, paths, split, sha256 and the fingerprint atomically, in the format the
    suffix of `out` names; with `views` (HDF5, .npz), also the train images' cached augmented views (features,
    sha256, index, recipe: a row's label is that of the clean row with the same sha256)."""
    kind = export_format(out)
    np_dtype = check_dtype(dtype)
    info = store.catalog.fingerprint(fp_id)
    if info is None:
        raise NotFound(f"no features with fingerprint {fp_id}")
    rows = store.catalog.dataset_rows(dataset, fp_id)  # (path, sha, label, split, shard, row)
    if not rows:
        raise HeadstartError(f"dataset {dataset!r} has no cached {fp_id} vectors to export; run extract first")
    out = output_file(out, "--out", f"{dataset}.h5")
    tmp = out.with_name(out.name + ".tmp")
    view_rows = _view_rows(store, dataset, fp_id) if views else []
    try:
        if kind == "hdf5":
            _write(tmp, store, dataset, fp_id, info, rows, np_dtype, view_rows)
        elif kind == "npz":
            _write_npz(tmp, store, dataset, fp_id, info, rows, np_dtype, view_rows)
        else:
            _write_csv(tmp, store, info, rows, np_dtype)
        publish(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # h5py's own text is long: the system's reason is enough
            raise cannot_write(out, "--out", exc) from None
        raise
    return {"out": str(out), "format": kind, "rows": len(rows), "dim": int(info["dim"]), "fingerprint": fp_id,
            "classes": len({r[2] for r in rows if r[2] is not None}), "views": 0 if kind == "csv" else len(view_rows),
            "warnings": [f"the {len(view_rows)} cached augmented views are not written to a CSV (one row per image): "
                         f"export to .h5 or .npz to have them"] if kind == "csv" and view_rows else []}


def _blocks(store: FeatureStore, rows: list, dim: int, np_dtype: np.dtype, at: int = 4):
    """The vectors of `rows` ((shard, row) at positions at, at+1), CHUNK_ROWS at a time."""
    for start in range(0, len(rows), CHUNK_ROWS):
        yield store.read_rows([(r[at], r[at + 1]) for r in rows[start:start + CHUNK_ROWS]], dim, np_dtype)


def _labels(rows: list) -> tuple[list[str], np.ndarray]:
    """The sorted label names, and each row's index into them (-1: unlabeled)."""
    names = sorted({r[2] for r in rows if r[2] is not None})
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index.get(r[2], -1) for r in rows], dtype=np.int64)


def _attrs(store: FeatureStore, dataset: str, fp_id: str, info: dict) -> dict:
    spec = json.loads(info["spec"])
    return {"fingerprint": json.dumps(spec, sort_keys=True), "fingerprint_id": fp_id, "backbone": spec["backbone"],
            "dataset": dataset, "created": time.time(), "failed": len(store.catalog.failures(dataset))}


def _write(tmp: Path, store: FeatureStore, dataset: str, fp_id: str, info: dict, rows: list, np_dtype: np.dtype,
           views: list) -> None:
    """The HDF5 file: datasets features, labels, label_names, paths, split, sha256; the fingerprint in attrs; the
    views (if any) in the group `views`."""
    names, labels = _labels(rows)
    text = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as fh:
        _fill(fh.create_dataset("features", shape=(len(rows), info["dim"]), dtype=np_dtype),
              _blocks(store, rows, info["dim"], np_dtype))
        fh.create_dataset("labels", data=labels)
        fh.create_dataset("label_names", data=np.array(names, dtype=object), dtype=text)
        fh.create_dataset("paths", data=np.array([r[0] for r in rows], dtype=object), dtype=text)
        fh.create_dataset("split", data=np.array([r[3] for r in rows], dtype=object), dtype=text)
        fh.create_dataset("sha256", data=np.array([r[1] for r in rows], dtype="S64"))
        if views:
            group = fh.create_group("views")
            _fill(group.create_dataset("features", shape=(len(views), info["dim"]), dtype=np_dtype),
                  _blocks(store, views, info["dim"], np_dtype, at=3))
            group.create_dataset("sha256", data=np.array([r[1] for r in views], dtype="S64"))
            group.create_dataset("index", data=np.array([r[2] for r in views], dtype=np.int32))
            group.create_dataset("recipe", data=np.array(_recipe_names(views), dtype=object), dtype=text)
        fh.attrs.update(_attrs(store, dataset, fp_id, info))


def _fill(dataset: h5py.Dataset, blocks) -> None:
    done = 0
    for block in blocks:
        dataset[done:done + len(block)] = block
        done += len(block)


def _view_rows(store: FeatureStore, dataset: str, fp_id: str) -> list[tuple]:
    """(recipe, sha256, view index, shard, row) of every recipe's views of the dataset's train images."""
    from extractor.augment import TTA

    rows = []
    for summary in store.catalog.view_summary(dataset):
        if summary["fingerprint"] == fp_id and summary["recipe"] != TTA:
            recipe = summary["recipe"]
            rows += [(recipe, *r) for r in store.catalog.view_rows(dataset, fp_id, recipe, 1 << 30, "train")]
    return rows


def _recipe_names(views: list) -> list[str]:
    from extractor.augment import parse

    return [parse(r[0]).name for r in views]


def _write_npz(tmp: Path, store: FeatureStore, dataset: str, fp_id: str, info: dict, rows: list,
               np_dtype: np.dtype, views: list) -> None:
    """The .npz file: the HDF5 file's datasets as arrays (views_* for the views), the attrs as 0-d arrays; strings
    are fixed-width unicode, so np.load reads it all without allow_pickle. The features are streamed into the
    archive block by block."""
    names, labels = _labels(rows)
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        _npy_blocks(zf, "features", np_dtype, (len(rows), info["dim"]), _blocks(store, rows, info["dim"], np_dtype))
        arrays = {"labels": labels, "label_names": np.array(names, dtype=str),
                  "paths": np.array([r[0] for r in rows], dtype=str),
                  "split": np.array([r[3] for r in rows], dtype=str),
                  "sha256": np.array([r[1] for r in rows], dtype=str)}
        if views:
            _npy_blocks(zf, "views_features", np_dtype, (len(views), info["dim"]),
                        _blocks(store, views, info["dim"], np_dtype, at=3))
            arrays.update(views_sha256=np.array([r[1] for r in views], dtype=str),
                          views_index=np.array([r[2] for r in views], dtype=np.int32),
                          views_recipe=np.array(_recipe_names(views), dtype=str))
        arrays.update({k: np.array(v) for k, v in _attrs(store, dataset, fp_id, info).items()})
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)


def _npy_blocks(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple, blocks) -> None:
    """One .npy member of the archive written from blocks of rows (no whole array in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype).tobytes())


def _write_csv(tmp: Path, store: FeatureStore, info: dict, rows: list, np_dtype: np.dtype) -> None:
    """The CSV file: a header row, then one row per image: path, label (empty: none), split, sha256, f0 .. f{dim-1}
    (as many significant digits as the dtype holds)."""
    digits = {np.dtype("float16"): 5, np.dtype("float32"): 9}.get(np.dtype(np_dtype), 17)
    # one format string per row, without the csv module's per-field work: 4,000 x 8192 took 5.8 s, 13.0 s before
    numbers = ",".join([f"%.{digits}g"] * info["dim"])
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(",".join(["path", "label", "split", "sha256", *(f"f{i}" for i in range(info["dim"]))]) + "\n")
        done = 0
        for block in _blocks(store, rows, info["dim"], np_dtype):
            for r, vector in zip(rows[done:done + len(block)], block.tolist(), strict=True):
                fh.write(f"{_quoted(r[0])},{_quoted(r[2] or '')},{r[3]},{r[1]},{numbers % tuple(vector)}\n")
            done += len(block)


def _quoted(text: str) -> str:
    """A CSV field as the csv module writes it: quoted when it holds a comma, a quote or a line break."""
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\r\n') else text
