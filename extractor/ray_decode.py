"""The Ray engine's decode tasks: a block of files -> pixels (or, for --decode gpu, verified JPEG bytes), as the
local engine's DataLoader workers do; run on any node of the cluster."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np

from extractor import augment
from extractor.decode import Limits, decode_job, prepare, preprocess

SHARED = ("--engine ray needs the data folder and the home at the same path on every node of the cluster (a "
          "shared filesystem)")


def decode_block(batch: dict, size: int, limits: Limits, roots: list[str], recipe: str = "",
                 device_decode: bool = False) -> dict:
    """One Ray task: files -> uint8 pixels (zeros and a reason where a file failed), as the local workers do.
    With a `recipe`: each file decoded once and its missing views made from those pixels, one row per view (a
    failed file: one row, view -1), as extractor.views does locally. With `device_decode`: see device_block."""
    if device_decode:
        return device_block(batch, size, limits, roots)
    absent = [r for r in roots if not os.path.isdir(r)]
    made = augment.parse(recipe) if recipe else None
    shas, views, rows, errors, content = [], [], [], [], []
    for sha, path, fsize, mtime, wanted in zip(batch["sha"], batch["path"], batch["size"], batch["mtime"],
                                               batch["views"], strict=True):
        if made:
            indices = [int(j) for j in str(wanted).split(",")]
            arrays, error = augment.make_views(str(sha), Path(path), indices, size, limits, made)
        else:
            stat = None if fsize < 0 else (int(fsize), int(mtime))
            array, error = decode_job((str(sha), Path(path), stat), limits, lambda data: preprocess(data, size, limits))
            indices, arrays = [-1], [array]
        if error is not None:
            indices, arrays = [-1], [np.zeros((size, size, 3), np.uint8)]
        shas += [sha] * len(indices)
        views += indices
        rows.extend(arrays)
        errors += [str(error) if error is not None else ""] * len(indices)
        content += [error is not None and error.content] * len(indices)
    pixels = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.uint8)
    return {"sha": np.array(shas, dtype=object), "view": np.array(views, np.int32), "pixels": pixels,
            **_outcome(errors, content, absent)}


def _outcome(errors: list[str], content: list[bool], absent: list[str]) -> dict:
    """The columns every decode block has: each row's failure ("" when none), whether its bytes are to blame, and a
    reason to stop the run (a data folder missing on this node)."""
    fatal = f"{SHARED}: {', '.join(absent)} is not a folder on node {socket.gethostname()}" if absent else ""
    return {"error": np.array(errors, dtype=object), "content": np.array(content, bool),
            "fatal": np.array([fatal] * len(errors), dtype=object)}


def device_block(batch: dict, size: int, limits: Limits, roots: list[str]) -> dict:
    """One Ray task of --decode gpu: each file read whole and checked to be the content its hash names; a JPEG the
    device decoder takes travels as its bytes (`payload`) with its EXIF orientation, any other image is decoded
    here on the CPU path and travels as its pixels' bytes (kind `pixels`), as extractor.devicedecode does locally.
    A JPEG's file can be larger than its pixels at the input size (bench_ray's photo-like JPEGs: 171 KB on average,
    against 66 KB at 150x150), so this moves more bytes between nodes than the CPU path does."""
    def sniff(data: bytes) -> tuple[str, int, bytes]:
        kind, value = prepare(data, size, limits)
        return (kind, value, bytes(data)) if kind == "jpeg" else (kind, 1, np.ascontiguousarray(value).tobytes())

    absent = [r for r in roots if not os.path.isdir(r)]
    kinds, orientations, payloads, errors, content = [], [], [], [], []
    for sha, path, fsize, mtime in zip(batch["sha"], batch["path"], batch["size"], batch["mtime"], strict=True):
        stat = None if fsize < 0 else (int(fsize), int(mtime))
        sniffed, error = decode_job((str(sha), Path(path), stat), limits, sniff)
        kind, orientation, payload = sniffed if error is None else ("error", 1, b"")
        kinds.append(kind)
        orientations.append(orientation)
        payloads.append(payload)
        errors.append(str(error) if error is not None else "")
        content.append(error is not None and error.content)
    return {"sha": np.array(batch["sha"], dtype=object), "view": np.full(len(kinds), -1, np.int32),
            "kind": np.array(kinds, dtype=object), "orientation": np.array(orientations, np.int32),
            "payload": np.array(payloads, dtype=object), **_outcome(errors, content, absent)}
