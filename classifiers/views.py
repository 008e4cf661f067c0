"""Training rows from cached views: the recipe a dataset has, and each train image's K views with its label."""

from __future__ import annotations

import numpy as np

from extractor import augment
from extractor.augment import Recipe
from extractor.errors import HeadstartError
from extractor.store import FeatureStore, FeatureTable


def pick_recipe(store: FeatureStore, dataset: str, fp_id: str, wanted: str | None, backbone: str) -> Recipe:
    """The recipe named by `wanted`, or the one recipe the dataset has views of under this fingerprint."""
    have = {row["recipe"] for row in store.catalog.view_summary(dataset) if row["fingerprint"] == fp_id}
    have.discard(augment.TTA)
    if wanted is not None:
        recipe = augment.parse(wanted)
        if recipe.text in have:
            return recipe
    elif len(have) == 1:
        return augment.parse(have.pop())
    names = ", ".join(sorted(augment.parse(t).name for t in have)) or "none"
    if wanted is None and have:
        raise HeadstartError(f"dataset {dataset!r} has views of several recipes ({names})",
                             cli="pass --augment RECIPE to choose", api='send "augment" to choose')
    recipe = wanted or "classic"
    raise HeadstartError(f"dataset {dataset!r} has no {backbone} views of recipe {recipe!r} (it has: {names})",
                         cli=f"run `headstart extract DATA_DIR --dataset {dataset} --backbone {backbone} "
                             f"--augment {recipe} --views K` first",
                         api=f'POST /extract with "augment": "{recipe}" and "views" first')


def view_arrays(store: FeatureStore, table: FeatureTable, dataset: str, fp_id: str, recipe: Recipe, count: int,
                backbone: str) -> tuple[np.ndarray, np.ndarray]:
    """Views 0..count-1 of every labeled train image, with the image's label; all must be in the cache."""
    label_of = {sha: lab for sha, lab, split in zip(table.sha256, table.labels, table.splits, strict=True)
                if split == "train" and lab is not None}
    features, shas, _ = store.views(dataset, fp_id, recipe.text, count, "train")
    per_image: dict[str, int] = {}
    for sha in shas:
        per_image[sha] = per_image.get(sha, 0) + 1
    short = [sha for sha in label_of if per_image.get(sha, 0) < count]
    if short:
        raise HeadstartError(
            f"{len(short)} of the {len(label_of)} labeled train images of {dataset!r} lack some of views 0-{count - 1} "
            f"of recipe {recipe.name!r}",
            cli=f"run `headstart extract DATA_DIR --dataset {dataset} --backbone {backbone} --augment {recipe.name} "
                f"--views {count}` first",
            api=f'POST /extract with "augment": "{recipe.name}", "views": {count} first')
    keep = np.array([sha in label_of for sha in shas], dtype=bool)
    labels = np.array([label_of[sha] for sha in shas if sha in label_of], dtype=object).astype(str)
    return features[keep], labels
