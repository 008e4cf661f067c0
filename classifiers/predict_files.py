"""Predictions for image files (`headstart predict FILES`): each file read and hashed once, cached vectors used where
the head's features have them, the others decoded and put through the backbone a chunk at a time; with the forward
on a GPU, the next chunk is decoded on a thread meanwhile."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifiers.predict import Predictor
from extractor.decode import DecodeError, read_file
from extractor.errors import CacheDamaged
from extractor.model import resolve_device
from extractor.store import FeatureStore


@dataclass
class Chunk:
    """One chunk of files made ready for the forward pass: a row per file (cached ones and failures already
    answered) and the decoded inputs of the others, with the index of each one's row."""

    rows: list[dict]
    arrays: list[np.ndarray] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)


def prepare(store: FeatureStore, predictor: Predictor, paths: list[Path], k: int, tta: int = 0) -> Chunk:
    """Read each file once; answer those whose content is cached under the head's fingerprint from the cache (not
    with `tta`: test-time views of a file are computed); decode the others."""
    chunk = Chunk([{"image": str(path)} for path in paths])
    readable, datas = [], []  # the row index of each file read, its bytes
    for index, path in enumerate(paths):
        try:
            datas.append(read_file(path, predictor.limits))
            readable.append(index)
        except DecodeError as exc:
            chunk.rows[index]["error"] = str(exc)
    shas = [hashlib.sha256(d).hexdigest() for d in datas]
    where = store.catalog.vector_locations(predictor.fingerprint, shas) if not tta else {}
    hits = [i for i, sha in enumerate(shas) if sha in where]
    try:
        vectors = store.read_rows([where[shas[i]] for i in hits], predictor.resolved.fingerprint.dim)
        for i, top in zip(hits, predictor.predict_vectors(vectors, k) if hits else [], strict=True):
            chunk.rows[readable[i]].update(top=top, cached=True)
    except CacheDamaged:  # a damaged shard: compute these too (the next extract repairs the cache)
        hits = []
    cached = set(hits)
    misses = [i for i in range(len(datas)) if i not in cached]
    for i, array in zip(misses, predictor.decode_many([datas[i] for i in misses]), strict=True):
        if isinstance(array, DecodeError):
            chunk.rows[readable[i]]["error"] = str(array)
        else:
            chunk.arrays.append(array)
            chunk.owners.append(readable[i])
    return chunk


def finish(predictor: Predictor, chunk: Chunk, k: int, batch_size: int, tta: int = 0) -> list[dict]:
    """The forward pass and the head over a prepared chunk: its rows, all answered."""
    if chunk.arrays:
        for i, top in zip(chunk.owners, predictor.predict_arrays(chunk.arrays, k, batch_size, tta), strict=True):
            chunk.rows[i].update(top=top, cached=False)
    return chunk.rows


def predict_files(store: FeatureStore, predictor: Predictor, paths: list[Path], k: int, batch_size: int,
                  tta: int = 0, ahead: bool | None = None) -> Iterator[list[dict]]:
    """The rows of `batch_size` files at a time, in order: memory does not grow with the count.

    `ahead` (default: when the predictor's device is CUDA): while one chunk is in the forward pass, the next is
    read, looked up and decoded on a thread (decoding and the forward release the GIL), as extraction's workers
    decode ahead. With the forward on the CPU it is not done: the forward already keeps every core busy, and
    decoding beside it measured 0.97-1.03x of decoding before it (bench/bench_predict_files.py, 2 cores)."""
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    # one chunk or none: nothing to overlap (and no device to ask about)
    if len(chunks) < 2 or not (ahead if ahead is not None else resolve_device(predictor.device).type == "cuda"):
        for chunk in chunks:
            yield finish(predictor, prepare(store, predictor, chunk, k, tta), k, batch_size, tta)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="predict-read") as reader:
        pending = reader.submit(prepare, store, predictor, chunks[0], k, tta)
        for n in range(len(chunks)):
            ready = pending.result()
            if n + 1 < len(chunks):
                pending = reader.submit(prepare, store, predictor, chunks[n + 1], k, tta)
            yield finish(predictor, ready, k, batch_size, tta)
