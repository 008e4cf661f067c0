"""Labels CSVs given one-hot, a column per class holding 1 on its rows (ISIC 2019's `image,MEL,NV,...,UNK` with
`1.0`/`0.0`; Plant Pathology's `image_id,healthy,multiple_diseases,rust,scab`): each row's class is the column it
marks. Read only when no label column is found by name, so other CSVs pay nothing."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from extractor.errors import HeadstartError


def _mark(value: str | None) -> bool | None:
    """True for 1, False for 0 (also `1.0`, `0.0` as pandas writes them), None for anything else."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return True if number == 1 else False if number == 0 else None


def is_mark(value: str) -> bool:
    """Whether a value is 0 or 1."""
    return _mark(value) is not None


def marked_columns(rows: list[dict], columns: Iterable[str]) -> list[str]:
    """Those of `columns` whose every value is 0 or 1."""
    return [c for c in columns if all(_mark(row.get(c)) is not None for row in rows)]


def class_columns(rows: list[dict], columns: list[str], path_col: str, csv_path: Path) -> list[str]:
    """The class columns of a one-hot CSV: the columns besides the path holding only 0 and 1, when there are two or
    more (a single one is a binary label, as `has_cactus`); [] when the file is not one-hot. A file of which more than
    half the rows mark several is multi-label: refused, saying what to do."""
    classes = marked_columns(rows, (c for c in columns if c != path_col))
    if len(classes) < 2 or not rows:
        return []
    several = sum(sum(bool(_mark(row.get(c))) for c in classes) > 1 for row in rows)
    if several * 2 > len(rows):
        raise HeadstartError(
            f"{csv_path}: {several} of {len(rows)} rows mark several of the class columns ({', '.join(classes)}): it "
            f"is multi-label, and a head gives each image one class; pass --label-column NAME to learn one column as "
            f"a 0/1 label, or keep one 1 per row")
    return classes


def row_class(row: dict, classes: list[str]) -> tuple[str, str | None]:
    """(the class a row marks, None), or ('', why it marks none or several)."""
    marked = [c for c in classes if _mark(row.get(c))]
    if len(marked) == 1:
        return marked[0], None
    if not marked:
        return "", f"marks no class (none of {', '.join(classes)} holds 1): a row needs one 1"
    return "", f"marks several classes ({', '.join(marked)}): a head gives each image one class; keep one 1 in the row"


def named_on_one_hot(rows: list[dict], columns: list[str], path_col: str, label_col: str, csv_name: str) -> list[str]:
    """A warning when the label column named holds 0 and 1 as other columns do: the file looks one-hot, and the run
    learns one column as a 0/1 label (perhaps what was meant, so not refused)."""
    marked = marked_columns(rows, (c for c in columns if c != path_col))
    if label_col not in marked or len(marked) < 2:
        return []
    others = ", ".join(c for c in marked if c != label_col)
    return [f"--label-column {label_col} holds 0 and 1, as do {others}: {csv_name} looks one-hot (a column per "
            f"class); without --label-column each row's class is the column holding 1"]
