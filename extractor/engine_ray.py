"""The Ray engine: new files hashed and images decoded as Ray tasks, the frozen forward in an actor pool (one actor per
GPU, CPU actors otherwise) whose actors write their own shard files, and one driver, the only process that opens the
SQLite catalog, committing what they report. With --decode gpu the decode tasks only read, verify and sniff the
bytes, and the actors decode JPEG batches on their device (extractor.devicedecode). Everything else is the local
engine's: listing, content hashes, fingerprints, splits, the shard format, the writer lock (one driver per
fingerprint).

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

from extractor.decode import DecodeError, Limits
from extractor.errors import HeadstartError
from extractor.ray_decode import SHARED, decode_block
from extractor.shardfile import shard_folder, write_shard
from extractor.summary import Progress

SHARD_ROWS = 256  # rows per shard an actor writes: 4 MB of 8192-d float16 (fewer when a run is small)
DECODE_ROWS = 32  # images per decode task
COMMIT_SECONDS = 0.25  # the driver commits the shards reported in this long in one catalog transaction


class ShardActor:
    """Loads the backbone once, embeds blocks of decoded images and writes each block's vectors as one shard file
    in the home's feature folder; returns one row per block: (file, content hashes, bytes, failures; with a
    `recipe`, the rows are views and their indices come back too). With `decode` gpu it decodes the JPEG bytes of
    each block on its own device, `batch_size` at a time (ray_decode.device_block made the blocks)."""

    def __init__(self, home: str, backbone: str, weights: str, size: int, fp_id: str, dtype: str, batch_size: int,
                 device: str, amp: str, threads: int, recipe: str = "", decode: str = "cpu",
                 limits: Limits | None = None) -> None:
        self.home, self.fp_id, self.batch_size, self.fatal = Path(home), fp_id, batch_size, ""
        self.recipe, self.device_decode, self.limits = recipe, decode == "gpu", limits or Limits()
        self.dtype = np.dtype(dtype)
        try:
            self.setup(backbone, weights, size, device, amp, threads)
        except Exception as exc:  # reported by the first block (a constructor that raises is restarted forever)
            self.fatal = f"a Ray actor on node {socket.gethostname()} could not load {backbone}: {exc}"

    def setup(self, backbone: str, weights: str, size: int, device: str, amp: str, threads: int) -> None:
        import torch

        from extractor.devicedecode import method
        from extractor.model import PREPROCESS_METHOD, LoadedBackbone, resolve, resolve_device

        if not (self.home / "catalog.sqlite").is_file():
            self.fatal = f"{SHARED}: the home {self.home} is not there on node {socket.gethostname()}"
            return
        here = resolve_device(device)
        resolved = resolve(backbone, weights, size, method(here) if self.device_decode else PREPROCESS_METHOD)
        if resolved.fingerprint.id != self.fp_id:
            kind = f" (it decodes JPEGs on {here.type}, part of the fingerprint)" if self.device_decode else ""
            self.fatal = (f"node {socket.gethostname()} computes fingerprint {resolved.fingerprint.id}{kind}, the "
                          f"driver {self.fp_id}: install the same headstart, torch and torchvision on every node")
            return
        self.dim, self.folder = resolved.fingerprint.dim, shard_folder(self.home, self.fp_id)
        self.size = resolved.size
        self.loaded = LoadedBackbone(resolved, device, amp)
        if self.loaded.device.type == "cpu":
            torch.set_num_threads(threads)
        self.loaded.setup()

    def embed(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Vectors of one block, `batch_size` images per forward (the local engine's batches)."""
        import torch

        return [self.loaded.embed(torch.from_numpy(np.array(pixels[i:i + self.batch_size])))
                for i in range(0, len(pixels), self.batch_size)]

    def embed_bytes(self, batch: dict, rows: np.ndarray) -> tuple[list[str], list[np.ndarray], list[list]]:
        """--decode gpu: the block's `rows` (a mask) decoded on this actor's device `batch_size` at a time, a file
        the device decoder refuses on the CPU path (extractor.devicedecode.to_batch): (content hashes of the rows
        embedded, their vectors, failures)."""
        from extractor.devicedecode import to_batch

        shas_in, kinds, orientations, payloads = (batch[c][rows] for c in ("sha", "kind", "orientation", "payload"))
        shape = (self.size, self.size, 3)
        shas, vectors, bad = [], [], []
        for start in range(0, len(shas_in), self.batch_size):
            items = [(k, "jpeg", int(orientations[k])) if kinds[k] == "jpeg" else
                     (k, "pixels", np.frombuffer(payloads[k], np.uint8).reshape(shape))
                     for k in range(start, min(len(shas_in), start + self.batch_size))]
            order, pixels, failed = to_batch(items, self.size, self.loaded.device, self.limits,
                                             lambda indices: [payloads[k] for k in indices])
            bad += [[str(shas_in[k]), str(error), bool(error.content)] for k, error in failed]
            if pixels is not None:
                shas += [str(shas_in[k]) for k in order]
                vectors.append(self.loaded.embed(pixels))
        return shas, vectors, bad

    def __call__(self, batch: dict) -> dict:
        fatal = self.fatal or next((f for f in batch["fatal"] if f), "")
        failed = batch["error"] != ""
        bad = [[str(s), str(e), bool(c)] for s, e, c in zip(batch["sha"][failed], batch["error"][failed],
                                                            batch["content"][failed], strict=True)]
        file, size, shas = "", 0, [str(s) for s in batch["sha"][~failed]]
        views = [int(j) for j in batch["view"][~failed]]
        if shas and not fatal:
            if self.device_decode:  # a file the device and the CPU path both refuse leaves the block here
                shas, vectors, refused = self.embed_bytes(batch, ~failed)
                bad += refused
            else:
                vectors = self.embed(batch["pixels"][~failed])
            if shas:
                file, size = write_shard(self.home, self.folder, self.fp_id, self.dim, self.dtype, shas, vectors,
                                         self.recipe, views if self.recipe else None)
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
    gpus = cluster_gpus(device)
    if actors is not None and actors < 1:
        raise HeadstartError(f"--actors {actors}: expected at least 1")
    count = actors or gpus or 1
    rows = shard_rows or min(SHARD_ROWS, batch_size * max(1, math.ceil(jobs / (count * 4 * batch_size))))
    threads = max(1, (len(os.sched_getaffinity(0)) if not gpus else 1) // max(1, count))
    cpus = min(1.0, float(res.get("CPU", 1)) / (2 * count))
    return count, 1 if gpus else 0, rows, threads, cpus


def cluster_gpus(device: str) -> int:
    """The GPUs the actors may use: the cluster's, unless the device is cpu."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0)) if device == "auto" or device.startswith("cuda") else 0
    if device.startswith("cuda") and not gpus:
        raise HeadstartError(f"--device {device} with --engine ray: the cluster has no GPU; choose auto or cpu")
    return gpus


def device_method(device: str) -> str:
    """The preprocessing method of --decode gpu on this cluster: decoded on the actors' device kind (cuda when they
    get GPUs, else cpu), which the driver's own device need not have."""
    from extractor.devicedecode import METHOD

    return f"{METHOD}@{'cuda' if cluster_gpus(device) else 'cpu'}"


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
                                                         "recipe": recipe, "device_decode": resolved.device_decode})
    fp = resolved.fingerprint
    ds = ds.map_batches(actor, batch_size=rows, batch_format="numpy", compute=ActorPoolStrategy(size=count),
                        num_gpus=gpus, num_cpus=cpus,
                        fn_constructor_kwargs={"home": str(home), "backbone": fp.backbone, "weights": opts.weights,
                                               "size": resolved.size, "fp_id": fp.id, "dtype": opts.dtype,
                                               "batch_size": opts.batch_size, "device": opts.device,
                                               "amp": opts.amp, "threads": threads, "recipe": recipe,
                                               "decode": "gpu" if resolved.device_decode else "cpu",
                                               "limits": opts.limits})
    yield from _shards(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0), recipe)


def _shards(batches, recipe: str) -> Iterator[tuple[str, list[str], int, list[tuple[str, DecodeError]], list[int]]]:
    """The actors' reports, one per shard, as run() yields them; an actor's fatal error is raised here. Closing
    this stops the Ray work."""
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
