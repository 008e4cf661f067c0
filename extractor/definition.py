"""What a dataset is made of (folders, a labels CSV), kept across reruns; changed only when asked (add, redefine)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extractor.catalog import Catalog
from extractor.datasets import (
    Item,
    Listing,
    ThreadMap,
    existing_dir,
    hash_items,
    unread_photos,
    unshown,
)
from extractor.errors import HeadstartError
from extractor.folders import scan_folder
from extractor.labelcsv import scan_csv


@dataclass(frozen=True)
class Wanted:
    """The source one run names: a folder and, optionally, how its labels are given."""

    data_dir: Path
    labels_csv: Path | None = None
    path_column: str | None = None
    label_column: str | None = None
    unlabeled: bool = False
    redefine: bool = False
    add: bool = False
    name_labels: bool = False  # labels from the file names (cat.12.jpg)

    @property
    def explicit(self) -> bool:
        """Whether the run says how labels are given (else a rerun reuses what was recorded)."""
        return bool(self.labels_csv or self.unlabeled or self.name_labels or self.path_column or self.label_column)

    def source(self, root: Path, prefix: str = "") -> dict:
        kind = "csv" if self.labels_csv else (
            "unlabeled" if self.unlabeled else "names" if self.name_labels else "auto")
        csv = str(Path(self.labels_csv).expanduser().resolve()) if self.labels_csv else None
        return {"root": str(root), "kind": kind, "labels_csv": csv, "path_column": self.path_column,
                "label_column": self.label_column, "prefix": prefix}


def describe(source: dict) -> str:
    """One source in words, for messages."""
    if source["kind"] == "csv":
        return f"{source['root']} with labels from {source['labels_csv'] or 'a CSV (path not recorded)'}"
    if source["kind"] == "unlabeled":
        return f"{source['root']} (unlabeled)"
    if source["kind"] == "names":
        return f"{source['root']} (labels from the file names)"
    return f"{source['root']} (class subfolders)"


def _same_labels(recorded: dict, asked: dict) -> bool:
    if asked["kind"] != recorded["kind"] and not (asked["kind"] == "auto" and recorded["kind"] == "folders"):
        return False
    return all(asked[k] is None or asked[k] == recorded[k] for k in ("labels_csv", "path_column", "label_column"))


def _prefix(root: Path, taken: set[str]) -> str:
    """A display prefix for an added folder's paths: its name, made unique among the dataset's sources."""
    base, n = root.name or "source", 1
    name = base
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def decide(name: str, recorded: list[dict], wanted: Wanted) -> list[dict]:
    """The sources this run lists: the recorded ones, unless `wanted` adds one or redefines the dataset."""
    if wanted.add and wanted.redefine:
        raise HeadstartError("--add and --redefine together: expected one of them (add a folder, or replace all)")
    if wanted.path_column and not wanted.labels_csv or wanted.label_column and not wanted.labels_csv:
        raise HeadstartError("--path-column/--label-column name columns of a labels CSV: pass --labels CSV too")
    if sum(map(bool, (wanted.labels_csv, wanted.unlabeled, wanted.name_labels))) > 1:
        raise HeadstartError("--labels, --unlabeled and --name-labels each say where labels come from: expected one "
                             "of them, not several")
    root = existing_dir(wanted.data_dir)
    if not recorded or wanted.redefine:
        if wanted.add:
            raise HeadstartError(f"dataset {name!r} does not exist yet, so there is nothing to add to; drop --add")
        return [wanted.source(root)]
    match = next((s for s in recorded if s["root"] == str(root)), None)
    if match is not None:
        if match["kind"] == "csv" and match["labels_csv"] is None and wanted.labels_csv:  # recorded before v3
            match["labels_csv"] = wanted.source(root)["labels_csv"]
        if wanted.add:
            raise HeadstartError(f"{root} is already a source of dataset {name!r}; rerun without --add")
        if wanted.explicit and not _same_labels(match, wanted.source(root)):
            raise HeadstartError(
                f"dataset {name!r} reads {describe(match)}; this run asks for {describe(wanted.source(root))}. "
                f"Reruns keep what a dataset is: drop the label options to reuse it, pass --redefine to replace "
                f"it, or choose another --dataset name")
        return recorded
    if wanted.add:
        return [*recorded, wanted.source(root, _prefix(root, {s["prefix"] for s in recorded}))]
    gone = [s for s in recorded if not Path(s["root"]).is_dir()]
    if len(gone) == len(recorded) == 1:
        raise HeadstartError(
            f"dataset {name!r} is made of {describe(gone[0])}, which is no longer there; if it moved to {root}, pass "
            f"--redefine (the cached vectors are kept: they are found by content), or choose another --dataset name")
    known = "; ".join(describe(s) for s in recorded)
    raise HeadstartError(
        f"dataset {name!r} is made of {known}; this run names {root}. Pass --add to add this folder's images to "
        f"{name!r}, --redefine to make {name!r} this folder only, or choose another --dataset name")


def _list_one(source: dict, should_stop: Callable[[], bool] | None) -> Listing:
    root = Path(source["root"])
    if source["kind"] == "csv":
        if not source["labels_csv"]:
            raise HeadstartError(f"the labels CSV of {root} was not recorded (an earlier headstart); pass --labels "
                                 f"CSV once to record it")
        return scan_csv(root, Path(source["labels_csv"]), source["path_column"], source["label_column"],
                        should_stop)
    return scan_folder(root, unlabeled=source["kind"] == "unlabeled", names=source["kind"] == "names")


def collect(catalog: Catalog, name: str, wanted: Wanted, confine: bool = False,
            progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            mapper: ThreadMap | None = None) -> tuple[Listing, list[dict]]:
    """Decide the sources, list and hash each, merge them: (listing, sources as they will be recorded). `mapper`
    runs the hashing (extractor.datasets.hash_items)."""
    listings, sources = _listed(catalog, name, wanted, should_stop)
    total, done = sum(len(listing.items) for listing in listings), 0
    for listing in listings:
        def hashed(n: int, _: int, offset: int = done) -> None:
            if progress:
                progress(offset + n, total)

        before = len(listing.items)
        hash_items(listing, catalog, confine=confine, progress=hashed, should_stop=should_stop, mapper=mapper)
        done += before
    return merge(listings, sources), sources


def preview(catalog: Catalog, name: str, wanted: Wanted) -> tuple[Listing, list[dict]]:
    """The listing a run would read, without reading any file's bytes (extract --dry-run), and its sources: decided
    as a run decides them (its refusals too), each listed, merged. No content hashes yet, so copies of one image
    are not known."""
    listings, sources = _listed(catalog, name, wanted, None)
    return merge(listings, sources, by_content=False), sources


def _listed(catalog: Catalog, name: str, wanted: Wanted,
            should_stop: Callable[[], bool] | None) -> tuple[list[Listing], list[dict]]:
    """The sources this run reads, each listed (its kind and CSV columns recorded as read); one line when none
    holds an image."""
    sources = decide(name, catalog.sources(name), wanted)
    listings = []
    for source in sources:
        listing = _list_one(source, should_stop)
        source.update(kind=listing.kind, **({"path_column": listing.columns[0], "label_column": listing.columns[1]}
                                            if listing.kind == "csv" else {}))
        listings.append(listing)
    if not any(listing.items or listing.failures for listing in listings):
        unread = sum((Counter(listing.unsupported) for listing in listings), Counter())
        also = f"; it holds {unread_photos(unread)}" if unread else ""
        raise HeadstartError(f"no images found in {wanted.data_dir}; expected class subfolders of images, images "
                             f"directly in the folder, or a labels CSV{also}")
    return listings, sources


def merge(listings: list[Listing], sources: list[dict], by_content: bool = True) -> Listing:
    """One listing of all sources: added sources' paths get their prefix; label conflicts (by content: not
    without `by_content`, before hashing) become failures."""
    items: list[Item] = []
    failures: list[tuple[str, str]] = []
    for index, (listing, source) in enumerate(zip(listings, sources, strict=True)):
        def shown(rel: str, p: str = source["prefix"]) -> str:
            return f"{p}/{rel}" if p else rel

        for item in listing.items:
            item.rel, item.source = shown(item.rel), index
            items.append(item)
        failures += [(shown(path), reason) for path, reason in listing.failures]
    kinds = {listing.kind for listing in listings}
    merged = Listing(listings[0].root, kinds.pop() if len(kinds) == 1 else "mixed", [], failures,
                     skipped=sum((x.skipped for x in listings), Counter()),
                     top_level=sum(x.top_level for x in listings),
                     system_folders=[f"{source['prefix']}/{f}" if source["prefix"] else f
                                     for listing, source in zip(listings, sources, strict=True)
                                     for f in listing.system_folders],
                     unsupported=dict(sum((Counter(x.unsupported) for x in listings), Counter())),
                     notes=[note for x in listings for note in x.notes],
                     split_folders={name: split for x in listings for name, split in x.split_folders.items()})
    items.sort(key=lambda i: i.rel)
    merged.items = _drop_conflicts(items, merged.failures) if by_content else items
    return merged


def _drop_conflicts(items: list[Item], failures: list[tuple[str, str]]) -> list[Item]:
    """The same bytes under two labels: the first (by path) keeps its label, later copies become failures."""
    first: dict[str, Item] = {}
    kept = []
    for item in items:
        seen = first.setdefault(item.sha256, item)
        if seen is not item and item.label is not None and seen.label is not None and seen.label != item.label:
            failures.append((item.rel, f"same image content as {seen.rel}, which is labeled {seen.label!r}; this "
                                       f"copy's label {item.label!r} is not used: remove one of the copies"))
            continue
        kept.append(item)
    return kept


def member_files(catalog: Catalog, dataset: str) -> dict[str, Path]:
    """One file per content hash of a dataset's members, from its recorded sources (for work after extract:
    views, test-time views, fine-tuning); the files are checked against their hash when read."""
    sources = catalog.sources(dataset)
    out: dict[str, Path] = {}
    for path, sha, source in catalog.member_sources(dataset):
        out.setdefault(sha, member_path(sources[source], path))
    return out


def member_path(source: dict, path: str) -> Path:
    """The file of a member recorded as `path` (its display path, with the source's prefix) in `source`."""
    prefix = source["prefix"]
    rel = path[len(prefix) + 1:] if prefix and path.startswith(prefix + "/") else path
    file = Path(source["root"]) / rel
    if "\\x" in rel and not file.exists():  # a name that is not UTF-8, recorded as `shown` gave it
        file = Path(source["root"]) / unshown(rel)
    return file
