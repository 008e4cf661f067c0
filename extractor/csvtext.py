"""A labels file's text, in the encodings spreadsheets save it in: UTF-8 (with or without a byte order mark), UTF-16
with one (Excel's "Unicode Text"), Windows-1252 (Excel's "CSV" on Windows in Western locales) or Mac OS Roman (Excel
for Mac's "CSV"), told apart by which reads as words; and what a labels file that is no text is."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from extractor.errors import HeadstartError
from extractor.formats import ARCHIVE_PROBE, archive

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of Excel's .xls
SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")  # zip (or OLE2) files
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_HIGH = bytes(range(0x80, 0x100))
# the non-ASCII characters judged: enough to tell (a 100,000-row CSV holding 200,000 of them was read in 0.05 s,
# 0.36 s when every one was judged)
SAMPLE = 20_000
SINGLE_BYTE = {"cp1252": "Windows-1252, Excel's CSV encoding", "mac_roman": "Mac OS Roman, the encoding of Excel for "
                                                                          "Mac's CSV"}


def read_text(csv_path: Path) -> tuple[str, str | None]:
    """The file's text, and a note when it was read in a single-byte encoding (a guess, said so)."""
    try:
        data = csv_path.read_bytes()
    except OSError as exc:
        raise HeadstartError(f"cannot read labels file {csv_path}: {exc.strerror or exc}") from None
    if (packed := archive(data[:ARCHIVE_PROBE])) or data.startswith(OLE2):
        raise HeadstartError(_not_text(csv_path, packed))
    utf16 = data.startswith(UTF16_BOMS)
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig"), None
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} on line {_line(data, exc.start)}"
    if utf16 or (encoding := _single_byte(data)) is None:
        raise HeadstartError(f"{csv_path} is not UTF-8 text ({where}); save it as UTF-8 (Excel: 'CSV UTF-8')")
    return data.decode(encoding), (f"{csv_path} is not UTF-8 ({where}); it was read as {SINGLE_BYTE[encoding]}: if "
                                   f"labels look wrong, save it as UTF-8 (Excel: 'CSV UTF-8')")


def _line(data: bytes, at: int) -> int:
    """The line of byte `at`, lines ended by LF, CRLF or a CR alone (classic Mac)."""
    before = data[:at]
    return before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1


def _single_byte(data: bytes) -> str | None:
    """Windows-1252 or Mac OS Roman, whichever reads the bytes as letters within words (é is 0xe9 in one and 0x8e in
    the other); Mac OS Roman only where nearly every byte above 0x7f reads so (a lone byte, or Chinese saved as GBK,
    is none of them: None where Windows-1252 cannot read it either)."""
    try:
        windows = _wordlike(data.decode("cp1252"))
    except UnicodeDecodeError:
        windows = -1
    mac, high = _wordlike(data.decode("mac_roman")), min(SAMPLE, len(data) - len(data.translate(None, _HIGH)))
    if mac > windows and mac * 2 >= high * 3:
        return "mac_roman"
    return "cp1252" if windows >= 0 else None


def _wordlike(text: str) -> int:
    """How much the non-ASCII letters of `text` look like letters of words: 2 for one inside or at the start of a
    word of ASCII letters in its case (café, CAFÉ, Äpfel), 1 for a letter alone, 0 otherwise."""
    score = 0
    for found in itertools.islice(_NON_ASCII.finditer(text), SAMPLE):
        i, char = found.start(), found.group()
        if not char.isalpha():
            continue
        before = text[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        near = [c for c in (before, after) if c.isascii() and c.isalpha()]
        if not near:
            score += 1
        elif any(c.islower() == char.islower() for c in near) or (
                char.isupper() and not (before.isascii() and before.isalpha()) and after.islower()):
            score += 2
    return score


def _not_text(csv_path: Path, packed: tuple[str, str] | None) -> str:
    """A labels file given as the workbook it was typed in, or as the archive it came in."""
    if packed is None or csv_path.suffix.lower() in SPREADSHEETS:
        return f"labels file {csv_path} is a spreadsheet workbook, not a CSV: save it as CSV (Excel: 'CSV UTF-8'; " \
               f"LibreOffice: 'Text CSV') and give that file"
    return f"labels file {csv_path} is {packed[0]}, not a CSV: unpack it ({packed[1]} {csv_path}) and give the CSV " \
           f"inside"
