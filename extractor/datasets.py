"""Datasets: class folders, a CSV of (path, label) or an unlabeled folder; SHA-256 keys; stratified splits."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from extractor.catalog import Catalog
from extractor.errors import HeadstartError, Stopped
from extractor.formats import ARCHIVE_PROBE, CONVERT, PHONE_FORMATS, archive

# Listing only: which files are candidates. Whether a file *is* an image is decided by its content.
# phones' formats, read where their decoder is (extractor.formats.PHONE_FORMATS: HEIF always, AVIF with libavif)
PHONE_SUFFIXES = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", "",
                  ".ppm", ".pgm", ".pbm", ".pnm", ".dcm", ".dicom", ".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx",
                  *(s for s, fmt in PHONE_SUFFIXES.items() if fmt in PHONE_FORMATS)}
# photos in formats not read (JPEG XL, cameras' RAW, layered files): counted apart from other files, so that the
# user hears they are photos to convert, not stray files
UNREAD_PHOTO_SUFFIXES = {".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".psd",
                         *(s for s, fmt in PHONE_SUFFIXES.items() if fmt not in PHONE_FORMATS)}


@dataclass
class Item:
    """One dataset member before hashing: its path as shown (relative to its source), label and file."""

    rel: str
    label: str | None
    sha256: str | None = None
    file: Path | None = None  # the absolute path to read
    source: int = 0  # index of the dataset source (folder or CSV) it comes from
    stat: tuple[int, int] | None = None  # (size, mtime_ns) when its hash was taken or checked
    split: str | None = None  # the split its folder names (data/train/cat/1.jpg), when the folders are split already

    @classmethod
    def at(cls, root: Path, path: Path, label: str | None) -> "Item":
        """The item of `path` below `root` (by string: relative_to took a third of listing 100,000 files)."""
        top, name = str(root).rstrip(os.sep) + os.sep, str(path)
        rel = name[len(top):] if name.startswith(top) else path.relative_to(root).as_posix()
        return cls(shown(rel.replace(os.sep, "/")), label, file=path)


def shown(text: str) -> str:
    """A file or folder name as text that can be stored and printed: the bytes of a name that are not UTF-8 (names
    from an old archive or a Windows share: b'caf\\xe9.jpg') become `\\xNN` (`caf\\xe9.jpg`); other names are
    unchanged. Python gives such bytes as lone surrogates, which SQLite, CSV and JSON writers refuse."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def composed(text: str) -> str:
    """`text` in Unicode's composed form (NFC). macOS writes names decomposed (é as e + a combining accent, Hangul
    as its jamo) and keeps them so when they are copied or zipped: a class folder from a Mac and one made elsewhere,
    or a CSV typed elsewhere naming a Mac's files, print alike but differ as strings."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def label_of(name: str) -> str:
    """A folder or file name as a label: shown, composed. Two folders that print alike give one label."""
    return composed(shown(name))


_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])")


def unshown(text: str) -> str:
    """The name `shown` gave as `text`, as the file system has it."""
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


@dataclass
class Listing:
    """What a data folder holds, and what could not be taken (path, reason)."""

    root: Path
    kind: str
    items: list[Item]
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # files whose suffix is not an image's, by suffix
    top_level: int = 0  # files directly in the root of a class-folder dataset (not read)
    system_folders: list[str] = field(default_factory=list)  # SYSTEM_FOLDERS found and not read, relative to root
    unsupported: dict[str, int] = field(default_factory=dict)  # photos in formats not read, by suffix
    columns: tuple[str | None, str | None] = (None, None)  # the CSV's path and label columns
    notes: list[str] = field(default_factory=list)  # how the input was read, when the user should know (warnings)
    split_folders: dict[str, str] = field(default_factory=dict)  # top-level folders naming splits -> the split


# folders that systems and tools add beside the photos: NAS thumbnails (Synology's @eaDir holds small copies of
# every photo), archive metadata, recycle bins. Never classes, never images of a dataset.
SYSTEM_FOLDERS = frozenset({"@eaDir", "__MACOSX", "$RECYCLE.BIN", "System Volume Information", "#recycle",
                            "#snapshot", "lost+found"})


def unread_photos(unsupported: dict[str, int], verb: str = "") -> str:
    """`3 photos in formats headstart does not read (.heic 2, .nef 1)[ VERB]: convert them ...`: one wording for the
    listing's warning, the empty-folder error and predict's folder check."""
    counts = ", ".join(f"{suffix} {n}" for suffix, n in sorted(unsupported.items()))
    said = f" {verb}" if verb else ""
    return f"{sum(unsupported.values())} photos in formats headstart does not read ({counts}){said}: " \
           f"convert them {CONVERT}"


def skipped_files(skipped: Counter) -> str:
    """`5 files without an image suffix (.jpg, .png, ...) were skipped (.svg 3, .txt 1, no suffix 1)`."""
    counts = ", ".join(f"{suffix or 'no suffix'} {n}" for suffix, n in skipped.most_common(5))
    total = sum(skipped.values())
    return f"{total} file{'s' * (total != 1)} without an image suffix (.jpg, .png, ...) " \
           f"{'was' if total == 1 else 'were'} skipped ({counts}{', ...' if len(skipped) > 5 else ''})"


def image_files(folder: Path, system: list[Path] | None = None,
                unread: Counter | None = None) -> tuple[list[Path], Counter]:
    """Image files below `folder` (by suffix; hidden entries and SYSTEM_FOLDERS skipped, the latter added to
    `system`), sorted; and the other files by suffix (photos in formats not read counted in `unread` instead)."""
    found, skipped = image_names(folder, system, unread)
    return [Path(f) for f in found], skipped


def image_names(folder: Path, system: list[Path] | None = None,
                unread: Counter | None = None) -> tuple[list[str], Counter]:
    """image_files as strings: Path(name).suffix and Path / name took nine tenths of listing 100,000 files, and
    Path(string) alone half."""
    found, skipped = [], Counter()
    for dirpath, dirnames, filenames in os.walk(folder):
        if system is not None:
            system += [Path(dirpath) / d for d in sorted(dirnames) if d in SYSTEM_FOLDERS]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SYSTEM_FOLDERS)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_SUFFIXES:
                found.append(os.path.join(dirpath, name))
            elif unread is not None and suffix in UNREAD_PHOTO_SUFFIXES:
                unread[suffix] += 1
            else:
                skipped[suffix] += 1
    return found, skipped


def existing_dir(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HeadstartError(f"data folder {root} {_not_a_folder(root)}")
    root = root.resolve()
    if shown(str(root)) != str(root):
        raise HeadstartError(f"data folder {shown(str(root))}: its path is not UTF-8 text (\\x.. marks the bytes); "
                             f"rename the folders named so (e.g. convmv -f cp1252 -t utf-8 --notest)")
    return root


def _not_a_folder(path: Path) -> str:
    """What a data folder that is not one is, and what to do (a dataset downloaded as an archive is given as it came;
    an image is given where its folder should be)."""
    try:
        with open(path, "rb") as fh:
            packed = archive(fh.read(ARCHIVE_PROBE))
    except OSError:
        return "does not exist or cannot be read; give a folder of images"
    if packed:
        return f"is {packed[0]}, not a folder: unpack it ({packed[1]} {path}) and give the folder it unpacks to"
    return "is a file, not a folder: give the folder of images it is in (predict takes single images)"


_BUFFERS = threading.local()


def _sha256_file(path: Path) -> str:
    """Read in 1 MB blocks into one buffer per thread, kept between files: fresh blocks cost page faults (in a new
    process, hashing 960 photos of ~175 KB took 0.23 ms per file with fresh blocks, 0.10 ms with a kept one)."""
    if not hasattr(_BUFFERS, "block"):
        _BUFFERS.block = bytearray(1 << 20)
    block, digest = _BUFFERS.block, hashlib.sha256()
    view = memoryview(block)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(block):
            digest.update(view[:n])
    return digest.hexdigest()


HASH_CHUNK = 16


def hash_paths(paths: list[str]) -> list[tuple[str | None, str]]:
    """(sha256, "") or (None, the reason) for each file: one chunk's work, in a thread here or in a Ray task."""
    out: list[tuple[str | None, str]] = []
    for path in paths:
        try:
            out.append((_sha256_file(Path(path)), ""))
        except OSError as exc:
            out.append((None, f"cannot read file: {exc.strerror or exc}"))
    return out


class ThreadMap:
    """Runs `fn` over chunks in a few threads, results in order; closing the iterator cancels what is queued.

    4 threads: measured on a 16-core host, 16 threads hashed 4,000 files slower (1.6-2.0 s against 1.1 s): the
    per-file Python work holds the GIL, only the SHA-256 itself runs in parallel."""

    chunk = HASH_CHUNK  # files per chunk: one future per file costs more than hashing a small file

    def __init__(self, threads: int = 4) -> None:
        self.threads = threads

    def __call__(self, fn: Callable[[list], list], chunks: list[list]) -> Iterator[list]:
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            try:
                yield from pool.map(fn, chunks)
            finally:
                pool.shutdown(cancel_futures=True)


def _known_hashes(listing: Listing, catalog: Catalog,
                  confine: bool) -> tuple[list[Item], list[tuple[Item, Path, int, int]]]:
    """(items whose hash the catalog has for their unchanged size and mtime, set now; (item, path, size, mtime) of
    the others, to read). Files that cannot be stat'ed, or leave the root under `confine`, become failures."""
    cache = catalog.cached_hashes(str(listing.root))
    keep, todo = [], []
    for item in listing.items:
        path = item.file or listing.root / item.rel
        if confine and not path.resolve().is_relative_to(listing.root):
            listing.failures.append((item.rel, "path leaves the data folder (symlink); not read"))
            continue
        try:
            st = path.stat()
        except OSError as exc:
            listing.failures.append((item.rel, f"cannot read file: {exc.strerror or exc}"))
            continue
        hit = cache.get(shown(str(path)))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            item.sha256, item.stat = hit[2], (st.st_size, st.st_mtime_ns)
            keep.append(item)
        else:
            todo.append((item, path, st.st_size, st.st_mtime_ns))
    return keep, todo


def hash_items(listing: Listing, catalog: Catalog, threads: int = 4, confine: bool = False,
               progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None, mapper: ThreadMap | None = None) -> None:
    """Set each item's sha256, reusing hashes of files whose size and mtime did not change.

    With `confine`, files whose real path (symlinks followed) leaves the root are failures, never read.
    `progress(hashed, to_hash)` is called as files are read (at most ~10 times a second, and at the end);
    `should_stop` is asked as often, and a True answer raises Stopped (hashes read so far are remembered).
    `mapper` runs the hashing (threads here by default; the Ray engine's runs it as tasks on the cluster).
    """
    keep, todo = _known_hashes(listing, catalog, confine)
    fresh = []
    mapper = mapper or ThreadMap(threads)
    chunks = [[str(e[1]) for e in todo[i:i + mapper.chunk]] for i in range(0, len(todo), mapper.chunk)]
    results = mapper(hash_paths, chunks)
    last = 0.0
    try:
        hashed = (entry for chunk in results for entry in chunk)
        for done, ((item, path, size, mtime), (sha, error)) in enumerate(zip(todo, hashed, strict=False), 1):
            if done == len(todo) or time.monotonic() - last > 0.1:
                last = time.monotonic()
                if progress:
                    progress(done, len(todo))
                if should_stop and should_stop():
                    raise Stopped()
            if sha is None:
                listing.failures.append((item.rel, error))
                continue
            item.sha256, item.stat = sha, (size, mtime)
            keep.append(item)
            fresh.append((shown(str(path)), size, mtime, sha))
    finally:
        results.close()
        if fresh:  # also when stopped: the next run does not read these files again
            catalog.remember_hashes(fresh)
    listing.items = sorted(keep, key=lambda i: i.rel)
