"""Pick the backbone by measurement: each backbone's features of one dataset (extracted once, cached), a linear
probe on each (logreg, C chosen on val from a sweep), ranked by val accuracy.

Extraction rates come from `FeatureStore.rates()`: every extract that computes enough vectors keeps its rate per
fingerprint, so a compare with nothing to extract still shows what extraction cost on this machine."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from classifiers.heads import LogRegHead
from classifiers.metrics import evaluate, small_split_warning
from classifiers.training import require_labels, split_arrays
from extractor.backbones import get_spec
from extractor.errors import HeadstartError, NotFound
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore


def sample_members(store: FeatureStore, dataset: str, n: int) -> frozenset[str]:
    """About n of the dataset's images, the same share of each split, chosen by content hash (the same sample on
    every run and machine)."""
    if n < 1:
        raise HeadstartError(f"--sample {n}: expected at least 1 image")
    by_split: dict[str, list[str]] = {}
    for _path, sha, _label, split in store.catalog.members(dataset):
        by_split.setdefault(split, []).append(sha)
    total = sum(len(v) for v in by_split.values())
    chosen: set[str] = set()
    for shas in by_split.values():
        keep = max(1, math.ceil(len(shas) * min(1.0, n / total)))
        chosen.update(sorted(set(shas), key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:keep])
    return frozenset(chosen)


def compare(store: FeatureStore, dataset: str, backbones: list[str], sample: int | None = None,
            weights: str = "imagenet", device: str = "auto",
            progress: Callable[[str, int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """One row per backbone, best val accuracy first (then test accuracy, then the cheaper extraction)."""
    if store.catalog.dataset(dataset) is None:
        raise NotFound(f"no dataset {dataset!r}", cli="run `headstart extract` first", api="POST /extract first")
    names = list(dict.fromkeys(b.strip() for b in backbones if b.strip()))
    if not names:
        raise HeadstartError("--backbones: expected a comma-separated list of backbone names, e.g. vgg16,resnet50")
    for name in names:  # every name checked before any work
        get_spec(name)
    require_labels(store, dataset)
    root = Path(store.catalog.sources(dataset)[0]["root"])
    only = sample_members(store, dataset, sample) if sample is not None else None
    rows = []
    for k, name in enumerate(names):
        if progress:
            progress(name, k, len(names))
        summary = extract(ExtractOptions(data_dir=root, dataset=dataset, backbone=name, weights=weights,
                                         device=device, decode="cpu", only=only), store,
                          should_stop=should_stop)
        if summary.stopped:
            break
        rows.append(_probe(store, dataset, name, summary.fingerprint, only, summary.extracted,
                           store.rates().get(summary.fingerprint)))
    rows.sort(key=lambda r: (-r["val_accuracy"], -(r["test_accuracy"] or 0.0), -(r["extract_img_s"] or 0.0)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _probe(store: FeatureStore, dataset: str, backbone: str, fp_id: str, only: frozenset[str] | None,
           extracted: int, rate: float | None) -> dict:
    table = store.table(dataset, fp_id)
    if only is not None:
        keep = np.array([s in only for s in table.sha256], dtype=bool)
        table.features = table.features[keep]
        for field in ("paths", "sha256", "labels", "splits"):
            setattr(table, field, [v for v, k in zip(getattr(table, field), keep, strict=True) if k])
    data = split_arrays(table)
    if not len(data["train"][0]) or not len(data["val"][0]):
        raise HeadstartError(f"dataset {dataset!r} has no labeled train or val images with {backbone} features "
                             f"(a larger --sample may help); compare needs both")
    head = LogRegHead(C="auto")
    started = time.perf_counter()
    head.fit(*data["train"], *data["val"])
    fit_seconds = time.perf_counter() - started
    val = evaluate(data["val"][1], head.predict_proba(data["val"][0]), head.classes_)
    test = evaluate(data["test"][1], head.predict_proba(data["test"][0]), head.classes_) \
        if len(data["test"][0]) else {"n": 0}
    dim = int(table.features.shape[1])
    return {"backbone": backbone, "fingerprint": fp_id, "dim": dim, "C": head.chosen_C_,
            "val_accuracy": val["accuracy"], "val_f1_macro": val["f1_macro"],
            "test_accuracy": test.get("accuracy"), "test_f1_macro": test.get("f1_macro"),
            "images": {s: int(len(data[s][0])) for s in data}, "extracted_now": extracted,
            "extract_img_s": rate, "cache_mb": round(len(table.sha256) * dim * table.features.itemsize / 2**20, 2),
            "fit_seconds": round(fit_seconds, 3),
            "warnings": [w for split, m in (("val", val), ("test", test))
                         if (w := small_split_warning(split, m, sampled=only is not None))]}


def images_used(rows: list[dict]) -> str:
    """The images each split held, e.g. `3/1/1 images train/val/test` (rows differ only where a backbone failed on
    more images)."""
    counts = {"/".join(str(r["images"].get(s, 0)) for s in ("train", "val", "test")) for r in rows}
    return f"{' or '.join(sorted(counts))} images train/val/test" if counts else "no images"


def table_lines(rows: list[dict]) -> list[str]:
    """The ranked table, for the terminal."""
    head = f"{'#':>2}  {'backbone':<18} {'dim':>6} {'C':>7} {'val acc':>8} {'val F1':>7} {'test acc':>8} " \
           f"{'test F1':>7} {'img/s':>8} {'cache MB':>9}"
    out = [head, "-" * len(head)]

    def num(v, fmt):
        return format(v, fmt) if v is not None else format("-", fmt[0] + fmt[1:].split(".")[0])

    for r in rows:
        out.append(f"{r['rank']:>2}  {r['backbone']:<18} {r['dim']:>6} {r['C']:>7g} {r['val_accuracy']:>8.3f} "
                   f"{r['val_f1_macro']:>7.3f} {num(r['test_accuracy'], '>8.3f')} {num(r['test_f1_macro'], '>7.3f')} "
                   f"{num(r['extract_img_s'], '>8.1f')} {r['cache_mb']:>9.2f}")
    return out
