"""Labels CSVs as spreadsheets save them beyond UTF-8 and Windows-1252: Excel for Mac's "Comma Separated Values"
is Mac OS Roman (é is byte 0x8e, which Windows-1252 reads as Ž: before, `café` became `cafŽ`, with only a warning
that labels may look wrong); Excel's "Unicode Text" is UTF-16 with a byte order mark, separated by tabs (before:
read as Windows-1252, columns `ÿþp\\x00a\\x00...`); classic Mac line ends are a CR alone."""

from __future__ import annotations

import pytest

from extractor.labelcsv import scan_csv
from tests.conftest import make_folder

LABELS = ["café", "crème brûlée", "CAFÉ", "Äpfel"]


@pytest.fixture
def data(tmp_path):
    make_folder(tmp_path / "data", {"a": 4})
    return tmp_path


def rows(separator: str = ",", end: str = "\n") -> str:
    lines = [f"path{separator}label"] + [f"a/a_{i:04d}.jpg{separator}{label}" for i, label in enumerate(LABELS)]
    return end.join(lines) + end


def read(data, content: bytes):
    (data / "labels.csv").write_bytes(content)
    listing = scan_csv(data / "data", data / "labels.csv")
    assert not listing.failures, listing.failures
    return [item.label for item in listing.items], listing.notes


def test_excel_for_mac_csv_is_read_as_mac_roman(data):
    labels, notes = read(data, rows(end="\r").encode("mac_roman"))
    assert labels == LABELS
    assert notes == [f"{data / 'labels.csv'} is not UTF-8 (byte 0x8e on line 2); it was read as Mac OS Roman, the "
                     f"encoding of Excel for Mac's CSV: if labels look wrong, save it as UTF-8 (Excel: 'CSV UTF-8')"]


def test_windows_1252_stays_windows_1252_with_dashes_and_quotes(data):
    windows = rows(";", "\r\n").replace("crème brûlée", "crème – “brûlée”")
    labels, notes = read(data, windows.encode("cp1252"))
    assert labels == ["café", "crème – “brûlée”", "CAFÉ", "Äpfel"]
    assert "it was read as Windows-1252" in notes[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_unicode_text_is_read_with_its_byte_order_mark(data, encoding):
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[encoding]
    labels, notes = read(data, bom + rows("\t", "\r\n").encode(encoding))
    assert labels == LABELS and notes == []


def test_a_semicolon_file_with_cr_line_ends_keeps_its_separator(data):
    text = rows(";", "\r").replace("Äpfel", "Äpfel, rot")  # a comma in a label after the header
    labels, _ = read(data, text.encode("utf-8"))
    assert labels == LABELS[:3] + ["Äpfel, rot"]


def test_bytes_that_are_no_western_text_are_still_refused(data):
    """A lone byte that neither Windows-1252 nor Mac OS Roman reads as a letter in a word, and GBK Chinese (Excel on
    Chinese Windows): refused as before, never read as Mac OS Roman."""
    from extractor.errors import HeadstartError

    for content in (b"path,label\na/a_0000.jpg,\x81\n", "path,label\na/a_0000.jpg,丂亐\n".encode("gbk")):
        (data / "labels.csv").write_bytes(content)
        with pytest.raises(HeadstartError, match=r"is not UTF-8 text \(byte 0x81 on line 2\); save it as UTF-8"):
            scan_csv(data / "data", data / "labels.csv")
