"""Extraction pipeline: list -> hash -> register -> decode in DataLoader workers -> frozen forward -> shard writer."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extractor.datasets import Listing, hash_items, register, scan_csv, scan_folder
from extractor.decode import DecodeError, Limits, preprocess, read_file
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, Resolved, amp_dtype, resolve, resolve_device
from extractor.names import check_name
from extractor.store import FeatureStore, check_dtype


@dataclass
class ExtractOptions:
    """Everything one extraction needs; the CLI and the service both build one of these."""

    data_dir: Path
    dataset: str
    labels_csv: Path | None = None
    path_column: str | None = None
    label_column: str | None = None
    unlabeled: bool = False
    backbone: str = "vgg16"
    weights: str = "imagenet"
    size: int | None = None
    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"
    dtype: str = "float32"
    split: str | None = None
    seed: int | None = None
    resplit: bool = False
    limits: Limits = field(default_factory=Limits)
    shard_rows: int | None = None
    flush_seconds: float = 60.0
    confine: bool = False  # refuse files whose real path leaves data_dir (the service sets this)


@dataclass
class Progress:
    """One progress event: images done of total in this run, failures, rate and ETA.

    `phase` is "hashing" while new files are read to find their content keys (then done/total count
    files), and "extracting" while images go through the backbone."""

    done: int
    total: int
    failed: int
    elapsed: float
    phase: str = "extracting"

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass
class ExtractSummary:
    """What one extraction did; `to_dict()` is the CLI's --json line and the job result."""

    dataset: str
    backbone: str
    fingerprint: str
    files: int
    extracted: int
    cached: int
    failed: int
    duplicates: int
    skipped: int
    seconds: float
    device: str
    stopped: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["images_per_second"] = round(self.images_per_second, 2)
        out["seconds"] = round(self.seconds, 3)
        out["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return out


class DecodeDataset(Dataset):
    """Reads, verifies and preprocesses one file per item inside a DataLoader worker."""

    def __init__(self, jobs: list[tuple[str, Path]], size: int, limits: Limits) -> None:
        self.jobs, self.size, self.limits = jobs, size, limits

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, DecodeError | None]:
        sha, path = self.jobs[i]
        try:
            data = read_file(path, self.limits)
            if hashlib.sha256(data).hexdigest() != sha:
                raise DecodeError("file changed while extracting; run the extraction again", content=False)
            return i, preprocess(data, self.size, self.limits), None
        except DecodeError as exc:
            return i, None, exc
        except Exception as exc:  # one bad file is a recorded failure, never a crashed job
            return i, None, DecodeError(f"unexpected decode error: {type(exc).__name__}: {exc}")


def collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, DecodeError]]]:
    good = [(i, arr) for i, arr, _ in items if arr is not None]
    bad = [(i, error) for i, arr, error in items if arr is None]
    batch = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return [i for i, _ in good], batch, bad


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def list_dataset(opts: ExtractOptions) -> Listing:
    if opts.labels_csv is not None:
        return scan_csv(opts.data_dir, opts.labels_csv, opts.path_column, opts.label_column)
    return scan_folder(opts.data_dir, unlabeled=opts.unlabeled)


def _check(opts: ExtractOptions) -> None:
    check_dtype(opts.dtype)
    amp_dtype(resolve_device(opts.device), opts.amp)  # a bad device is refused even when nothing is left to compute
    if opts.batch_size < 1 or (opts.workers is not None and opts.workers < 0):
        raise HeadstartError(
            f"batch size {opts.batch_size} / workers {opts.workers}: expected batch >= 1 and workers >= 0")
    check_name("dataset", opts.dataset)


def extract(opts: ExtractOptions, store: FeatureStore | None = None,
            progress: Callable[[Progress], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> ExtractSummary:
    """Bring the dataset's features for one backbone into the cache; only new images are computed."""
    start = time.monotonic()
    _check(opts)
    store = store or FeatureStore()
    resolved = resolve(opts.backbone, opts.weights, opts.size)
    listing = list_dataset(opts)
    if not listing.items and not listing.failures:  # nothing registered for a wrong folder
        raise HeadstartError(f"no images found in {opts.data_dir}; expected class subfolders of images, "
                             f"images directly in the folder, or a labels CSV")
    hashing_started = time.monotonic()

    def hashed(done: int, total: int) -> None:
        if progress:
            progress(Progress(done, total, 0, time.monotonic() - hashing_started, phase="hashing"))

    hash_items(listing, store.catalog, confine=opts.confine, progress=hashed)
    members = register(store.catalog, opts.dataset, listing, opts.split, opts.seed, opts.resplit)
    fp_id = resolved.fingerprint.id
    limits_sig = opts.limits.signature()
    known_bad = store.catalog.bad_content(limits_sig)
    missing = [s for s in store.catalog.missing_vectors(opts.dataset, fp_id) if s not in known_bad]
    extracted, new_bad, stopped, device = 0, {}, False, "none"
    if missing:
        extracted, new_bad, stopped, device = _compute(opts, store, resolved, listing.root, members,
                                                       set(known_bad), progress, should_stop)
    content_bad = [(sha, str(err)) for sha, err in new_bad.items() if err.content]
    if content_bad:
        store.catalog.remember_bad_content(limits_sig, content_bad)
    bad = {**known_bad, **{sha: str(err) for sha, err in new_bad.items()}}
    failures = listing.failures + [(p, bad[s]) for p, s, _, _ in members if s in bad]
    store.catalog.set_failures(opts.dataset, failures)
    unique = {s for _, s, _, _ in members}
    good = unique - bad.keys()
    return ExtractSummary(
        dataset=opts.dataset, backbone=opts.backbone, fingerprint=fp_id,
        files=len(members) + len(listing.failures), extracted=extracted,
        cached=len(good) - extracted - (_still_missing(store, opts.dataset, fp_id, bad) if stopped else 0),
        failed=len(failures), duplicates=len(members) - len(unique), skipped=listing.skipped,
        seconds=time.monotonic() - start, device=device, stopped=stopped, failures=failures)


def _still_missing(store: FeatureStore, dataset: str, fp_id: str, bad: dict) -> int:
    """Good images left without a vector (only a stopped run leaves any)."""
    return sum(1 for s in store.catalog.missing_vectors(dataset, fp_id) if s not in bad)


def _compute(opts: ExtractOptions, store: FeatureStore, resolved: Resolved, root: Path, members: list,
             skip: set[str], progress: Callable | None, should_stop: Callable | None) -> tuple[int, dict, bool, str]:
    """Hold the writer lock, load the model, stream decoded batches through it into shards."""
    path_of: dict[str, Path] = {}
    for rel, sha, _, _ in members:
        path_of.setdefault(sha, root / rel)  # the same bytes under two names are computed once
    with store.writer(resolved.fingerprint, opts.dtype, opts.shard_rows, opts.flush_seconds) as writer:
        todo = store.catalog.missing_vectors(opts.dataset, resolved.fingerprint.id)  # again, under the lock
        jobs = [(sha, path_of[sha]) for sha in todo if sha not in skip]
        if not jobs:  # another writer finished them while we were starting
            return 0, {}, False, "none"
        model = LoadedBackbone(resolved, opts.device, opts.amp).setup()
        workers = default_workers() if opts.workers is None else opts.workers
        # Workers are forked, also from the threaded service. A forkserver was tried: its workers are children
        # of the forkserver, so torch's parent watchdog never fires and they outlive a kill -9 of the service
        # (tests/service/test_api.py checks); it also pickles the whole job list to every worker.
        loader = DataLoader(DecodeDataset(jobs, resolved.size, opts.limits), batch_size=opts.batch_size,
                            num_workers=workers, collate_fn=collate, pin_memory=model.device.type == "cuda",
                            prefetch_factor=4 if workers else None)
        bad: dict[str, DecodeError] = {}
        done, started, stopped = 0, time.monotonic(), False
        for idx, batch, failed in loader:
            bad.update((jobs[i][0], error) for i, error in failed)
            if batch is not None:
                writer.add([jobs[i][0] for i in idx], model.embed(batch))
            done += len(idx) + len(failed)
            if progress:
                progress(Progress(done, len(jobs), len(bad), time.monotonic() - started))
            if should_stop and should_stop():
                stopped = True
                break
        writer.flush()
        return writer.written, bad, stopped, str(model.device)
