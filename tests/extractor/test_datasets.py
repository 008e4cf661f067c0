"""Datasets: folders, CSV (dog-breed shape), unlabeled; hashing; stratified, seeded, stable splits."""

from __future__ import annotations

from collections import Counter

import pytest

from extractor.catalog import Catalog
from extractor.datasets import hash_items
from extractor.errors import HeadstartError
from extractor.folders import scan_folder
from extractor.labelcsv import scan_csv
from extractor.splits import assign_splits, parse_split, register
from tests.conftest import make_folder, run_main

SOURCES = [{"root": "/d", "kind": "folders", "labels_csv": None, "path_column": None, "label_column": None,
            "prefix": ""}]


def test_class_folders_and_unlabeled(tmp_path):
    make_folder(tmp_path / "data", {"cat": 3, "dog": 2})
    (tmp_path / "data" / "cat" / "notes.txt").write_text("not listed")
    (tmp_path / "data" / "cat" / ".DS_Store").write_text("hidden")
    listing = scan_folder(tmp_path / "data")
    assert listing.kind == "folders"
    assert Counter(i.label for i in listing.items) == {"cat": 3, "dog": 2}
    assert listing.skipped == {".txt": 1}
    flat = scan_folder(tmp_path / "data" / "cat")
    assert flat.kind == "unlabeled" and len(flat.items) == 3 and flat.items[0].label is None
    forced = scan_folder(tmp_path / "data", unlabeled=True)
    assert forced.kind == "unlabeled" and len(forced.items) == 5



def test_system_folders_of_nas_and_archives_are_not_classes_or_images(tmp_path, capsys):
    """Before: a Synology NAS's @eaDir became a class, and its thumbnails inside a class folder were taken as more
    images of that class (small copies of the photos, which could land in another split than their photo)."""
    import shutil

    from tests.conftest import run_main

    written = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    for system in ("@eaDir", "cat/@eaDir/cat_0000.jpg", "__MACOSX/cat", "$RECYCLE.BIN", "#recycle"):
        (tmp_path / "data" / system).mkdir(parents=True, exist_ok=True)
        shutil.copy(written[0], tmp_path / "data" / system / "SYNOPHOTO_THUMB_M.jpg")
    listing = scan_folder(tmp_path / "data")
    assert sorted(i.rel for i in listing.items) == sorted(f"{p.parent.name}/{p.name}" for p in written)
    assert listing.system_folders == ["#recycle", "$RECYCLE.BIN", "@eaDir", "__MACOSX", "cat/@eaDir"]
    unlabeled = scan_folder(tmp_path / "data", unlabeled=True)
    assert len(unlabeled.items) == 4
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))
    assert code == 0 and "headstart: warning: 5 system folders were not read (#recycle, $RECYCLE.BIN, @eaDir, " in err


def test_photos_in_formats_not_read_are_named_apart_from_other_files(tmp_path, capsys):
    """Before: iPhone HEIC photos and camera RAW files were counted as 'files without an image suffix (.jpg, .png,
    ...)', which reads as if they were not images at all."""
    from tests.conftest import run_main

    make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    for name in ("cat/IMG_0001.JXL", "cat/IMG_0002.jxl", "dog/DSC_0001.NEF", "dog/notes.txt"):
        (tmp_path / "data" / name).write_bytes(b"x")
    listing = scan_folder(tmp_path / "data")
    assert len(listing.items) == 4 and listing.skipped == {".txt": 1} and listing.unsupported == {".jxl": 2, ".nef": 1}
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))
    assert code == 0 and "headstart: warning: 3 photos in formats headstart does not read (.jxl 2, .nef 1) were " \
                         "skipped: convert them to JPEG or PNG" in err
    assert "headstart: warning: 1 file without an image suffix (.jpg, .png, ...) was skipped (.txt 1)" in err


def test_jfif_files_are_read_as_the_jpegs_they_are(tmp_path):
    """Browsers on Windows save many web JPEGs as .jfif; they were skipped as 'files without an image suffix'."""
    make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    jpeg = next((tmp_path / "data" / "cat").iterdir())
    (tmp_path / "data" / "cat" / "saved.JFIF").write_bytes(jpeg.read_bytes())
    listing = scan_folder(tmp_path / "data")
    assert len(listing.items) == 5 and not listing.skipped

def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(HeadstartError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_dog_breed_csv_maps_ids_to_jpg(tmp_path):
    data = tmp_path / "train"
    written = make_folder(tmp_path / "tmp", {"a": 2, "b": 2})
    data.mkdir()
    rows = ["id,breed"]
    for i, path in enumerate(written):
        (data / f"img{i}.jpg").write_bytes(path.read_bytes())
        rows.append(f"img{i},{'beagle' if i < 2 else 'pug'}")
    rows.append("ghost,pug")
    rows.append("img0,pug")  # duplicate row with another label: the first label wins, the conflict is reported
    rows.append("img2.jpg,pug")  # the same file again with the same label: harmless, not reported
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    listing = scan_csv(data, tmp_path / "labels.csv")
    assert {i.rel: i.label for i in listing.items} == {
        "img0.jpg": "beagle", "img1.jpg": "beagle", "img2.jpg": "pug", "img3.jpg": "pug"}
    assert listing.failures[0] == ("ghost", "listed in the CSV but not found inside the data folder")
    (rel, reason), = listing.failures[1:]
    assert rel == "img0" and "again in the CSV with label 'pug'" in reason and "'beagle' is used" in reason


def test_csv_separators_and_encodings(tmp_path):
    make_folder(tmp_path / "data", {"a": 1, "b": 1})
    for name, data in [("tab", b"path\tlabel\na/a_0000.jpg\tx, y\nb/b_0000.jpg\tz\n"),
                       ("bom-crlf", "path,label\r\na/a_0000.jpg,\"x, y\"\r\nb/b_0000.jpg,z\r\n".encode("utf-8-sig")),
                       ("semicolon", b"path;label\na/a_0000.jpg;x, y\nb/b_0000.jpg;z\n")]:
        (tmp_path / f"{name}.csv").write_bytes(data)
        listing = scan_csv(tmp_path / "data", tmp_path / f"{name}.csv")
        assert [(i.rel, i.label) for i in listing.items] == [("a/a_0000.jpg", "x, y"), ("b/b_0000.jpg", "z")], name
        assert listing.columns == ("path", "label") and listing.notes == [] and listing.failures == [], name


def test_label_lists_without_a_header_or_separated_by_spaces(tmp_path, capsys):
    """A label list written without a header row: before, its first row was taken for the header and its image
    silently left out. Space-separated lists (`image_id label`) were one column. Images the CSV does not list are
    counted in a warning."""
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    (tmp_path / "plain.txt").write_text("a/a_0000.jpg,x\na/a_0001.jpg,x\nb/b_0000.jpg,y\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "plain.txt")
    assert [(i.rel, i.label) for i in listing.items] == [("a/a_0000.jpg", "x"), ("a/a_0001.jpg", "x"),
                                                        ("b/b_0000.jpg", "y")]
    assert listing.columns == (None, None) and listing.notes == [
        f"{tmp_path / 'plain.txt'} has no header row (its first row names a file, a/a_0000.jpg): its two columns "
        f"were read as path and label",
        f"1 images in {tmp_path / 'data'} are not listed in plain.txt and were not read: a dataset from a labels "
        f"CSV is the images it lists"]
    (tmp_path / "spaces.txt").write_text("image_id  label\na/a_0000 x\nb/b_0000   y\nb/b_0001 y\na/a_0001 x\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "spaces.txt")
    assert [(i.rel, i.label) for i in listing.items] == [("a/a_0000.jpg", "x"), ("b/b_0000.jpg", "y"),
                                                        ("b/b_0001.jpg", "y"), ("a/a_0001.jpg", "x")]
    assert listing.columns == ("image_id", "label") and listing.notes == []
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--labels",
                            str(tmp_path / "plain.txt"), "--backbone", "tiny", "--weights", "random",
                            "--home", str(tmp_path / "home"))
    assert code == 0 and "has no header row" in err, err
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))  # a rerun reads it so again
    assert code == 0 and "has no header row" in err, err


def test_csv_columns_must_be_identifiable(tmp_path):
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(HeadstartError, match="--path-column"):
        scan_csv(tmp_path, tmp_path / "x.csv")
    with pytest.raises(HeadstartError, match="no column 'zzz'"):
        scan_csv(tmp_path, tmp_path / "x.csv", path_column="zzz")


def test_hashing_reuses_unchanged_files_and_keys_by_content(tmp_path):
    written = make_folder(tmp_path / "data", {"a": 2})
    (tmp_path / "data" / "a" / "copy.jpg").write_bytes(written[0].read_bytes())
    catalog = Catalog(tmp_path / "c.sqlite")
    listing = scan_folder(tmp_path / "data")
    hash_items(listing, catalog)
    shas = {i.rel: i.sha256 for i in listing.items}
    assert shas["a/copy.jpg"] == shas["a/a_0000.jpg"] != shas["a/a_0001.jpg"]
    assert len(catalog.cached_hashes(str(listing.root))) == 3
    assert catalog.cached_hashes(str(tmp_path / "elsewhere")) == {}
    again = scan_folder(tmp_path / "data")
    hash_items(again, catalog)
    assert {i.rel: i.sha256 for i in again.items} == shas


def test_split_is_stratified_exact_and_seeded():
    units = {f"{c}{i:03d}": c for c in "ab" for i in range(50)}
    splits = assign_splits(units, {}, (0.6, 0.2, 0.2), seed=42)
    for c in "ab":
        assert Counter(s for u, s in splits.items() if units[u] == c) == {"train": 30, "val": 10, "test": 10}
    assert splits == assign_splits(units, {}, (0.6, 0.2, 0.2), seed=42)
    assert splits != assign_splits(units, {}, (0.6, 0.2, 0.2), seed=7)


def test_split_is_stable_when_images_are_added():
    units = {f"a{i:03d}": "a" for i in range(40)}
    first = assign_splits(units, {}, (0.5, 0.25, 0.25), seed=1)
    more = {**units, **{f"a{i:03d}": "a" for i in range(40, 60)}}
    second = assign_splits(more, first, (0.5, 0.25, 0.25), seed=1)
    assert all(second[u] == first[u] for u in first)
    assert Counter(second.values()) == {"train": 30, "val": 15, "test": 15}


def test_parse_split():
    assert parse_split("60,20,20") == pytest.approx((0.6, 0.2, 0.2))
    for bad in ("0.5,0.5", "a,b,c", "0.5,0.3,0.3", "-1,1,1"):
        with pytest.raises(HeadstartError, match="--split"):
            parse_split(bad)


def test_register_records_split_once(tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 5})
    catalog = Catalog(tmp_path / "c.sqlite")
    listing = scan_folder(tmp_path / "data")
    hash_items(listing, catalog)
    register(catalog, "d", listing, SOURCES, "0.6,0.2,0.2", 42)
    with pytest.raises(HeadstartError, match="--resplit"):
        register(catalog, "d", listing, SOURCES, "0.8,0.1,0.1", 42)
    kept = register(catalog, "d", listing, SOURCES)  # no split given: the recorded one is used
    assert Counter(m[3] for m in kept) == {"train": 6, "val": 2, "test": 2}
    redone = register(catalog, "d", listing, SOURCES, "0.8,0.1,0.1", 42, resplit=True)
    assert Counter(m[3] for m in redone) == {"train": 8, "val": 1, "test": 1}


def test_a_folder_of_raw_photos_only_says_to_convert_them(tmp_path, capsys):
    from tests.conftest import assert_one_line_error, run_main

    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "data" / "cat" / f"IMG_{i}.CR2").write_bytes(b"x")
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))
    assert_one_line_error(code, err, "it holds 3 photos in formats headstart does not read (.cr2 3): convert them")


def test_labels_differing_only_in_case_or_spacing_are_pointed_out(tmp_path, capsys):
    make_folder(tmp_path / "data", {"a": 4})
    rows = ["path,label"] + [f"a/a_000{i}.jpg,{label}" for i, label in
                             enumerate(["Cat", "cat", "golden retriever", "Golden_Retriever"])]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--labels",
                            str(tmp_path / "labels.csv"), "--backbone", "tiny", "--weights", "random",
                            "--home", str(tmp_path / "home"))
    assert code == 0, err
    assert "labels that differ only in case or spacing are classes of their own: 'Cat' and 'cat'; " \
           "'Golden_Retriever' and 'golden retriever'; if they are one class, give them one spelling" in err
    make_folder(tmp_path / "ok", {"cat": 2, "dog": 2})
    code, _, err = run_main(capsys, "extract", str(tmp_path / "ok"), "--dataset", "ok", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))
    assert code == 0 and "differ only in case" not in err, err


def test_ids_of_a_subfolder_are_pointed_at_and_an_extract_of_nothing_usable_registers_nothing(tmp_path, capsys):
    """Kaggle's dog breeds: labels.csv beside train/<id>.jpg. Given the parent, every row failed, the dataset was
    registered empty, and the right folder then needed --redefine; nothing said where the ids were."""
    written = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    (tmp_path / "kaggle" / "train").mkdir(parents=True)
    rows = ["id,breed"]
    for i, path in enumerate(written):
        (tmp_path / "kaggle" / "train" / f"id{i}.jpg").write_bytes(path.read_bytes())
        rows.append(f"id{i},{path.parent.name}")
    (tmp_path / "kaggle" / "labels.csv").write_text("\n".join(rows) + "\n")
    home = ["--home", str(tmp_path / "home")]
    extract = ["--dataset", "dogs", "--labels", str(tmp_path / "kaggle" / "labels.csv"), "--backbone", "tiny",
               "--weights", "random", *home]
    code, _, err = run_main(capsys, "extract", str(tmp_path / "kaggle"), *extract)
    assert code == 1
    assert "most rows of labels.csv not found name images below train/ (the CSV's paths are relative to the folder " \
           f"given): extract {tmp_path / 'kaggle' / 'train'} with this CSV instead" in err
    assert "no image could be used, so dataset 'dogs' was not registered" in err
    code, out, err = run_main(capsys, "extract", str(tmp_path / "kaggle" / "train"), *extract)  # no --redefine
    assert code == 0 and "4 extracted" in out, err
