"""What an extraction reports: progress events while it runs, and its summary with warnings when it ends."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extractor.datasets import Listing
    from extractor.pipeline import ExtractOptions
    from extractor.store import FeatureStore


@dataclass
class Progress:
    """One progress event: images done of total in this run, failures, rate and ETA.

    `phase` is "hashing" while new files are read to find their content keys (then done/total count
    files), "extracting" while images go through the backbone, and "views" while augmented views do."""

    done: int
    total: int
    failed: int
    elapsed: float
    phase: str = "extracting"

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass
class ExtractSummary:
    """What one extraction did; `to_dict()` is the CLI's --json line and the job result."""

    dataset: str
    backbone: str
    fingerprint: str
    files: int
    extracted: int
    cached: int
    failed: int
    duplicates: int
    skipped: int
    seconds: float
    device: str
    stopped: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said on the terminal, kept in --json
    repaired: int = 0  # cached vectors whose shard file was missing or damaged, computed again
    views: dict | None = None  # with --augment: what the views run did (extractor.views.ViewsSummary)

    @property
    def images_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["images_per_second"] = round(self.images_per_second, 2)
        out["seconds"] = round(self.seconds, 3)
        out["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return out


def warnings(opts: ExtractOptions, store: FeatureStore, listing: Listing, members: list,
             summary: ExtractSummary) -> list[str]:
    """What the user should know although nothing failed: skipped files, one class, a no-op option, repairs, splits
    taken from the folders."""
    out = []
    if summary.repaired:
        out.append(f"{summary.repaired} cached vectors were in shard files that are missing or damaged; they were "
                   f"dropped from the catalog and computed again")
    out += listing_warnings(listing, opts.dataset, opts.split, Counter(m[2] for m in members if m[2] is not None))
    if summary.extracted == 0 and not summary.stopped:
        stored = {s["dtype"] for s in store.catalog.shards(summary.fingerprint, opts.dataset)}
        if stored and opts.dtype not in stored:
            out.append(f"the cached vectors are stored as {', '.join(sorted(stored))}; --dtype {opts.dtype} applies "
                       f"only to vectors computed from now on, so nothing changed (export --dtype converts a copy)")
    return out


def listing_warnings(listing: Listing, dataset: str, split: str | None, labels: Counter) -> list[str]:
    """What the user should know of how the folder (or CSV) was read: its notes, split folders, files not read,
    one class, labels that differ only in case, name single images or join others (also what `extract --dry-run`
    shows); `labels`: images by label."""
    from extractor.datasets import skipped_files, unread_photos

    out = list(listing.notes)
    if listing.split_folders:
        out.append(_split_folders_note(listing.split_folders, split, listing.kind == "names"))
    if listing.top_level:
        out.append(f"{listing.top_level} files at the top level of {listing.root} were not read: a dataset of class "
                   f"subfolders reads the images inside the subfolders (use --unlabeled to read every image)")
    if listing.skipped:
        out.append(skipped_files(listing.skipped))
    if listing.unsupported:
        out.append(unread_photos(listing.unsupported, "were skipped"))
    if folders := listing.system_folders:
        shown = ", ".join(folders[:5]) + (" ..." if len(folders) > 5 else "")
        were = "s were" if len(folders) > 1 else " was"
        out.append(f"{len(folders)} system folder{were} not read ({shown}): NAS thumbnails, archive metadata and "
                   f"recycle bins hold no images of the dataset")
    out += _near_labels(labels) + _single_image_labels(labels) + _joined_labels(labels)
    if len(labels) == 1:
        out.append(f"dataset {dataset!r} has one class ({next(iter(labels))!r}); training a head needs at least two")
    return out


def _near_labels(labels: Counter) -> list[str]:
    """Labels that differ only in case or spacing (`Cat` and `cat`, `golden retriever` and `golden_retriever`, as
    hand-made CSVs and folders merged from two sources have them): two classes, most likely meant as one."""
    groups: dict[str, list[str]] = {}
    for label in sorted(labels):
        groups.setdefault(" ".join(label.casefold().replace("_", " ").replace("-", " ").split()), []).append(label)
    near = [" and ".join(repr(x) for x in group) for group in groups.values() if len(group) > 1]
    if not near:
        return []
    shown = "; ".join(near[:5]) + (" ..." if len(near) > 5 else "")
    return [f"labels that differ only in case or spacing are classes of their own: {shown}; if they are one class, "
            f"give them one spelling (rename the folders, or fix the CSV)"]


SINGLE_LABELS = 10  # this many labels or more, most of them naming one image each: values of images, not classes


def _single_image_labels(labels: Counter) -> list[str]:
    """A label column of per-image values (a measurement such as 3.142, an id) makes as many classes as images:
    nothing to learn a class from, and the split keeps a class's first image in train, so val and test stay empty."""
    single = sum(n == 1 for n in labels.values())
    if len(labels) < SINGLE_LABELS or single * 2 <= len(labels):
        return []
    shown = ", ".join(repr(x) for x in list(labels)[:3])
    return [f"{len(labels)} classes for {sum(labels.values())} labeled images, {single} of them with one image "
            f"({shown}, ...): the labels look like values of single images (measurements, ids), not classes; a head "
            f"learns a class from several images of it, and a class's first image stays in train, so val and test "
            f"hold few or none; give the label column a class per image (--label-column)"]


def _joined_labels(labels: Counter) -> list[str]:
    """`cat|dog` beside `cat` and `dog`: a multi-label CSV's row, which is a class of its own here."""
    joined = [x for x in labels if len(parts := [p.strip() for p in re.split(r"[|;,]", x)]) > 1
              and all(p in labels for p in parts)]
    if not joined:
        return []
    shown = ", ".join(repr(x) for x in sorted(joined)[:5]) + (" ..." if len(joined) > 5 else "")
    return [f"labels that join other labels are classes of their own: {shown}; a head gives each image one class "
            f"(single-label), so an image of both belongs to one of them or to a dataset of its own"]


def _split_folders_note(folders: dict[str, str], asked: str | None, names: bool = False) -> str:
    """data/train/cat, data/validation/cat: the folders name the splits (and the classes are inside them)."""
    named = ", ".join(f"{name}/ ({split})" for name, split in sorted(folders.items()))
    if set(folders.values()) == {"train"}:
        return f"the classes are the folders inside {', '.join(f'{n}/' for n in sorted(folders))}, and its images " \
               f"are split train/val/test as any (--split)"
    classes = "file names" if names else "folders inside them"
    text = f"the top-level folders name the splits, {named}, and the {classes} the classes"
    if asked:
        text += f"; --split {asked} does not apply"
    missing = [s for s in ("val", "test") if s not in folders.values()]
    if missing:
        are = "splits are" if len(missing) > 1 else "split is"
        text += f"; with no {' and no '.join(missing)} folder the {' and '.join(missing)} {are} empty"
        text += {("test",): ": heads report val figures (evaluate --split val)",
                 ("val",): ": heads train without a validation set (the mlp without early stopping)",
                 ("val", "test"): ": heads are fitted on train alone and have no held-out figures"}[tuple(missing)]
    return text
