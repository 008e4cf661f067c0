"""What an extract would read, before any file's bytes are read or a model is loaded (`extract --dry-run`, `POST
/extract/preview`): how the folder (or CSV) is laid out, the classes and their counts, where the splits come from,
the failures known from the listing alone, and the warnings the extract would give about the folder."""

from __future__ import annotations

from collections import Counter

from extractor.definition import Wanted, describe, preview
from extractor.names import check_name
from extractor.splits import FOLDERS, split_asked, split_by_folders
from extractor.store import FeatureStore
from extractor.summary import listing_warnings


def preview_extract(store: FeatureStore, dataset: str, wanted: Wanted, split: str | None = None,
                    seed: int | None = None) -> dict:
    """The preview of one extract: the same refusals as the extract (a dataset redefined without --redefine, a
    folder without images), nothing registered, nothing read but the listing."""
    check_name("dataset", dataset)
    recorded = store.catalog.dataset(dataset)
    fractions, seed = split_asked(recorded, split, seed)  # (a bad --split is refused before any listing)
    listing, sources = preview(store.catalog, dataset, wanted)
    labels = Counter(item.label for item in listing.items if item.label is not None)
    if split_by_folders(listing):
        splits = {"by": FOLDERS, "images": dict(sorted(Counter(item.split for item in listing.items).items()))}
    else:
        splits = {"by": "fractions", "fractions": fractions, "seed": seed}
    return {"dataset": dataset, "exists": recorded is not None, "root": str(listing.root), "kind": listing.kind,
            "sources": [describe(s) for s in sources], "images": len(listing.items),
            "classes": dict(labels.most_common()), "unlabeled": sum(item.label is None for item in listing.items),
            "splits": splits, "failed": len(listing.failures),
            "failures": [{"path": p, "reason": r} for p, r in listing.failures],
            "warnings": listing_warnings(listing, dataset, split, labels), "dry_run": True}
