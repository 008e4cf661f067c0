"""A synthetic feature table written straight into a home (catalog rows and shard files, as an extraction leaves
them): class-dependent vectors at any size, for the streamed-heads benchmark and tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from extractor.shardfile import write_shard
from extractor.store import FeatureStore


def synthetic_table(home: Path, n: int, dim: int, classes: int = 10, dtype: str = "float16",
                    shard_rows: int = 4096, seed: int = 0, dataset: str = "synthetic",
                    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> tuple[FeatureStore, str]:
    """`n` rows of `dim` features (means per class plus noise), split train/val/test by `fractions`, labeled
    c0..c{classes-1}, under the backbone name `tiny`; returns the store and the fingerprint id."""
    store = FeatureStore(home)
    fp_id = f"tiny-synthetic{dim}"
    spec = {"backbone": "tiny", "weights": "synthetic", "dim": dim, "input_size": 0, "preprocess": {}}
    store.catalog.register_fingerprint(fp_id, "tiny", dim, json.dumps(spec), "synthetic")
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    cuts = [fractions[0], fractions[0] + fractions[1]]
    splits = np.array(["train", "val", "test"])[np.searchsorted(cuts, rng.random(n), side="right")]
    shas = [f"{i:064x}" for i in range(n)]
    members = [(f"c{labels[i]}/{i:08d}.jpg", shas[i], f"c{labels[i]}", str(splits[i]), 0) for i in range(n)]
    info = {"name": dataset, "root": str(home), "kind": "folders", "split": ",".join(map(str, fractions)), "seed": 0}
    source = {"root": str(home), "kind": "folders", "labels_csv": None, "path_column": None, "label_column": None,
              "prefix": ""}
    store.catalog.save_dataset(info, members, [source])
    folder = store.shard_dir(fp_id)
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, shard_rows):
        stop = min(n, start + shard_rows)
        block = centers[labels[start:stop]] + rng.normal(0, 2.0, (stop - start, dim)).astype(np.float32)
        file, size = write_shard(store.home, folder, fp_id, dim, np.dtype(dtype), shas[start:stop], [block])
        store.catalog.commit_shards(fp_id, dtype, [(file, shas[start:stop], size)])
    return store, fp_id
