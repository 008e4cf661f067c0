"""Datasets given as they were downloaded: a zip or a .tar.gz where the folder should be, a labels workbook (.xlsx)
instead of its CSV, an image's URL to predict. Before: 'does not exist or is not a folder' for an archive that
plainly exists, 'is not UTF-8 text ... save it as UTF-8' for a zip, 'not a supported image (... first bytes 50 4b 03
04 ...)' and, for a URL, 'https:/example.com/cat.jpg: no such file or folder'. Now each says what the file is and
what to do, before anything is loaded."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from tests.conftest import assert_one_line_error, make_folder, run_main


@pytest.fixture
def downloads(tmp_path):
    """pets/ with class folders, and the same as pets.zip and pets.tar.gz, as they are downloaded."""
    files = make_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    with zipfile.ZipFile(tmp_path / "pets.zip", "w") as archive:
        for path in files:
            archive.write(path, path.relative_to(tmp_path).as_posix())
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "pets", "pets")
    return tmp_path


def extract(capsys, tmp_path, data, *more):
    return run_main(capsys, "extract", str(data), "--dataset", "pets", "--backbone", "tiny", "--weights", "random",
                    "--home", str(tmp_path / "home"), *more)


@pytest.mark.parametrize(("name", "said"), [
    ("pets.zip", "is a zip archive, not a folder: unpack it (unzip {path}) and give the folder it unpacks to"),
    ("pets.tar.gz", "is a gzip-compressed file, not a folder: unpack it (tar -xf {path}) and give the folder it "
                    "unpacks to"),
    ("pets/cat/cat_0000.jpg", "is a file, not a folder: give the folder of images it is in (predict takes single "
                              "images)"),
    ("pet", "does not exist or cannot be read; give a folder of images")])
def test_a_data_folder_that_is_not_one_says_what_it_is(downloads, capsys, name, said):
    path = downloads / name
    for more in (["--dry-run"], []):
        code, out, err = extract(capsys, downloads, path, *more)
        assert_one_line_error(code, err, f"data folder {path} {said.format(path=path)}")
        assert more == [] or not (downloads / "home").exists()  # a dry run makes no home


@pytest.mark.parametrize(("name", "said"), [
    ("labels.zip", "is a zip archive, not a CSV: unpack it (unzip {path}) and give the CSV inside"),
    ("labels.xlsx", "is a spreadsheet workbook, not a CSV: save it as CSV (Excel: 'CSV UTF-8'; LibreOffice: 'Text "
                    "CSV') and give that file"),
    ("labels.xls", "is a spreadsheet workbook, not a CSV: save it as CSV (Excel: 'CSV UTF-8'; LibreOffice: 'Text "
                   "CSV') and give that file")])
def test_a_labels_file_that_is_a_workbook_or_an_archive_says_so(downloads, capsys, name, said):
    path = downloads / name
    if name.endswith(".xls"):  # Excel 97-2003: an OLE2 compound file
        path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    else:  # an .xlsx is a zip of XML parts; the labels CSV zipped is a zip too
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("xl/worksheets/sheet1.xml" if name.endswith(".xlsx") else "labels.csv", "x" * 500)
        path.write_bytes(buf.getvalue())
    code, _, err = extract(capsys, downloads, downloads / "pets", "--labels", str(path), "--dry-run")
    assert_one_line_error(code, err, f"labels file {path} {said.format(path=path)}")


def test_predict_names_an_archive_and_a_url(downloads, capsys, monkeypatch):
    home = ["--home", str(downloads / "home")]
    assert extract(capsys, downloads, downloads / "pets")[0] == 0
    assert run_main(capsys, "train", "--dataset", "pets", "--backbone", "tiny", "--name", "h", *home)[0] == 0
    monkeypatch.setattr("extractor.model.LoadedBackbone.setup", lambda self: pytest.fail("the backbone was loaded"))
    url = "https://example.com/cat.jpg"
    code, out, _ = run_main(capsys, "predict", "h", url, "--json", *home)
    assert code == 1 and json.loads(out) == [
        {"image": url, "error": f"a URL, and headstart reads files on this machine: download it first (curl -O {url}) "
                                f"and give the file"}]
    monkeypatch.undo()  # the archive is read as a file: the model is loaded for it
    code, out, _ = run_main(capsys, "predict", "h", str(downloads / "pets.zip"), "--json", *home)
    assert code == 1 and json.loads(out) == [
        {"image": str(downloads / "pets.zip"), "error": "a zip archive, not an image: unpack it (unzip), and give the "
                                                        "images inside"}]
