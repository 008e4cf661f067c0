"""Datasets: class folders, a CSV of (path, label) or an unlabeled folder; SHA-256 keys; stratified splits."""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from extractor.catalog import Catalog
from extractor.errors import HeadstartError

SPLITS = ("train", "val", "test")
# Listing only: which files are candidates. Whether a file *is* an image is decided by its content.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ""}
PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "id", "image_id", "img")
LABEL_COLUMNS = ("label", "class", "breed", "category", "target", "y")
GUESS_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Item:
    """One dataset member before hashing: path relative to the root, and its label."""

    rel: str
    label: str | None
    sha256: str | None = None


@dataclass
class Listing:
    """What a data folder holds, and what could not be taken (path, reason)."""

    root: Path
    kind: str
    items: list[Item]
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


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


def image_files(folder: Path) -> tuple[list[Path], int]:
    """Image files below `folder` (by suffix; hidden entries skipped), sorted; and how many other files."""
    found, skipped = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / name)
            else:
                skipped += 1
    return found, skipped


def scan_folder(root: Path, unlabeled: bool = False) -> Listing:
    """Class subfolders -> labeled items; images directly in root (or `unlabeled`) -> unlabeled items."""
    root = _existing_dir(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if unlabeled or not classes:
        files, skipped = image_files(root)
        return Listing(root, "unlabeled", [Item(f.relative_to(root).as_posix(), None) for f in files],
                       skipped=skipped)
    items, skipped = [], 0
    for folder in classes:
        files, n_skip = image_files(folder)
        skipped += n_skip
        items += [Item(f.relative_to(root).as_posix(), folder.name) for f in files]
    top_level = sum(1 for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    return Listing(root, "folders", items, skipped=skipped + top_level)


def _existing_dir(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HeadstartError(f"data folder {root} does not exist or is not a folder; give a folder of images")
    return root.resolve()


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, csv_path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise HeadstartError(f"{csv_path}: no column {wanted!r}; columns are {', '.join(columns)}")
        return wanted
    lowered = {c.lower().strip(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if len(columns) == 2:
        return columns[0] if what == "path" else columns[1]
    raise HeadstartError(
        f"{csv_path}: cannot tell the {what} column among {', '.join(columns)}; "
        f"pass --{what}-column NAME")


def _locate(root: Path, value: str) -> Path | None:
    candidate = (root / value).resolve()
    if candidate.is_file():
        return candidate
    if not Path(value).suffix:
        for suffix in GUESS_SUFFIXES:
            guess = (root / (value + suffix)).resolve()
            if guess.is_file():
                return guess
    return None


def scan_csv(root: Path, csv_path: Path, path_column: str | None = None,
             label_column: str | None = None) -> Listing:
    """A CSV of (path or id, label): `id` values map to `<id>.jpg` (or another image suffix) in root."""
    root = _existing_dir(root)
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise HeadstartError(f"labels file {csv_path} does not exist; give a CSV with path and label columns")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise HeadstartError(f"{csv_path} is empty; expected a header row with path and label columns")
        path_col = _pick(columns, path_column, PATH_COLUMNS, "path", csv_path)
        label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", csv_path)
        rows = [(r.get(path_col) or "", r.get(label_col) or "") for r in reader]
    items, failures, seen = [], [], {}
    for value, label in rows:
        value, label = value.strip(), label.strip()
        found = _locate(root, value) if value else None
        if found is None:
            failures.append((value or "(empty)", "listed in the CSV but no such file in the data folder"))
        elif not found.is_relative_to(root):
            failures.append((value, "path leaves the data folder"))
        elif not label:
            failures.append((value, "empty label in the CSV"))
        elif (rel := found.relative_to(root).as_posix()) not in seen:
            seen[rel] = label
            items.append(Item(rel, label))
        elif seen[rel] != label:
            failures.append((value, f"listed again in the CSV with label {label!r}; the first label "
                                    f"{seen[rel]!r} is used: fix the CSV"))
    return Listing(root, "csv", items, failures)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_items(listing: Listing, catalog: Catalog, threads: int = 4, confine: bool = False,
               progress: Callable[[int, int], None] | None = None) -> None:
    """Set each item's sha256, reusing hashes of files whose size and mtime did not change.

    With `confine`, files whose real path (symlinks followed) leaves the root are failures, never read.
    `progress(hashed, to_hash)` is called as files are read (at most ~10 times a second, and at the end).
    """
    cache = catalog.cached_hashes(str(listing.root))
    todo: list[tuple[Item, Path, int, int]] = []
    fresh, keep = [], []
    for item in listing.items:
        path = listing.root / item.rel
        if confine and not path.resolve().is_relative_to(listing.root):
            listing.failures.append((item.rel, "path leaves the data folder (symlink); not read"))
            continue
        try:
            st = path.stat()
        except OSError as exc:
            listing.failures.append((item.rel, f"cannot read file: {exc.strerror or exc}"))
            continue
        hit = cache.get(str(path))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            item.sha256 = hit[2]
            keep.append(item)
        else:
            todo.append((item, path, st.st_size, st.st_mtime_ns))

    def work(entry: tuple[Item, Path, int, int]) -> tuple[Item, Path, int, int, str | None, str]:
        try:
            return (*entry, _sha256_file(entry[1]), "")
        except OSError as exc:
            return (*entry, None, f"cannot read file: {exc.strerror or exc}")

    last = 0.0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, (item, path, size, mtime, sha, error) in enumerate(pool.map(work, todo), 1):
            if progress and (done == len(todo) or time.monotonic() - last > 0.1):
                last = time.monotonic()
                progress(done, len(todo))
            if sha is None:
                listing.failures.append((item.rel, error))
                continue
            item.sha256 = sha
            keep.append(item)
            fresh.append((str(path), size, mtime, sha))
    if fresh:
        catalog.remember_hashes(fresh)
    listing.items = sorted(keep, key=lambda i: i.rel)


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


def _split_text(fractions: tuple[float, float, float]) -> str:
    return ",".join(f"{f:.6g}" for f in fractions)


def register(catalog: Catalog, name: str, listing: Listing, split: str | None = None,
             seed: int | None = None, resplit: bool = False) -> list[tuple[str, str, str | None, str]]:
    """Record the dataset's current members; splits are decided once and kept for known images."""
    previous = catalog.dataset(name)
    fractions = parse_split(split or (previous["split"] if previous else DEFAULT_SPLIT))
    seed = seed if seed is not None else (previous["seed"] if previous else DEFAULT_SEED)
    text = _split_text(fractions)
    existing: dict[str, str] = {}
    if previous and not resplit:
        if (previous["split"], previous["seed"]) != (text, seed):
            raise HeadstartError(
                f"dataset {name!r} was split {previous['split']} with seed {previous['seed']}; "
                f"received {text} seed {seed}. Splits are recorded once: omit --split/--seed, or pass --resplit")
        existing = {sha: sp for _, sha, _, sp in catalog.members(name)}
    units: dict[str, str | None] = {}
    for item in listing.items:
        units.setdefault(item.sha256, item.label)
    splits = assign_splits(units, existing, fractions, seed)
    members = [(i.rel, i.sha256, i.label, splits[i.sha256]) for i in listing.items]
    info = {"name": name, "root": str(listing.root), "kind": listing.kind, "split": text, "seed": seed}
    catalog.save_dataset(info, members)
    return members
