"""The Ray engine: new files hashed and images decoded as Ray tasks, the frozen forward in an actor pool (one
actor per GPU, CPU actors otherwise) whose actors write their own shard files, and one driver, the only process
that opens the SQLite catalog, committing what they report. Everything else is the local engine's: listing,
content hashes, fingerprints, splits, the shard format, the writer lock (one driver per fingerprint).

The data folder and the home must be at the same path on every node (a shared filesystem)."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from extractor import augment
from extractor.decode import DecodeError, Limits, decode_job, preprocess
from extractor.errors import HeadstartError
from extractor.shardfile import shard_folder, write_shard
from extractor.summary import Progress

SHARD_ROWS = 256  # rows per shard an actor writes: 4 MB of 8192-d float16 (fewer when a run is small)
DECODE_ROWS = 32  # images per decode task
COMMIT_SECONDS = 0.25  # the driver commits the shards reported in this long in one catalog transaction
SHARED = ("--engine ray needs the data folder and the home at the same path on every node of the cluster (a "
          "shared filesystem)")


def decode_block(batch: dict, size: int, limits: Limits, roots: list[str], recipe: str = "") -> dict:
    """One Ray task: files -> uint8 pixels (zeros and a reason where a file failed), as the local workers do.
    With a `recipe`: each file decoded once and its missing views made from those pixels, one row per view (a
    failed file: one row, view -1), as extractor.views does locally."""
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
    n = len(shas)
    fatal = f"{SHARED}: {', '.join(absent)} is not a folder on node {socket.gethostname()}" if absent else ""
    pixels = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.uint8)
    return {"sha": np.array(shas, dtype=object), "view": np.array(views, np.int32), "pixels": pixels,
            "error": np.array(errors, dtype=object), "content": np.array(content, bool),
            "fatal": np.array([fatal] * n, dtype=object)}


class ShardActor:
    """Loads the backbone once, embeds blocks of decoded images and writes each block's vectors as one shard file
    in the home's feature folder; returns one row per block: (file, content hashes, bytes, failures; with a
    `recipe`, the rows are views and their indices come back too)."""

    def __init__(self, home: str, backbone: str, weights: str, size: int, fp_id: str, dtype: str, batch_size: int,
                 device: str, amp: str, threads: int, recipe: str = "") -> None:
        self.home, self.fp_id, self.batch_size, self.fatal = Path(home), fp_id, batch_size, ""
        self.recipe = recipe
        self.dtype = np.dtype(dtype)
        try:
            self.setup(backbone, weights, size, device, amp, threads)
        except Exception as exc:  # reported by the first block (a constructor that raises is restarted forever)
            self.fatal = f"a Ray actor on node {socket.gethostname()} could not load {backbone}: {exc}"

    def setup(self, backbone: str, weights: str, size: int, device: str, amp: str, threads: int) -> None:
        import torch

        from extractor.model import LoadedBackbone, resolve

        if not (self.home / "catalog.sqlite").is_file():
            self.fatal = f"{SHARED}: the home {self.home} is not there on node {socket.gethostname()}"
            return
        resolved = resolve(backbone, weights, size)
        if resolved.fingerprint.id != self.fp_id:
            self.fatal = (f"node {socket.gethostname()} computes fingerprint {resolved.fingerprint.id}, the driver "
                          f"{self.fp_id}: install the same headstart, torch and torchvision on every node")
            return
        self.dim, self.folder = resolved.fingerprint.dim, shard_folder(self.home, self.fp_id)
        self.loaded = LoadedBackbone(resolved, device, amp)
        if self.loaded.device.type == "cpu":
            torch.set_num_threads(threads)
        self.loaded.setup()

    def embed(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Vectors of one block, `batch_size` images per forward (the local engine's batches)."""
        import torch

        return [self.loaded.embed(torch.from_numpy(np.array(pixels[i:i + self.batch_size])))
                for i in range(0, len(pixels), self.batch_size)]

    def __call__(self, batch: dict) -> dict:
        fatal = self.fatal or next((f for f in batch["fatal"] if f), "")
        failed = batch["error"] != ""
        bad = [[str(s), str(e), bool(c)] for s, e, c in zip(batch["sha"][failed], batch["error"][failed],
                                                            batch["content"][failed], strict=True)]
        file, size, shas = "", 0, [str(s) for s in batch["sha"][~failed]]
        views = [int(j) for j in batch["view"][~failed]]
        if shas and not fatal:
            file, size = write_shard(self.home, self.folder, self.fp_id, self.dim, self.dtype, shas,
                                     self.embed(batch["pixels"][~failed]), self.recipe,
                                     views if self.recipe else None)
        return {"file": np.array([file], dtype=object), "shas": np.array(["\n".join(shas)], dtype=object),
                "views": np.array([",".join(map(str, views)) if self.recipe else ""], dtype=object),
                "bytes": np.array([size]), "bad": np.array([json.dumps(bad)], dtype=object),
                "fatal": np.array([fatal], dtype=object)}


def plan(jobs: int, batch_size: int, shard_rows: int | None, device: str,
         actors: int | None) -> tuple[int, int, int, int, float]:
    """(actors, GPUs per actor, rows per shard, torch threads per CPU actor, CPUs each actor reserves) for a run
    of `jobs` images on the cluster: one actor per GPU when there are GPUs (and the device allows them), else CPU
    actors. The actors together reserve at most half the cluster's CPUs, so decode tasks always get the rest."""
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if device == "auto" or device.startswith("cuda") else 0
    if device.startswith("cuda") and not gpus:
        raise HeadstartError(f"--device {device} with --engine ray: the cluster has no GPU; choose auto or cpu")
    if actors is not None and actors < 1:
        raise HeadstartError(f"--actors {actors}: expected at least 1")
    count = actors or gpus or 1
    rows = shard_rows or min(SHARD_ROWS, batch_size * max(1, math.ceil(jobs / (count * 4 * batch_size))))
    threads = max(1, (len(os.sched_getaffinity(0)) if not gpus else 1) // max(1, count))
    cpus = min(1.0, float(res.get("CPU", 1)) / (2 * count))
    return count, 1 if gpus else 0, rows, threads, cpus


def run(jobs: list[tuple], home: Path, resolved, opts, roots: list[str], actor: type = ShardActor,
        decode: Callable = decode_block,
        recipe: str = "") -> Iterator[tuple[str, list[str], int, list[tuple[str, DecodeError]], list[int]]]:
    """Stream the jobs, (content hash, path, (size, mtime) or None) each, through decode tasks and the actor pool:
    (file, content hashes, bytes, failures, view indices) per shard, as the actors report them. With a `recipe`
    the jobs are (content hash, path, the view indices to make) and the shards hold views. Closing the iterator
    stops the Ray work. (`actor` and `decode` are the shipped ones; bench/bench_ray.py swaps in an instant
    forward to time the commit path.)"""
    import ray
    from ray.data import ActorPoolStrategy

    per_image = max((len(job[2]) for job in jobs), default=1) if recipe else 1
    count, gpus, rows, threads, cpus = plan(len(jobs) * per_image, opts.batch_size, opts.shard_rows, opts.device,
                                            opts.actors)
    items = _items(jobs, recipe)
    images = max(1, DECODE_ROWS // per_image)  # images per decode task: about DECODE_ROWS rows out of each
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / images)))
    # Ray Data retries a task whose worker died, and restarts a dead actor (its default max_retries/max_restarts
    # -1). Decode tasks reserve memory for their block (the file bytes, Pillow's buffers, the pixels); the actors
    # reserve none, so Ray Data does not fuse decoding into the actors: it stays in tasks near the data.
    block = max(DECODE_ROWS, per_image) * resolved.size * resolved.size * 3
    ds = ds.map_batches(decode, batch_size=images, num_cpus=1, memory=max(64 << 20, 8 * block),
                        batch_format="numpy", fn_kwargs={"size": resolved.size, "limits": opts.limits, "roots": roots,
                                                         "recipe": recipe})
    fp = resolved.fingerprint
    ds = ds.map_batches(actor, batch_size=rows, batch_format="numpy", compute=ActorPoolStrategy(size=count),
                        num_gpus=gpus, num_cpus=cpus,
                        fn_constructor_kwargs={"home": str(home), "backbone": fp.backbone, "weights": opts.weights,
                                               "size": resolved.size, "fp_id": fp.id, "dtype": opts.dtype,
                                               "batch_size": opts.batch_size, "device": opts.device,
                                               "amp": opts.amp, "threads": threads, "recipe": recipe})
    batches = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)
    try:
        for out in batches:
            for file, shas, size, bad, fatal, views in zip(out["file"], out["shas"], out["bytes"], out["bad"],
                                                           out["fatal"], out["views"], strict=True):
                if fatal:
                    raise HeadstartError(str(fatal))
                failures = [(s, DecodeError(e, content=c)) for s, e, c in json.loads(bad)]
                indices = [int(j) for j in str(views).split(",")] if file and recipe else []
                yield str(file), str(shas).split("\n") if file else [], int(size), failures, indices
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()


def _items(jobs: list[tuple], recipe: str) -> list[dict]:
    """The jobs as Ray Data rows (views: no size and mtime, their bytes are hashed again as extractor.views does)."""
    if recipe:
        return [{"sha": sha, "path": str(path), "size": -1, "mtime": -1, "views": ",".join(map(str, wanted))}
                for sha, path, wanted in jobs]
    return [{"sha": sha, "path": str(path), "size": st[0] if st else -1, "mtime": st[1] if st else -1, "views": ""}
            for sha, path, st in jobs]


def compute(opts, store, resolved, jobs: list, roots: list[str], progress: Callable | None,
            should_stop: Callable | None, writer, **stages) -> tuple[int, dict[str, DecodeError], bool]:
    """The driver: commit the actors' shards (those reported within COMMIT_SECONDS in one transaction), report
    progress, stop the Ray work when asked. Returns (vectors committed, failures by content hash, stopped).

    A views writer (extractor.views) gets views: the jobs are then (content hash, path, view indices to make)."""
    bad: dict[str, DecodeError] = {}
    pending: list[tuple[str, list[str], int]] = []
    indices: list[list[int]] = []
    wanted = {job[0]: len(job[2]) for job in jobs} if writer.recipe else {}
    total = sum(wanted.values()) if writer.recipe else len(jobs)
    done, started, last, stopped = 0, time.monotonic(), time.monotonic(), False
    shards = run(jobs, store.home, resolved, opts, roots, recipe=writer.recipe, **stages)

    def commit() -> None:
        writer.commit(pending, indices if writer.recipe else None)
        pending.clear()
        indices.clear()

    try:
        for file, shas, size, failures, views in shards:
            if file:
                pending.append((file, shas, size))
                indices.append(views)
            bad.update(failures)
            done += len(shas) + sum(wanted.get(sha, 1) for sha, _ in failures)
            if pending and time.monotonic() - last >= COMMIT_SECONDS:
                commit()
                last = time.monotonic()
            if progress:
                progress(Progress(done, total, len(bad), time.monotonic() - started,
                                  phase="views" if writer.recipe else "extracting"))
            if should_stop and should_stop():
                stopped = True
                break
    finally:
        shards.close()
        if pending:  # finished shards are kept, also when the run stops or fails
            commit()
        writer.clean()
    return writer.written, bad, stopped
