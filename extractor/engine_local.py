"""The local engine: images decoded in forked DataLoader workers (or JPEG bytes batched for the device), the frozen
forward in this process, vectors into the fingerprint's shard writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extractor.decode import DecodeError, Limits, decode_job, preprocess
from extractor.devicedecode import ByteDataset, JpegReader, to_batch
from extractor.model import LoadedBackbone, Resolved, resolve_device
from extractor.summary import Progress
from extractor.workers import workers_for

if TYPE_CHECKING:
    from extractor.pipeline import ExtractOptions

Job = tuple[str, Path, tuple[int, int] | None]  # (content hash, a file with those bytes, its (size, mtime) or None)


class DecodeDataset(Dataset):
    """Reads, verifies and preprocesses one file per item inside a DataLoader worker."""

    def __init__(self, jobs: list[Job], size: int, limits: Limits) -> None:
        self.jobs, self.size, self.limits = jobs, size, limits

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, DecodeError | None]:
        return i, *decode_job(self.jobs[i], self.limits, lambda data: preprocess(data, self.size, self.limits))


def collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, object]]]:
    """(index, image or None, reason or None) items -> (indices of the images, the images as one batch or None,
    (index, reason) of the others)."""
    good = [(i, arr) for i, arr, _ in items if arr is not None]
    bad = [(i, error) for i, arr, error in items if arr is None]
    batch = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return [i for i, _ in good], batch, bad


class Model:
    """The backbone of one extract call, loaded on first use and shared by the clean and the views passes."""

    def __init__(self, resolved: Resolved, device: str, amp: str) -> None:
        self.resolved, self.device, self.amp = resolved, device, amp
        self.loaded: LoadedBackbone | None = None

    def __call__(self) -> LoadedBackbone:
        if self.loaded is None:
            self.loaded = LoadedBackbone(self.resolved, self.device, self.amp).setup()
        return self.loaded

    @property
    def device_name(self) -> str:
        return str(self.loaded.device) if self.loaded else "none"


def loader(opts: ExtractOptions, resolved: Resolved, jobs: list[Job]) -> DataLoader:
    """Batches of decoded images (with device decode: of sniffed JPEG heads, this process reads the bytes)."""
    workers = workers_for(opts.workers, len(jobs), opts.batch_size)
    # Workers are forked, also from the threaded service. A forkserver was tried: its workers are children
    # of the forkserver, so torch's parent watchdog never fires and they outlive a kill -9 of the service
    # (tests/service/test_api.py checks); it also pickles the whole job list to every worker.
    if resolved.device_decode:
        dataset, batches = ByteDataset(jobs, resolved.size, opts.limits), list
    else:
        dataset, batches = DecodeDataset(jobs, resolved.size, opts.limits), collate
    return DataLoader(dataset, batch_size=opts.batch_size, num_workers=workers, collate_fn=batches,
                      pin_memory=resolve_device(opts.device).type == "cuda" and not resolved.device_decode,
                      prefetch_factor=4 if workers else None)


def compute(opts: ExtractOptions, resolved: Resolved, jobs: list[Job], model: Model, progress: Callable | None,
            should_stop: Callable | None, writer) -> tuple[int, dict[str, DecodeError], bool]:
    """Stream the jobs' decoded batches through the model into the writer: (vectors written, failures by content
    hash, stopped)."""
    # The workers start, and decode, while the model loads; forked before the weights are in memory, each fork
    # is cheaper too (with vgg16 loaded a fork took 11-14 ms here, serially per worker)
    arriving = iter(loader(opts, resolved, jobs))
    try:
        backbone = model()
    except BaseException:
        del arriving  # the workers stop now, not when the traceback goes
        raise
    bad: dict[str, DecodeError] = {}
    done, started, stopped = 0, time.monotonic(), False
    read = JpegReader(jobs, opts.limits) if resolved.device_decode else None
    for items in arriving:
        idx, batch, failed = to_batch(items, resolved.size, backbone.device, opts.limits, read) \
            if resolved.device_decode else items
        bad.update((jobs[i][0], error) for i, error in failed)
        if batch is not None:
            writer.add([jobs[i][0] for i in idx], backbone.embed(batch))
        done += len(idx) + len(failed)
        if progress:
            progress(Progress(done, len(jobs), len(bad), time.monotonic() - started))
        if should_stop and should_stop():
            stopped = True
            break
    writer.flush()
    return writer.written, bad, stopped
