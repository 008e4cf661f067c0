"""Predict path: backbones and heads loaded once (bounded LRU), a micro-batcher thread per backbone."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from classifiers.heads import Head
from classifiers.persist import head_dir, load, read_manifest
from classifiers.predict import backbone_for
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone
from service.metrics import Metrics

log = logging.getLogger("headstart.predict")


class ModelFailure(HeadstartError):
    """The backbone failed on a batch (CUDA out of memory, runtime error): that request fails, not the service."""

    status = 503


def _resolve_future(fut: asyncio.Future, value: object, error: Exception | None) -> None:
    if fut.done():  # the client went away
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class MicroBatcher:
    """Collects concurrent requests for one backbone into batches of at most `max_batch`.

    It waits up to `max_wait` for more only while other requests are still being decoded
    (`announce`d), so a lone request never pays the wait.
    """

    def __init__(self, backbone: LoadedBackbone, max_batch: int, max_wait_s: float, metrics: Metrics) -> None:
        self.backbone, self.max_batch, self.max_wait, self.metrics = backbone, max_batch, max_wait_s, metrics
        self.queue: queue.Queue = queue.Queue()
        self.pending = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="headstart-batcher", daemon=True)
        self.thread.start()

    def announce(self, n: int = 1) -> None:
        with self.lock:
            self.pending += n

    async def submit(self, array: np.ndarray) -> np.ndarray:
        """One preprocessed image (announced before decoding) -> its feature vector."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.put((array, fut, loop))
        self.announce(-1)
        return await fut

    def close(self) -> None:
        self.queue.put(None)

    def _collect(self, first: tuple) -> list[tuple]:
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if self.pending <= 0 or left <= 0:
                break
            try:
                batch.append(self.queue.get(timeout=left))
            except queue.Empty:
                break
        if any(item is None for item in batch):
            self.queue.put(None)
        return [item for item in batch if item is not None]

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = self._collect(first)
            vectors, error = None, None
            try:
                vectors = self.backbone.embed_arrays([a for a, _, _ in batch])
            except Exception as exc:  # CUDA OOM or a model error: fail these requests, keep serving
                log.exception("backbone forward failed on a batch of %d", len(batch))
                error = ModelFailure(f"model error while predicting ({type(exc).__name__}); retry later")
                _free_cuda_cache()
            self.metrics.observe("headstart_predict_batch_size", len(batch))
            self.metrics.inc("headstart_predict_images_total", None, len(batch))
            for i, (_, fut, loop) in enumerate(batch):
                loop.call_soon_threadsafe(_resolve_future, fut, None if error else vectors[i], error)


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Models:
    """Bounded LRU caches: backbones (each with its batcher) by fingerprint, heads by saved version."""

    def __init__(self, heads_dir: Path, device: str, max_backbones: int, max_heads: int, max_batch: int,
                 max_wait_s: float, metrics: Metrics) -> None:
        self.heads_dir, self.device, self.metrics = heads_dir, device, metrics
        self.max_backbones, self.max_heads = max_backbones, max_heads
        self.max_batch, self.max_wait = max_batch, max_wait_s
        self.backbones: OrderedDict[str, MicroBatcher] = OrderedDict()
        self.heads: OrderedDict[tuple[str, str], tuple[Head, dict]] = OrderedDict()
        self.lock = threading.Lock()

    def head(self, name: str) -> tuple[Head, dict, MicroBatcher]:
        """The head's current version and its backbone's batcher, loading what is not cached (blocking)."""
        version = head_dir(self.heads_dir, name)
        key = (name, version.name)
        with self.lock:
            if key in self.heads:
                self.heads.move_to_end(key)
                head, manifest = self.heads[key]
                return head, manifest, self._batcher(manifest)
            resolved = backbone_for(read_manifest(version), version)
            head, manifest = load(self.heads_dir, name, fingerprint=resolved.fingerprint.id, device=self.device)
            manifest = {**manifest, "version_dir": str(version)}
            self.heads[key] = (head, manifest)
            while len(self.heads) > self.max_heads:
                self.heads.popitem(last=False)
            return head, manifest, self._batcher(manifest)

    def _batcher(self, manifest: dict) -> MicroBatcher:
        fp = manifest["fingerprint"]["id"]
        if fp in self.backbones:
            self.backbones.move_to_end(fp)
            return self.backbones[fp]
        backbone = LoadedBackbone(backbone_for(manifest, Path(manifest["version_dir"])), self.device).setup()
        self.backbones[fp] = MicroBatcher(backbone, self.max_batch, self.max_wait, self.metrics)
        while len(self.backbones) > self.max_backbones:
            _, evicted = self.backbones.popitem(last=False)
            evicted.close()
        return self.backbones[fp]

    def forget(self, name: str) -> None:
        with self.lock:
            for key in [k for k in self.heads if k[0] == name]:
                del self.heads[key]

    def close(self) -> None:
        with self.lock:
            for batcher in self.backbones.values():
                batcher.close()
            self.backbones.clear()
