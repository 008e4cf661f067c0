"""Extraction pipeline: list -> hash -> register -> decode, frozen forward, shard writer (extractor.engine_local, or
extractor.engine_ray on a Ray cluster) -> commit, views, summary."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from extractor import augment, engine_local, engine_ray, ray_cluster
from extractor.datasets import Listing
from extractor.decode import Limits
from extractor.definition import Wanted, collect
from extractor.engine_local import Model
from extractor.errors import HeadstartError, Stopped
from extractor.model import Resolved, amp_dtype, check_decode, decode_method, resolve, resolve_device
from extractor.names import check_name
from extractor.splits import register
from extractor.store import FeatureStore, check_dtype
from extractor.summary import ExtractSummary, Progress, warnings
from extractor.verify import heal
from extractor.views import compute_views
from extractor.weights import head_weights
from extractor.workers import check_workers


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
    start, fp_id = time.monotonic(), resolved.fingerprint.id
    try:
        listing, sources = _listed(opts, store, progress, should_stop)
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
    bad = _remember_bad(store, limits_sig, known_bad, new_bad)
    failures = listing.failures + [(m[0], bad[m[1]]) for m in members if m[1] in bad]
    store.catalog.set_failures(opts.dataset, failures)
    unique = {m[1] for m in members}
    left = _still_missing(store, opts.dataset, fp_id, bad) if stopped else 0
    summary = ExtractSummary(
        dataset=opts.dataset, backbone=opts.backbone, fingerprint=fp_id, files=len(members) + len(listing.failures),
        extracted=extracted, cached=len(unique - bad.keys()) - extracted - left, failed=len(failures),
        duplicates=len(members) - len(unique), skipped=sum(listing.skipped.values()) + listing.top_level,
        seconds=time.monotonic() - start, device="none", stopped=stopped, failures=failures, repaired=repaired)
    if opts.augment and not stopped:
        summary.views, summary.stopped = _views(opts, store, resolved, files, model, set(bad), roots, progress,
                                                should_stop)
    summary.device = model.device_name if opts.engine == "local" else "ray"
    summary.seconds = time.monotonic() - start
    if extracted and not stopped and not opts.augment:  # (views' time would count against the clean vectors)
        store.record_rate(fp_id, extracted, summary.seconds)
    summary.warnings = warnings(opts, store, listing, members, summary)
    return summary


def _listed(opts: ExtractOptions, store: FeatureStore, progress: Callable | None,
            should_stop: Callable | None) -> tuple[Listing, list[dict]]:
    """The dataset's files and sources, new files hashed (phase `hashing` of the progress); Stopped when asked."""
    started = time.monotonic()

    def hashed(done: int, total: int) -> None:
        if progress:
            progress(Progress(done, total, 0, time.monotonic() - started, phase="hashing"))

    mapper = ray_cluster.RayMap() if opts.engine == "ray" else None
    return collect(store.catalog, opts.dataset, opts.wanted(), opts.confine, hashed, should_stop, mapper)


def _remember_bad(store: FeatureStore, limits_sig: str, known: dict[str, str], new: dict) -> dict[str, str]:
    """Every content hash that failed, with its reason. Content that failed now is remembered; a file that could
    not be read, or changed meanwhile, is not: its bytes may be fine."""
    content_bad = [(sha, str(err)) for sha, err in new.items() if err.content]
    if content_bad:
        store.catalog.remember_bad_content(limits_sig, content_bad)
    return {**known, **{sha: str(err) for sha, err in new.items()}}


def _views(opts: ExtractOptions, store: FeatureStore, resolved: Resolved, files: dict[str, Path], model: Model,
           skip: set[str], roots: list[str], progress: Callable | None,
           should_stop: Callable | None) -> tuple[dict, bool]:
    """The --augment views of the train images, after their clean vectors: (views summary, stopped)."""
    remote = partial(engine_ray.compute, opts, store, resolved, roots=roots) if opts.engine == "ray" else None
    views, _ = compute_views(
        store, opts.dataset, resolved, augment.parse(opts.augment), opts.views, files, model, dtype=opts.dtype,
        batch_size=opts.batch_size, workers=opts.workers, limits=opts.limits, flush_seconds=opts.flush_seconds,
        shard_rows=opts.shard_rows, skip=skip, progress=progress, should_stop=should_stop, remote=remote)
    return views.to_dict(), views.stopped


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
        return engine_local.compute(opts, resolved, jobs, model, progress, should_stop, writer)
