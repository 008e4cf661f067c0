"""Labels from a CSV of (path or id, label): separators and encodings as spreadsheets save them, paths confined
to the data folder."""

from __future__ import annotations

import csv
import functools
import io
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from extractor.csvtext import read_text
from extractor.datasets import IMAGE_SUFFIXES, Item, Listing, composed, existing_dir, image_names
from extractor.errors import HeadstartError, Stopped
from extractor.onehot import class_columns, is_mark, named_on_one_hot, row_class

PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "id", "image_id", "img")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "breed", "category", "target", "y", "diagnosis", "dx",
                 "classid", "class_id")
GUESS_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".heic", ".avif",
                  ".ppm", ".pgm", ".dcm", ".jp2")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          csv_path: Path) -> str | None:
    """The column named, or the first of `candidates` (any case), or a two-column file's own; else None."""
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
    return None


SAMPLE_ROWS = 20  # rows looked at to find the path column by its values


def _naming_files(root: Path, rows: Iterable[dict], columns: list[str], plain: dict[str, str]) -> str | None:
    """The one column whose values name files in the folder on at least half of the first rows (NIH's `Image
    Index`, ISIC's `image_name`, RSNA's `patientId`), or None when no column or several do."""
    sample = list(itertools.islice(rows, SAMPLE_ROWS))
    found = [c for c in columns
             if 2 * sum(_locate(root, (row.get(c) or "").strip(), plain) is not None for row in sample) >= len(sample)]
    return found[0] if len(found) == 1 and sample else None


def _separator(header: str) -> str:
    """',' unless the header has no comma but semicolons or tabs (Excel in many European locales saves CSV with ';'),
    or none of those but spaces (label lists as `image_id label`, as some public datasets give them)."""
    if "," not in header:
        for sep in (";", "\t"):
            if sep in header:
                return sep
        if " " in header.strip():
            return " "
    return ","


def _headerless(root: Path, columns: list[str], path_column: str | None, label_column: str | None,
                plain: dict[str, str]) -> bool:
    """Whether the first row is data, not a header: two columns, none named as a header would (path, label, ...),
    the first naming a file in the folder (a label list written without a header row), looked up as rows are."""
    return not path_column and not label_column and len(columns) == 2 and \
        not {c.lower().strip() for c in columns} & {*PATH_COLUMNS, *LABEL_COLUMNS} and \
        _locate(root, columns[0].strip(), plain) is not None


NOT_IN_FOLDER = "listed in the CSV but not found inside the data folder"


def _plain_files(root: Path) -> dict[str, str]:
    """Every image file (by suffix) below `root` reached through real folders only (no symlink on the way),
    relative to it: such a path stays inside `root` and names that very file, so a CSV value found here needs no
    realpath (a third of reading a 100,000-row CSV went to realpath and isfile). Other files are found the slow
    way, as before. Keyed by the path itself and by its composed form (a Mac's decomposed names are found by a CSV
    typed elsewhere), the path as the folder has it."""
    out: dict[str, str] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(str(root), rel)) as entries:
                for entry in entries:
                    name = os.path.join(rel, entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(name)
                    elif entry.is_file(follow_symlinks=False) and \
                            os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                        out[name] = name
                        out.setdefault(composed(name), name)
        except OSError:
            continue
    return out


def _locate(root: Path, value: str, plain: dict[str, str] | None = None) -> Path | None:
    """The file a CSV value names inside `root`, or None. Confinement is checked before existence, so that
    the answer is the same for a file outside the folder and for no file at all (nothing leaks). An absolute path
    into `root` (`root` is resolved; the path may reach it through a symlink, as the folder was given) and one with
    `..` that stays inside it name their file (as written: `..` before symlinks, the file's own name kept). Works on
    strings: pathlib objects took two thirds of the time of reading a 200,000-row CSV. `plain` (_plain_files)
    answers relative paths found in it at once, as written or composed."""
    top, prefix = _prefix(root)
    named = os.path.normpath(value)
    if os.path.isabs(named):
        if not (named + os.sep).startswith(prefix):
            parent, leaf = os.path.split(named)
            named = os.path.join(os.path.realpath(parent), leaf)
            if not (named + os.sep).startswith(prefix):
                return None
        named = named[len(prefix):] or "."
    if named == ".." or named.startswith(".." + os.sep):
        return None
    suffixes = _guessed(named)
    for suffix in suffixes if plain else ():
        if (found := plain.get(named + suffix) or plain.get(composed(named + suffix))) is not None:
            return Path(os.path.join(top, found))
    for suffix in suffixes:
        candidate = os.path.realpath(os.path.join(top, named + suffix))
        if candidate.startswith(prefix) and os.path.isfile(candidate):
            return Path(candidate)
    return None


def _guessed(named: str) -> tuple[str, ...]:
    """The suffixes to try after a CSV value: none, then, for an id without one (`img0`), the image suffixes."""
    return ("", *(() if os.path.splitext(named)[1] not in ("", ".") else GUESS_SUFFIXES))


@functools.lru_cache(maxsize=8)
def _prefix(root: Path) -> tuple[str, str]:
    """The folder as a string, and what every path inside it starts with."""
    top = str(root)
    return top, top if top.endswith(os.sep) else top + os.sep


def scan_csv(root: Path, csv_path: Path, path_column: str | None = None, label_column: str | None = None,
             should_stop: Callable[[], bool] | None = None) -> Listing:
    """A CSV of (path or id, label): `id` values map to `<id>.jpg` (or another image suffix) in root."""
    root = existing_dir(root)
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise HeadstartError(f"labels file {csv_path} does not exist; give a CSV with path and label columns")
    text, note = read_text(csv_path)
    notes = [note] if note else []
    separator = _separator(text.partition("\n")[0].partition("\r")[0])  # (a CR alone: classic Mac)
    columns = list(_rows(text, separator).fieldnames or [])
    if not columns:
        raise HeadstartError(f"{csv_path} is empty; expected a header row with path and label columns")
    plain = _plain_files(root)
    rows, path_col, label_col, classes, recorded = _columns(root, csv_path, text, separator, columns,
                                                            (path_column, label_column), notes, plain)
    items, failures, seen = [], [], {}
    for i, row in enumerate(rows):
        if should_stop and i % 10_000 == 0 and should_stop():
            raise Stopped()
        label, why = row_class(row, classes) if classes else ((row.get(label_col) or "").strip(), None)
        _csv_row(root, (row.get(path_col) or "").strip(), composed(label), items, failures, seen, plain, why)
    if not items and not failures:
        raise HeadstartError(f"{csv_path} has a header but no rows; expected one row per image "
                             f"({path_col},{label_col or ','.join(classes)})")
    if label_column and all(is_mark(label) for label in {item.label for item in items}):
        notes += named_on_one_hot(list(_rows(text, separator)), columns, path_col, label_col, csv_path.name)
    missing = [value for value, reason in failures if reason == NOT_IN_FOLDER]
    return Listing(root, "csv", items, failures, columns=recorded,
                   notes=notes + _unlisted(root, csv_path, seen, missing))


def _rows(text: str, separator: str, names: list[str] | None = None) -> csv.DictReader:
    return csv.DictReader(io.StringIO(text, newline=""), names, delimiter=separator, skipinitialspace=separator == " ")


def _columns(root: Path, csv_path: Path, text: str, separator: str, columns: list[str],
             named: tuple[str | None, str | None], notes: list[str],
             plain: dict[str, str]) -> tuple[Iterable[dict], str, str | None, list[str], tuple]:
    """(the rows, the path column, the label column, the class columns of a one-hot file, the columns to record): a
    headerless file's two columns are path and label (said in `notes`; nothing to record: they have no names); else
    the columns named or found by name; else, the file's 0/1 columns when it is one-hot (said in `notes`; the label
    column is then None, found again at the next run). `named`: the path and label columns the user named."""
    path_column, label_column = named
    if _headerless(root, columns, path_column, label_column, plain):
        notes.append(f"{csv_path} has no header row (its first row names a file, {columns[0].strip()}): its two "
                     f"columns were read as path and label")
        return _rows(text, separator, ["path", "label"]), "path", "label", [], (None, None)
    path_col = _pick(columns, path_column, PATH_COLUMNS, "path", csv_path) or \
        _naming_files(root, _rows(text, separator), columns, plain)
    if path_col is None:
        raise HeadstartError(f"{csv_path}: cannot tell the path column among {', '.join(columns)}; pass --path-column "
                             f"NAME")
    label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", csv_path)
    if label_col is not None:
        return _rows(text, separator), path_col, label_col, [], (path_col, label_col)
    rows = list(_rows(text, separator))
    if not (classes := class_columns(rows, columns, path_col, csv_path)):
        counts = ", ".join(f"{c} ({_values(len({row.get(c) for row in rows}))})" for c in columns if c != path_col)
        raise HeadstartError(f"{csv_path}: cannot tell the label column among {counts}; pass --label-column NAME")
    notes.append(f"{csv_path.name} is one-hot: each row's class is the column holding 1 among {', '.join(classes)}")
    return rows, path_col, None, classes, (path_col, None)


def _values(n: int) -> str:
    return f"{n:,} value" if n == 1 else f"{n:,} values"


def _unlisted(root: Path, csv_path: Path, listed: dict, missing: list[str]) -> list[str]:
    """Images in the folder that the CSV does not name (a first row taken for a header, ids with a typo, or a
    folder holding more than the CSV's part of it) are not read: said, with how many. When most rows not found
    name such images below one subfolder (Kaggle's train/<id>.jpg beside labels.csv), that folder is named."""
    prefix = _prefix(root)[1]
    unlisted = [f[len(prefix):] for f in image_names(root)[0] if f[len(prefix):] not in listed]
    if not unlisted:
        return []
    notes = [f"{len(unlisted)} images in {root} are not listed in {csv_path.name} and were not read: a dataset from "
             f"a labels CSV is the images it lists"]
    if folder := _folder_of(unlisted, missing):
        notes.append(f"most rows of {csv_path.name} not found name images below {folder}/ (the CSV's paths are "
                     f"relative to the folder given): extract {root / folder} with this CSV instead")
    return notes


def _folder_of(unlisted: list[str], missing: list[str]) -> str | None:
    """The subfolder that most missing CSV values are found below (`a1` -> train/a1.jpg), when at least half are."""
    by_name: dict[str, list[str]] = {}
    for rel in unlisted:
        by_name.setdefault(os.path.basename(rel), []).append(rel)
    where: Counter = Counter()
    for value in missing:
        value = os.path.normpath(value)
        for suffix in _guessed(value):
            hits = [rel for rel in by_name.get(os.path.basename(value + suffix), [])
                    if rel.endswith(os.sep + value + suffix)]
            if hits:
                where[hits[0][:-len(value + suffix) - 1]] += 1
                break
    if not where:
        return None
    folder, count = where.most_common(1)[0]
    return folder if count * 2 >= len(missing) else None


def _csv_row(root: Path, value: str, label: str, items: list[Item], failures: list, seen: dict,
             plain: dict[str, str] | None = None, why: str | None = None) -> None:
    found = _locate(root, value, plain) if value else None
    if found is None:
        failures.append((value or "(empty)", NOT_IN_FOLDER))
    elif why:
        failures.append((value, why))
    elif not label:
        failures.append((value, "empty label in the CSV"))
    elif (rel := str(found)[len(_prefix(root)[1]):]) not in seen:
        seen[rel] = label
        items.append(Item(rel, label, file=found))
    elif seen[rel] != label:
        failures.append((value, f"listed again in the CSV with label {label!r}; the first label "
                                f"{seen[rel]!r} is used: fix the CSV"))
