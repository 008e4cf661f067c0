"""How a data folder is laid out: class subfolders, images directly in it (unlabeled; names that look like labels
are pointed out), or splits of class subfolders (data/train/cat, data/validation/cat)."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import replace
from pathlib import Path

from extractor.datasets import SYSTEM_FOLDERS, Item, Listing, existing_dir, image_files, shown

# top-level folder names that mean a split, as tutorials and public datasets lay them out (data/train/cat,
# data/validation/cat): such a folder is a split of class folders, never a class
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


def scan_folder(root: Path, unlabeled: bool = False) -> Listing:
    """Class subfolders -> labeled items; images directly in root (or `unlabeled`) -> unlabeled items."""
    root = existing_dir(root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    classes = [p for p in folders if p.name not in SYSTEM_FOLDERS]
    system: list[Path] = []
    unread: Counter = Counter()
    if unlabeled or not classes:  # the walk from the root meets the system folders, at every depth
        files, skipped = image_files(root, system, unread)
        listing = Listing(root, "unlabeled", [Item.at(root, f, None) for f in files], skipped=skipped)
        listing.notes += [] if unlabeled else _names_look_labeled(root, files)
    elif _split_folders(classes):
        listing = _scan_split_folders(root, classes, system, unread)
        listing.top_level += sum(p.is_file() for p in entries)
    else:
        system += [p for p in folders if p.name in SYSTEM_FOLDERS]
        items, skipped = [], 0
        for folder in classes:
            files, n_skip = image_files(folder, system, unread)
            skipped += n_skip
            items += [Item.at(root, f, shown(folder.name)) for f in files]
        listing = Listing(root, "folders", items, skipped=skipped, top_level=sum(p.is_file() for p in entries))
        listing.notes += _sibling_splits(root)
        if named := [p.name for p in classes if p.name.lower() in SPLIT_FOLDERS]:
            listing.notes.append(
                f"the folders {', '.join(named)} are named like splits but were read as classes: split folders are "
                f"taken as such when all the top-level folders are splits (one of them train) holding one folder per "
                f"class (data/train/cats/1.jpg)")
    listing.system_folders = sorted(str(p.relative_to(root)) for p in system)
    listing.unsupported = dict(unread)
    return listing


# the start of a file name up to its first separator: `cat` of cat.123.jpg (Kaggle's dogs vs cats) or dog_01.png
NAME_LABEL = re.compile(r"([A-Za-z]+)[._ -]")
CAMERA_NAMES = frozenset({"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "dji", "gopr", "sam", "wp", "vid", "pano",
                          "photo", "image", "screenshot", "scan", "p"})


def _names_look_labeled(root: Path, files: list[Path]) -> list[str]:
    """A folder without class subfolders whose file names start with a few words, each on several files (cat.1.jpg,
    dog.1.jpg): most likely labels, which headstart reads from subfolders or a CSV only. The note says how to make
    that CSV. Camera prefixes (IMG_, DSC_, PXL_) are not labels."""
    starts = Counter(m.group(1) for f in files if (m := NAME_LABEL.match(f.name)))
    if not (2 <= len(starts) <= 50 and sum(starts.values()) >= 0.9 * len(files) and min(starts.values()) >= 2) or \
            {s.lower() for s in starts} & CAMERA_NAMES:
        return []
    shown = ", ".join(f"{s} {n}" for s, n in starts.most_common(4)) + (" ..." if len(starts) > 4 else "")
    globs = " ".join(f"*{suffix}" for suffix in sorted({f.suffix for f in files}))
    where = shlex.quote(str(root))
    return [f"{root} has no class subfolders, so its images were read without labels, but their names start with what "
            f"look like labels ({shown}). A labels CSV of them: (echo path,label; cd {where} && for f in {globs}; do "
            f"echo \"$f,${{f%%[._ -]*}}\"; done) > labels.csv; then extract again with --labels labels.csv --redefine"]


def _sibling_splits(root: Path) -> list[str]:
    """data/train given while data/validation (or test) holds class folders beside it: its splits go unused."""
    if SPLIT_FOLDERS.get(root.name.lower()) != "train":
        return []
    siblings = [p.name for p in _subfolders(root.parent) if p != root and SPLIT_FOLDERS.get(p.name.lower()) in
                ("val", "test") and _subfolders(p)]
    return [f"{root} is a train folder, and {', '.join(siblings)} beside it {'hold' if len(siblings) > 1 else 'holds'} "
            f"class folders too: this dataset splits the train images alone; to use those folders' splits, extract "
            f"{root.parent} instead"] if siblings else []


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_folders(folders: list[Path]) -> bool:
    """Whether the top-level folders are splits of class folders: every one named like a split (one of them
    train), each holding folders."""
    names = [SPLIT_FOLDERS.get(p.name.lower()) for p in folders]
    return all(names) and "train" in names and all(_subfolders(p) for p in folders)


def _scan_split_folders(root: Path, splits: list[Path], system: list[Path], unread: Counter) -> Listing:
    """data/<split>/<class>/... -> items labeled by their class folder, in the split their top folder names; a
    train folder alone (data/train/<class>) only holds the classes, and its images are split as any."""
    items, skipped, loose = [], 0, 0
    given = {SPLIT_FOLDERS[p.name.lower()] for p in splits} != {"train"}
    for split in splits:
        inside = _subfolders(split)
        system += [p for p in inside if p.name in SYSTEM_FOLDERS]
        loose += sum(p.is_file() and not p.name.startswith(".") for p in split.iterdir())
        for folder in (p for p in inside if p.name not in SYSTEM_FOLDERS):
            files, n_skip = image_files(folder, system, unread)
            skipped += n_skip
            items += [replace(Item.at(root, f, shown(folder.name)),
                              split=SPLIT_FOLDERS[split.name.lower()] if given else None) for f in files]
    listing = Listing(root, "folders", items, skipped=skipped, split_folders={
        p.name: SPLIT_FOLDERS[p.name.lower()] for p in splits})
    listing.top_level = loose
    return listing
