"""Which cached features a command means: a dataset's fingerprint for a backbone (and weights, size), and the
backbone a command that names none means."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from extractor.backbones import PREPROCESS_METHOD, get_spec, make_fingerprint, resolve_size
from extractor.errors import HeadstartError, NotFound
from extractor.weights import head_weights, identity, parse_weights

if TYPE_CHECKING:
    from extractor.store import FeatureStore

DEFAULT_BACKBONE = "vgg16"


def resolve(store: FeatureStore, dataset: str, backbone: str | None, weights: str | None = None,
            size: int | None = None) -> str:
    """The fingerprint id of `dataset`'s features for `backbone` (and weights, when several exist); no
    backbone: the cached one (cached_backbone)."""
    if store.catalog.dataset(dataset) is None:
        names = ", ".join(store.catalog.dataset_names()) or "none yet"
        raise NotFound(f"no dataset {dataset!r}; known datasets: {names}", cli="run `headstart extract` first",
                       api="POST /extract first")
    cached = store.catalog.dataset_summary(dataset)["fingerprints"]  # (one query: ~90 ms at 100,000 members)
    backbone = cached_backbone(store, dataset, backbone, cached)
    spec = get_spec(backbone)
    if weights is not None:
        choice = parse_weights(head_weights(weights, store.home))
        wanted = make_fingerprint(spec, resolve_size(spec, size), identity(choice, spec))
        same = [fp for fp, b, s, _, _ in cached if b == backbone and _same_but_decode(json.loads(s), wanted.spec)]
        # the CPU path's features when they exist, else those of the one decode method there is
        return wanted.id if wanted.id in same or len(same) != 1 else same[0]
    rows = [(fp, json.loads(s), src) for fp, b, s, _, src in cached if b == backbone]
    found = [(fp, src or spec["weights"]) for fp, spec, src in rows]
    if not found:
        raise NotFound(f"dataset {dataset!r} has no {backbone} features",
                       cli=f"run `headstart extract DATA_DIR --dataset {dataset} --backbone {backbone}`",
                       api=f'POST /extract with "dataset": "{dataset}", "backbone": "{backbone}" first')
    if len(rows) > 1 and all(_same_but_decode(spec, rows[0][1]) for _, spec, _ in rows):
        # one set of features decoded two ways: the CPU path's, as when weights are named
        return next((fp for fp, spec, _ in rows if spec["preprocess"].get("method") == PREPROCESS_METHOD),
                    rows[0][0])
    if len(found) > 1:
        options = "; ".join(f"{fp} (weights {w})" for fp, w in found)
        raise HeadstartError(f"dataset {dataset!r} has {backbone} features from several weights: {options}",
                             cli=f"pass --weights to choose (e.g. --weights {found[0][1]})",
                             api='send "weights" to choose')
    return found[0][0]


def cached_backbone(store: FeatureStore, dataset: str, backbone: str | None, cached: list | None = None) -> str:
    """`backbone`, or when none is named: vgg16 (the default) where the dataset has its features, else the one
    backbone it has features of (extracted with --backbone resnet50, trained without naming it); with
    several, one line listing them. `cached`: the dataset's fingerprint rows (dataset_summary), when read already."""
    if backbone:
        return backbone
    if cached is None:
        cached = store.catalog.dataset_summary(dataset)["fingerprints"] if store.catalog.dataset(dataset) else []
    have = sorted({row[1] for row in cached})
    if not have or DEFAULT_BACKBONE in have:
        return DEFAULT_BACKBONE
    if len(have) == 1:
        return have[0]
    raise HeadstartError(f"dataset {dataset!r} has features of {', '.join(have)}, not of {DEFAULT_BACKBONE} "
                         f"(the default backbone)", cli="pass --backbone to choose one",
                         api='send "backbone" to choose one')


def _same_but_decode(spec: dict, wanted: dict) -> bool:
    """Whether two fingerprint specs differ at most in how the pixels were decoded."""
    def strip(s: dict) -> dict:
        return {**s, "preprocess": {k: v for k, v in s.get("preprocess", {}).items() if k != "method"}}

    return strip(spec) == strip(wanted)
