"""Splits: stratified, seeded train/val/test per image content, recorded once and stable under additions."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

from extractor.catalog import Catalog
from extractor.datasets import Listing
from extractor.errors import HeadstartError

SPLITS = ("train", "val", "test")


def parse_split(text: str) -> tuple[float, float, float]:
    """`0.6,0.2,0.2` (or `60,20,20`) -> train, val, test fractions summing to 1."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise HeadstartError(f"--split {text!r}: expected three non-negative numbers train,val,test like 0.6,0.2,0.2")
    total = sum(parts)
    if abs(total - 1) > 1e-6 and abs(total - 100) > 1e-6:
        raise HeadstartError(f"--split {text!r}: fractions sum to {total:g}; expected 1 (or 100)")
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def _order_key(seed: int, sha: str) -> str:
    return hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()


def _need(name: str, fractions: tuple[float, float, float], counts: Counter, overall: Counter) -> tuple:
    """How far a split is below its share: within the class first, then over all classes."""
    i = SPLITS.index(name)
    return (round(fractions[i] * (sum(counts.values()) + 1) - counts[name], 9),
            round(fractions[i] * (sum(overall.values()) + 1) - overall[name], 9), -i)


def assign_splits(units: dict[str, str | None], existing: dict[str, str],
                  fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Split per image content (sha256 -> label), stratified by label, seeded, stable under additions.

    Units that already have a split keep it; each new unit, in a seeded random order, goes to the split
    furthest below its target share within its class, ties broken by the share over all classes.
    """
    by_class: dict[str | None, list[str]] = defaultdict(list)
    for sha, label in units.items():
        by_class[label].append(sha)
    result = {sha: existing[sha] for sha in units if sha in existing}
    overall = Counter(result.values())
    for label in sorted(by_class, key=lambda x: (x is not None, x or "")):
        counts = Counter(result[sha] for sha in by_class[label] if sha in result)
        new = sorted((s for s in by_class[label] if s not in result), key=lambda s: _order_key(seed, s))
        for sha in new:
            choice = max(SPLITS, key=lambda name, c=counts: _need(name, fractions, c, overall))
            result[sha] = choice
            counts[choice] += 1
            overall[choice] += 1
    return result

DEFAULT_SPLIT, DEFAULT_SEED = "0.6,0.2,0.2", 42
FOLDERS = "folders"  # the split recorded for a dataset whose folders split every image


def _given_splits(listing: Listing) -> dict[str, str]:
    """Splits named by the folders (data/train/cat/1.jpg), per content: they decide, also for images split before
    (a file moved from validation/ to train/ moves). The same content in two split folders goes to the first by
    path, and the listing's notes say how many (a leak between the user's own splits)."""
    given: dict[str, str] = {}
    across = set()
    for item in listing.items:
        if item.split is None:
            continue
        if given.setdefault(item.sha256, item.split) != item.split:
            across.add(item.sha256)
    if across:
        listing.notes.append(f"{len(across)} images are in two split folders (the same content): each is used in "
                             f"the first by path only, so that no image is in two splits; remove the copies")
    return given


def _split_text(fractions: tuple[float, float, float]) -> str:
    return ",".join(f"{f:.6g}" for f in fractions)


def split_asked(previous: dict | None, split: str | None, seed: int | None) -> tuple[str, int]:
    """The fractions (as recorded: `0.6,0.2,0.2`) and seed a run splits new images by: the ones asked, else the
    dataset's recorded ones, else the defaults."""
    recorded = previous["split"] if previous and previous["split"] != FOLDERS else None
    return _split_text(parse_split(split or recorded or DEFAULT_SPLIT)), \
        seed if seed is not None else (previous["seed"] if previous else DEFAULT_SEED)


def split_by_folders(listing: Listing) -> bool:
    """Whether the folders name the split of every image (data/train/cat, data/validation/cat)."""
    return bool(listing.items) and all(item.split for item in listing.items)


def register(catalog: Catalog, name: str, listing: Listing, sources: list[dict], split: str | None = None,
             seed: int | None = None, resplit: bool = False) -> list[tuple[str, str, str | None, str, int]]:
    """Record the dataset's sources and current members; splits are decided once and kept for known images. A
    dataset whose folders split every image records its split as `folders` (no fractions were used)."""
    previous = catalog.dataset(name)
    recorded = previous["split"] if previous and previous["split"] != FOLDERS else None
    text, seed = split_asked(previous, split, seed)
    fractions = parse_split(text)
    by_folders = split_by_folders(listing)
    existing: dict[str, str] = {}
    if previous and not resplit:
        if recorded and not by_folders and (recorded, previous["seed"]) != (text, seed):
            raise HeadstartError(
                f"dataset {name!r} was split {previous['split']} with seed {previous['seed']}; "
                f"received {text} seed {seed}. Splits are recorded once: omit --split/--seed, or pass --resplit")
        existing = {sha: sp for _, sha, _, sp in catalog.members(name)}
    units: dict[str, str | None] = {}
    for item in listing.items:
        units.setdefault(item.sha256, item.label)
    given = _given_splits(listing)
    splits = {**assign_splits({s: lab for s, lab in units.items() if s not in given}, existing, fractions, seed),
              **given}
    members = [(i.rel, i.sha256, i.label, splits[i.sha256], i.source) for i in listing.items]
    info = {"name": name, "root": str(listing.root), "kind": listing.kind, "split": FOLDERS if by_folders else text,
            "seed": seed}
    catalog.save_dataset(info, members, sources)
    return members
