"""Test-time augmentation: a head's probabilities averaged over N deterministic views of each image (the image,
flipped, centre and corner crops). Views of dataset images are cached like any views (recipe `tta`)."""

from __future__ import annotations

import numpy as np

from extractor import augment
from extractor.definition import member_files
from extractor.engine_local import Model
from extractor.model import LoadedBackbone, Resolved
from extractor.store import FeatureStore
from extractor.views import compute_views


def dataset_proba(store: FeatureStore, head, resolved: Resolved, dataset: str, split: str, shas: list[str], n: int,
                  device: str = "auto") -> np.ndarray:
    """Mean probabilities over test-time views 0..n-1 of the split's images (rows in the order of `shas`);
    views not in the cache yet are computed from the dataset's files first."""
    augment.check_views(n, tta=True)
    recipe = augment.parse(augment.TTA)
    fp = resolved.fingerprint.id
    compute_views(store, dataset, resolved, recipe, n, member_files(store.catalog, dataset),
                  Model(resolved, device, "auto"), split=split, workers=None)
    features, view_shas, _ = store.views(dataset, fp, recipe.text, n, split)
    proba = head.predict_proba(features)
    index = {sha: i for i, sha in enumerate(shas)}
    total = np.zeros((len(shas), proba.shape[1]))
    counts = np.zeros(len(shas))
    for sha, row in zip(view_shas, proba, strict=True):
        if sha in index:
            total[index[sha]] += row
            counts[index[sha]] += 1
    if (counts < n).any():  # an image whose file is gone or changed: say so rather than average fewer views
        from extractor.errors import HeadstartError

        raise HeadstartError(f"{int((counts < n).sum())} images of the {split} split of {dataset!r} have no "
                             f"test-time views (their files are missing or changed since they were extracted)",
                             cli="run `headstart extract` again for this dataset, or evaluate without --tta")
    return total / counts[:, None]


def image_proba(head, backbone: LoadedBackbone, arrays: list[np.ndarray], n: int) -> np.ndarray:
    """Mean probabilities over test-time views 0..n-1 of preprocessed images (one forward for all views)."""
    augment.check_views(n, tta=True)
    views = [augment.tta_view(a, i) for a in arrays for i in range(n)]
    proba = head.predict_proba(backbone.embed_arrays(views))
    return proba.reshape(len(arrays), n, -1).mean(axis=1)
