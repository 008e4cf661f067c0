"""How a data folder is laid out: class subfolders, images directly in it (unlabeled, or labeled by their names:
cat.12.jpg), or splits of class subfolders (data/train/cat, data/validation/cat)."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import replace
from pathlib import Path

from extractor.datasets import SYSTEM_FOLDERS, Item, Listing, existing_dir, image_files, label_of

# top-level folder names that mean a split, as tutorials and public datasets lay them out (data/train/cat,
# data/validation/cat): such a folder is a split of class folders, never a class
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
# a split's name, then optionally what Kaggle and others add to it: train_images, test-set, test1, Validation Data
SPLIT_NAME = re.compile(r"([a-z]+)(?:[ _-]?(?:set|images|imgs|data|\d{1,2}))?")


def split_of(name: str) -> str | None:
    """The split a folder's name says (train, val, test), or None: data/train, data/Validation, test1, train_images."""
    m = SPLIT_NAME.fullmatch(name.lower())
    return SPLIT_FOLDERS.get(m.group(1)) if m else None


def scan_folder(root: Path, unlabeled: bool = False, names: bool = False) -> Listing:
    """Class subfolders -> labeled items; images directly in root (or `unlabeled`) -> unlabeled items; `names`:
    every image below root, labeled by its file name (label_in_name)."""
    root = existing_dir(root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    classes = [p for p in folders if p.name not in SYSTEM_FOLDERS]
    system: list[Path] = []
    unread: Counter = Counter()
    if names:
        files, skipped = image_files(root, system, unread)
        listing = _named(root, files, skipped, classes)
    elif unlabeled or not classes:  # the walk from the root meets the system folders, at every depth
        files, skipped = image_files(root, system, unread)
        listing = Listing(root, "unlabeled", [Item.at(root, f, None) for f in files], skipped=skipped)
        listing.notes += [] if unlabeled else _names_look_labeled(root, files)
    elif _split_folders(classes):
        listing = _scan_split_folders(root, classes, system, unread)
        listing.top_level += sum(p.is_file() for p in entries)
    else:
        system += [p for p in folders if p.name in SYSTEM_FOLDERS]
        items, skipped = [], Counter()
        for folder in classes:
            files, n_skip = image_files(folder, system, unread)
            skipped += n_skip
            items += [Item.at(root, f, label_of(folder.name)) for f in files]
        listing = Listing(root, "folders", items, skipped=skipped, top_level=sum(p.is_file() for p in entries))
        listing.notes += _sibling_splits(root) + _one_level_down(classes, items)
        if named := [p for p in classes if split_of(p.name)]:
            listing.notes.append(
                f"the folders {', '.join(p.name for p in named)} are named like splits but were read as classes: split "
                f"folders are taken as such when all the top-level folders are splits (one of them train) holding one "
                f"folder per class (data/train/cats/1.jpg)" + (_flat_train(named) if named == classes else ""))
    listing.system_folders = sorted(str(p.relative_to(root)) for p in system)
    listing.unsupported = dict(unread)
    return listing


# a number at the end of a file name's stem, with the separators before it: `.123` of cat.123.jpg (Kaggle's dogs vs
# cats), `_10` of american_bulldog_10.jpg (Oxford-IIIT Pets), ` (2)` of `dog (2).png`
TRAILING_NUMBER = re.compile(r"[._ -]*\(?\d+\)?$")
CAMERA_NAMES = frozenset({"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "dji", "gopr", "sam", "wp", "vid", "pano",
                          "photo", "image", "screenshot", "scan", "p"})


def label_in_name(name: str) -> str | None:
    """The label a file name holds before the number that ends its stem: cat of cat.12.jpg, american_bulldog of
    american_bulldog_10.jpg, dog of `dog (2).png`; None for a name that does not end in a number or has nothing
    before it."""
    stem = Path(name).stem
    label = TRAILING_NUMBER.sub("", stem, count=1)
    return label if label and label != stem else None


def _named(root: Path, files: list[Path], skipped: Counter, folders: list[Path]) -> Listing:
    """Every image labeled by its file name (--name-labels); a name without a label is a failure. Top-level
    folders that all name splits, not train alone (train/cat.1.jpg beside validation/cat.7.jpg), give the splits."""
    splits = {p.name: split_of(p.name) for p in folders}
    if not (splits and all(splits.values()) and set(splits.values()) != {"train"}):
        splits = {}
    items, failures = [], []
    for f in files:
        item = Item.at(root, f, None)
        top, _, below = item.rel.partition("/")
        item.split = splits.get(top) if below else None
        if (label := label_in_name(f.name)) is None:
            failures.append((item.rel, "no label in the file name: --name-labels reads names made of a label and a "
                                       "number, as cat.12.jpg or american_bulldog_10.jpg; rename the file, or move it "
                                       "out of the folder"))
        else:
            item.label = label_of(label)
            items.append(item)
    return Listing(root, "names", items, failures, skipped=skipped, split_folders=splits)


def _names_look_labeled(root: Path, files: list[Path]) -> list[str]:
    """A folder without class subfolders whose file names are a few words, each on several files, and a number
    (cat.1.jpg, dog.1.jpg): most likely labels, which --name-labels takes. Camera prefixes (IMG_, DSC_, PXL_) and
    dates are not labels."""
    starts = Counter(label for f in files if (label := label_in_name(f.name)) and label[0].isalpha())
    if not (2 <= len(starts) <= 50 and sum(starts.values()) >= 0.9 * len(files) and min(starts.values()) >= 2) or \
            {re.split(r"[._ -]", s)[0].lower() for s in starts} & CAMERA_NAMES:
        return []
    shown = ", ".join(f"{s} {n}" for s, n in starts.most_common(4)) + (" ..." if len(starts) > 4 else "")
    return [f"{root} has no class subfolders, so its images were read without labels, but their names start with what "
            f"look like labels ({len(starts)}: {shown}): to take those as the labels, extract with --name-labels (the "
            f"API's name_labels; on the page, labels: file names), and --redefine if the dataset was extracted "
            f"already"]


def _one_level_down(classes: list[Path], items: list) -> list[str]:
    """All the images in one class folder whose own folders hold them (pets/pets/cat/1.jpg, as an archive unpacks
    into a folder of its name; food-101/images/pizza/1.jpg): those folders are most likely the classes."""
    if len({item.label for item in items}) != 1:
        return []
    inner = sorted({item.rel.split("/")[1] for item in items if item.rel.count("/") >= 2})
    splits = all(split_of(name) for name in inner)  # cats_and_dogs_filtered/train/cats, as the zip unpacks
    if len(inner) < 2 and not (inner and splits):
        return []
    folder = next(p for p in classes if label_of(p.name) == items[0].label)
    listed = ", ".join(inner[:4]) + (" ..." if len(inner) > 4 else "")
    return [f"all the images are inside {folder.name}/, one class, and the folders in it ({listed}) look like "
            f"{'splits of class folders' if splits else 'the classes'}: to read those, extract {folder} instead "
            f"(with --redefine when the dataset was extracted already)"]


def _flat_train(named: list[Path]) -> str:
    """Split folders whose train folder holds images, not class folders (Kaggle's train/cat.0.jpg beside test1/)."""
    train = next((p for p in named if split_of(p.name) == "train" and not _subfolders(p)), None)
    return "" if train is None else (f"; {train.name}/ holds images, not class folders: extract {train} alone (with "
                                     f"--name-labels when the file names hold the labels, as cat.12.jpg)")


def _sibling_splits(root: Path) -> list[str]:
    """data/train given while data/validation (or test) holds class folders beside it: its splits go unused."""
    if split_of(root.name) != "train":
        return []
    siblings = [p.name for p in _subfolders(root.parent) if p != root and split_of(p.name) in
                ("val", "test") and _subfolders(p)]
    return [f"{root} is a train folder, and {', '.join(siblings)} beside it {'hold' if len(siblings) > 1 else 'holds'} "
            f"class folders too: this dataset splits the train images alone; to use those folders' splits, extract "
            f"{root.parent} instead"] if siblings else []


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_folders(folders: list[Path]) -> bool:
    """Whether the top-level folders are splits of class folders: every one named like a split, a train folder
    holding folders (others may hold images alone: data/test of unlabeled images, left out)."""
    return all(split_of(p.name) for p in folders) and \
        any(split_of(p.name) == "train" and _subfolders(p) for p in folders)


def _scan_split_folders(root: Path, splits: list[Path], system: list[Path], unread: Counter) -> Listing:
    """data/<split>/<class>/... -> items labeled by their class folder, in the split their top folder names; a
    train folder alone (data/train/<class>) only holds the classes, and its images are split as any. A split folder
    of images without class folders (data/test/1.jpg: unlabeled) is left out, and said."""
    items, skipped, loose = [], Counter(), 0
    flat = [p for p in splits if not _subfolders(p)]
    splits = [p for p in splits if p not in flat]
    given = {split_of(p.name) for p in splits} != {"train"}
    for split in splits:
        inside = _subfolders(split)
        system += [p for p in inside if p.name in SYSTEM_FOLDERS]
        loose += sum(p.is_file() and not p.name.startswith(".") for p in split.iterdir())
        for folder in (p for p in inside if p.name not in SYSTEM_FOLDERS):
            files, n_skip = image_files(folder, system, unread)
            skipped += n_skip
            items += [replace(Item.at(root, f, label_of(folder.name)),
                              split=split_of(split.name) if given else None) for f in files]
    listing = Listing(root, "folders", items, skipped=skipped, split_folders={
        p.name: split_of(p.name) for p in splits})
    listing.top_level = loose
    for folder in flat:
        n = len(image_files(folder)[0])
        listing.notes.append(
            f"{folder.name}/ holds {n} images without class folders: they were left out of this labeled dataset; to "
            f"score them, predict on that folder (headstart predict HEAD {shlex.quote(str(folder))}), or extract it "
            f"as a dataset of its own (--unlabeled)")
    return listing
