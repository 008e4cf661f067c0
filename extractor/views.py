"""Augmented views in the cache: K views of each train image (or test-time views of val/test images), computed
once and stored beside the clean vectors under the same fingerprint and writer lock. Only missing views are
computed: raising K from 4 to 8 computes views 4-7, new images get theirs, nothing is computed twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extractor.augment import Recipe, make_views
from extractor.decode import DecodeError, Limits
from extractor.model import LoadedBackbone, Resolved
from extractor.store import FeatureStore
from extractor.summary import Progress
from extractor.workers import workers_for


@dataclass
class ViewsSummary:
    """What one views run did (the `views` part of an extract summary)."""

    recipe: str
    per_image: int
    split: str
    images: int  # images of the split that needed views
    computed: int  # views computed in this run
    cached: int  # views of the split already in the cache
    failed: int
    stopped: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class ViewDataset(Dataset):
    """Reads and verifies one file, decodes it once, and makes its missing views (in a DataLoader worker)."""

    def __init__(self, jobs: list[tuple[str, Path, list[int]]], size: int, limits: Limits, recipe: Recipe) -> None:
        self.jobs, self.size, self.limits, self.recipe = jobs, size, limits, recipe

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, DecodeError | None]:
        sha, path, indices = self.jobs[i]
        return i, *make_views(sha, path, indices, self.size, self.limits, self.recipe)


def collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, DecodeError]]]:
    """(job index of each view row, the views as one NHWC batch, failures)."""
    owners = [i for i, arr, _ in items if arr is not None for _ in range(len(arr))]
    arrays = [arr for _, arr, _ in items if arr is not None]
    bad = [(i, error) for i, arr, error in items if arr is None]
    return owners, (torch.from_numpy(np.concatenate(arrays)) if arrays else None), bad


def compute_views(store: FeatureStore, dataset: str, resolved: Resolved, recipe: Recipe, count: int,
                  files: dict[str, Path], model: Callable[[], LoadedBackbone], *, split: str = "train",
                  dtype: str = "float32", batch_size: int = 32, workers: int | None = 0, limits: Limits | None = None,
                  flush_seconds: float = 60.0, shard_rows: int | None = None, skip: set[str] = frozenset(),
                  progress: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                  remote: Callable | None = None) -> tuple[ViewsSummary, dict[str, DecodeError]]:
    """Bring views 0..count-1 of the split's images into the cache; `model()` gives the loaded backbone.

    `remote(jobs=, writer=, progress=, should_stop=)`, when given, computes the views elsewhere (the Ray engine:
    extractor.engine_ray.compute) and returns (rows committed, failures, stopped); the lock, the choice of the
    missing views and the summary stay here."""
    fp = resolved.fingerprint
    if resolved.device_decode:
        from extractor.errors import HeadstartError

        raise HeadstartError("views are made from the CPU path's pixels, and these features were decoded on the "
                             "device (--decode gpu); use features extracted with --decode cpu")
    needed = {s: v for s, v in store.catalog.missing_views(dataset, fp.id, recipe.text, count, split).items()
              if s not in skip and s in files}
    summary = ViewsSummary(recipe.name, count, split, len(needed), 0, 0, 0)
    bad: dict[str, DecodeError] = {}
    if needed:
        with store.writer(fp, dtype, shard_rows, flush_seconds, recipe=recipe.text) as writer:
            needed = {s: v for s, v in store.catalog.missing_views(dataset, fp.id, recipe.text, count, split).items()
                      if s not in skip and s in files}  # again, under the lock
            jobs = [(sha, files[sha], indices) for sha, indices in needed.items()]
            if jobs and remote is not None:
                _, failed, summary.stopped = remote(jobs=jobs, writer=writer, progress=progress,
                                                    should_stop=should_stop)
                bad.update(failed)
            elif jobs:
                batch = max(1, batch_size // max(len(j[2]) for j in jobs))
                workers = workers_for(workers, len(jobs), batch)
                loader = DataLoader(ViewDataset(jobs, resolved.size, limits or Limits(), recipe), batch_size=batch,
                                    num_workers=workers, collate_fn=collate, prefetch_factor=2 if workers else None)
                failed, summary.stopped = _local(jobs, writer, progress, should_stop, loader, model())
                bad.update(failed)
            writer.flush()
            summary.computed = writer.written
    summary.failed = len(bad)
    summary.cached = store.catalog.count_views(dataset, fp.id, recipe.text, count, split) - summary.computed
    return summary, bad


def _local(jobs: list[tuple[str, Path, list[int]]], writer, progress: Callable | None, should_stop: Callable | None,
           loader: DataLoader, backbone: LoadedBackbone) -> tuple[dict[str, DecodeError], bool]:
    """Views made in this machine's DataLoader workers, embedded here: (failures, stopped)."""
    bad: dict[str, DecodeError] = {}
    total, done, started = sum(len(j[2]) for j in jobs), 0, time.monotonic()
    for owners, batch, failed in loader:
        bad.update((jobs[i][0], error) for i, error in failed)
        if batch is not None:
            writer.add([jobs[i][0] for i in owners], backbone.embed(batch), views=_rows(jobs, owners))
            done += len(owners)
        done += sum(len(jobs[i][2]) for i, _ in failed)
        if progress:
            progress(Progress(done, total, len(bad), time.monotonic() - started, phase="views"))
        if should_stop and should_stop():
            return bad, True
    return bad, False


def _rows(jobs: list[tuple[str, Path, list[int]]], owners: list[int]) -> list[int]:
    """The view index of each row: the i-th row owned by a job is that job's i-th missing index."""
    seen: dict[int, int] = {}
    out = []
    for job in owners:
        k = seen.get(job, 0)
        out.append(jobs[job][2][k])
        seen[job] = k + 1
    return out
