"""Extraction pipeline: list -> hash -> register -> decode in DataLoader workers -> frozen forward -> shard writer."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extractor import augment, engine_ray, ray_cluster
from extractor.decode import DecodeError, Limits, decode_job, preprocess
from extractor.definition import Wanted, collect
from extractor.devicedecode import ByteDataset, JpegReader, to_batch
from extractor.errors import HeadstartError, Stopped
from extractor.model import LoadedBackbone, Resolved, amp_dtype, check_decode, decode_method, resolve, resolve_device
from extractor.names import check_name
from extractor.splits import register
from extractor.store import FeatureStore, check_dtype
from extractor.summary import ExtractSummary, Progress, warnings
from extractor.verify import heal
from extractor.views import compute_views
from extractor.weights import head_weights
from extractor.workers import check_workers, workers_for


@dataclass
class ExtractOptions:
    """Everything one extraction needs; the CLI and the service both build one of these."""

    data_dir: Path
    dataset: str
    labels_csv: Path | None = None
    path_column: str | None = None
    label_column: str | None = None
    unlabeled: bool = False
    name_labels: bool = False  # labels from the file names: cat.12.jpg -> cat
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
    redefine: bool = False  # replace the dataset's recorded sources with this folder (and labels)
    add: bool = False  # add this folder to the dataset's recorded sources
    augment: str | None = None  # a recipe: also compute `views` augmented views of every train image
    views: int = 0
    decode: str = "auto"  # auto, cpu or gpu (JPEGs decoded on the device; part of the fingerprint)
    only: frozenset[str] | None = None  # compute vectors for these content hashes only (a sample of the dataset)
    engine: str = "local"  # local, or ray (extractor.engine_ray: tasks and actors on a Ray cluster)
    ray_address: str | None = None  # the Ray head (host:port, auto); none: a local Ray cluster
    actors: int | None = None  # forward actors with --engine ray (default: one per GPU, else 1)

    def wanted(self) -> Wanted:
        return Wanted(self.data_dir, self.labels_csv, self.path_column, self.label_column, self.unlabeled,
                      self.redefine, self.add, self.name_labels)


class DecodeDataset(Dataset):
    """Reads, verifies and preprocesses one file per item inside a DataLoader worker."""

    def __init__(self, jobs: list[tuple[str, Path, tuple[int, int] | None]], size: int, limits: Limits) -> None:
        self.jobs, self.size, self.limits = jobs, size, limits

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, DecodeError | None]:
        return i, *decode_job(self.jobs[i], self.limits, lambda data: preprocess(data, self.size, self.limits))


def collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, DecodeError]]]:
    good = [(i, arr) for i, arr, _ in items if arr is not None]
    bad = [(i, error) for i, arr, error in items if arr is None]
    batch = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return [i for i, _ in good], batch, bad


def _resolved(opts: ExtractOptions) -> Resolved:
    """The features this run brings into the cache: the CPU path's, or with --decode gpu the device-decode
    path's (views are made from the CPU path's pixels, so --augment keeps the CPU path)."""
    cpu = resolve(opts.backbone, opts.weights, opts.size)
    if opts.engine == "ray":  # decoded on the actors' device kind, which the driver need not have
        method = engine_ray.device_method(opts.device) if opts.decode == "gpu" else cpu.preprocess.method
    else:
        method = decode_method(opts.decode, opts.device)
    if method == cpu.preprocess.method or opts.augment:
        return cpu
    return resolve(opts.backbone, opts.weights, opts.size, method)


def _check(opts: ExtractOptions) -> None:
    check_dtype(opts.dtype)
    ray_cluster.check_engine(opts.engine)
    if check_decode(opts.decode) == "gpu" and opts.augment:
        raise HeadstartError("--decode gpu with --augment: views are made from the CPU path's pixels; pass "
                             "--decode cpu (or auto) to compute views")
    if opts.augment is not None or opts.views:
        if opts.augment is None or not opts.views:
            raise HeadstartError(f"--augment {opts.augment} --views {opts.views}: views need both, a recipe and "
                                 f"a number of views per train image (e.g. --augment classic --views 4)")
        augment.parse(opts.augment)
        if augment.check_views(opts.views) < 1:
            raise HeadstartError("--views 0 with --augment: expected at least 1 view per train image")
    # a bad device is refused even when nothing is left to compute (Ray: the devices are the workers', see plan())
    amp_dtype(resolve_device(opts.device) if opts.engine == "local" else torch.device("cpu"), opts.amp)
    if opts.batch_size < 1:
        raise HeadstartError(f"batch size {opts.batch_size}: expected an integer >= 1")
    check_workers(opts.workers)
    check_name("dataset", opts.dataset)


def extract(opts: ExtractOptions, store: FeatureStore | None = None,
            progress: Callable[[Progress], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> ExtractSummary:
    """Bring the dataset's features for one backbone into the cache; only new images are computed.

    A dataset that this run registers is forgotten again when the run fails before any vector exists for it."""
    _check(opts)
    store = store or FeatureStore()
    opts = replace(opts, weights=head_weights(opts.weights, store.home))  # head:NAME -> its trunk file
    if opts.engine == "ray":
        ray_cluster.connect(opts.ray_address)
    resolved = _resolved(opts)
    with store.dataset_lock(opts.dataset):  # no `datasets rm` while it runs, in any process
        created = store.catalog.dataset(opts.dataset) is None
        try:
            with _collector_skips_older_objects():
                summary = _extract(opts, store, resolved, progress, should_stop)
        except BaseException:
            _forget_if_empty(store, opts.dataset, created)
            raise
        # every image failed (no vector computed or found: the catalog is asked only then): a rerun needs no
        # --redefine
        if not summary.extracted + summary.cached and _forget_if_empty(store, opts.dataset, created):
            summary.warnings.append(f"no image could be used, so dataset {opts.dataset!r} was not registered: fix "
                                    f"what the failures say and extract again")
    return summary


def _forget_if_empty(store: FeatureStore, dataset: str, created: bool) -> bool:
    """A dataset this run registered that has no vector at all is forgotten again; whether it was."""
    if created and store.catalog.dataset(dataset) and not store.catalog.dataset_summary(dataset)["fingerprints"]:
        store.catalog.drop_dataset(dataset)
        return True
    return False


def _extract(opts: ExtractOptions, store: FeatureStore, resolved: Resolved, progress: Callable | None,
             should_stop: Callable | None) -> ExtractSummary:
    start = hashing_started = time.monotonic()
    fp_id = resolved.fingerprint.id

    def hashed(done: int, total: int) -> None:
        if progress:
            progress(Progress(done, total, 0, time.monotonic() - hashing_started, phase="hashing"))

    mapper = ray_cluster.RayMap() if opts.engine == "ray" else None
    try:
        listing, sources = collect(store.catalog, opts.dataset, opts.wanted(), opts.confine, hashed, should_stop,
                                   mapper)
    except Stopped:
        return ExtractSummary(opts.dataset, opts.backbone, fp_id, 0, 0, 0, 0, 0, 0, time.monotonic() - start,
                              "none", stopped=True)
    members = register(store.catalog, opts.dataset, listing, sources, opts.split, opts.seed, opts.resplit)
    repaired = heal(store, fp_id, opts.dataset)
    limits_sig = opts.limits.signature()
    known_bad = store.catalog.bad_content(limits_sig)
    missing = [s for s in store.catalog.missing_vectors(opts.dataset, fp_id) if s not in known_bad and
               (opts.only is None or s in opts.only)]
    extracted, new_bad, stopped = 0, {}, False
    files = {item.sha256: item.file for item in listing.items}
    stats = {item.sha256: item.stat for item in listing.items}
    roots = [s["root"] for s in sources]
    model = Model(resolved, opts.device, opts.amp)
    if missing:
        extracted, new_bad, stopped = _compute(opts, store, resolved, files, stats, set(known_bad), model, progress,
                                               should_stop, roots)
    content_bad = [(sha, str(err)) for sha, err in new_bad.items() if err.content]
    if content_bad:
        store.catalog.remember_bad_content(limits_sig, content_bad)
    bad = {**known_bad, **{sha: str(err) for sha, err in new_bad.items()}}
    failures = listing.failures + [(m[0], bad[m[1]]) for m in members if m[1] in bad]
    store.catalog.set_failures(opts.dataset, failures)
    unique = {m[1] for m in members}
    good = unique - bad.keys()
    summary = ExtractSummary(
        dataset=opts.dataset, backbone=opts.backbone, fingerprint=fp_id,
        files=len(members) + len(listing.failures), extracted=extracted,
        cached=len(good) - extracted - (_still_missing(store, opts.dataset, fp_id, bad) if stopped else 0),
        failed=len(failures), duplicates=len(members) - len(unique),
        skipped=sum(listing.skipped.values()) + listing.top_level,
        seconds=time.monotonic() - start, device="none", stopped=stopped, failures=failures, repaired=repaired)
    if opts.augment and not stopped:
        remote = partial(engine_ray.compute, opts, store, resolved, roots=roots) if opts.engine == "ray" else None
        views, _ = compute_views(
            store, opts.dataset, resolved, augment.parse(opts.augment), opts.views, files, model, dtype=opts.dtype,
            batch_size=opts.batch_size, workers=opts.workers, limits=opts.limits, flush_seconds=opts.flush_seconds,
            shard_rows=opts.shard_rows, skip=set(bad), progress=progress, should_stop=should_stop, remote=remote)
        summary.views, summary.stopped = views.to_dict(), views.stopped
    summary.device = model.device_name if opts.engine == "local" else "ray"
    summary.seconds = time.monotonic() - start
    if extracted and not stopped and not opts.augment:  # (views' time would count against the clean vectors)
        store.record_rate(fp_id, extracted, summary.seconds)
    summary.warnings = warnings(opts, store, listing, members, summary)
    return summary


@contextmanager
def _collector_skips_older_objects() -> Iterator[None]:
    """While extracting, the cyclic garbage collector leaves out the objects alive before (torch's modules, the
    service's): a full pass over them took 0.16-0.18 s in runs of 2,400 images in a fresh process (a first full
    pass comes early there), a quarter of such a run. They are handed back when the run ends. Other threads
    lose nothing but the same skipping: freezing only delays finding cyclic garbage."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def _still_missing(store: FeatureStore, dataset: str, fp_id: str, bad: dict) -> int:
    """Good images left without a vector (only a stopped run leaves any)."""
    return sum(1 for s in store.catalog.missing_vectors(dataset, fp_id) if s not in bad)


def _compute(opts: ExtractOptions, store: FeatureStore, resolved: Resolved, path_of: dict[str, Path],
             stats: dict[str, tuple[int, int] | None], skip: set[str], model: Model, progress: Callable | None,
             should_stop: Callable | None, roots: list[str]) -> tuple[int, dict, bool]:
    """Hold the writer lock, load the model, stream decoded batches through it into shards (the Ray engine: its
    actors write the shards, this process commits them).

    `path_of` maps each content hash to one file with those bytes: the same bytes under two names are computed
    once."""
    with store.writer(resolved.fingerprint, opts.dtype, opts.shard_rows, opts.flush_seconds) as writer:
        todo = store.catalog.missing_vectors(opts.dataset, resolved.fingerprint.id)  # again, under the lock
        jobs = [(sha, path_of[sha], stats.get(sha)) for sha in todo if sha not in skip and
                (opts.only is None or sha in opts.only)]
        if not jobs:  # another writer finished them while we were starting
            return 0, {}, False
        if opts.engine == "ray":
            return engine_ray.compute(opts, store, resolved, jobs, roots, progress, should_stop, writer)
        workers = workers_for(opts.workers, len(jobs), opts.batch_size)
        # Workers are forked, also from the threaded service. A forkserver was tried: its workers are children
        # of the forkserver, so torch's parent watchdog never fires and they outlive a kill -9 of the service
        # (tests/service/test_api.py checks); it also pickles the whole job list to every worker.
        if resolved.device_decode:  # the workers sniff JPEG heads; this process reads and the device decodes them
            dataset, batches = ByteDataset(jobs, resolved.size, opts.limits), list
        else:
            dataset, batches = DecodeDataset(jobs, resolved.size, opts.limits), collate
        loader = DataLoader(dataset, batch_size=opts.batch_size, num_workers=workers, collate_fn=batches,
                            pin_memory=resolve_device(opts.device).type == "cuda" and not resolved.device_decode,
                            prefetch_factor=4 if workers else None)
        # The workers start, and decode, while the model loads; forked before the weights are in memory, each fork
        # is cheaper too (with vgg16 loaded a fork took 11-14 ms here, serially per worker)
        arriving = iter(loader)
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
