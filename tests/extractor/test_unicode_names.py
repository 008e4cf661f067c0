"""Names with accents or Hangul, written decomposed by a Mac (NFD: é as e + U+0301, 한 as its three jamo) and kept so
when copied or zipped, beside names made elsewhere (composed, NFC). They print alike; before, they were different
strings: a folder added from a Mac gave a second class `café` (a head trained on 4 classes of which 2 were the same),
and a CSV typed elsewhere found none of a Mac's files ("listed in the CSV but not found")."""

from __future__ import annotations

import unicodedata

from extractor.folders import scan_folder
from extractor.labelcsv import scan_csv
from extractor.store import FeatureStore
from tests.conftest import make_folder, run_main

CAFE, KIMCHI = "café", "김치"


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_the_two_forms_differ_as_strings():  # what the tests below rest on
    assert nfc(CAFE) != nfd(CAFE) and nfc(KIMCHI) != nfd(KIMCHI) and len(nfd(KIMCHI)) == 5


def test_a_folder_added_from_a_mac_gives_the_same_classes(tmp_path, capsys):
    make_folder(tmp_path / "here", {nfc(CAFE): 4, nfc(KIMCHI): 4})
    make_folder(tmp_path / "mac", {nfd(CAFE): 4, nfd(KIMCHI): 4}, seed=1)
    home = ["--home", str(tmp_path / "home")]
    common = ["--dataset", "food", "--backbone", "tiny", "--weights", "random", *home]
    assert run_main(capsys, "extract", str(tmp_path / "here"), *common)[0] == 0
    code, _, err = run_main(capsys, "extract", str(tmp_path / "mac"), "--add", *common)
    assert code == 0, err
    labels = {label for _, _, label, _ in FeatureStore(tmp_path / "home").catalog.members("food")}
    assert labels == {nfc(CAFE), nfc(KIMCHI)}
    code, out, err = run_main(capsys, "train", "--dataset", "food", "--backbone", "tiny", "--name", "h", *home)
    assert code == 0 and "(2 classes)" in out, out + err


def test_both_forms_in_one_folder_are_one_class_and_name_labels_compose(tmp_path):
    make_folder(tmp_path / "data", {nfc(CAFE): 2, "tea": 2})
    make_folder(tmp_path / "more", {nfd(CAFE): 2}, seed=2)
    (tmp_path / "more" / nfd(CAFE)).rename(tmp_path / "data" / nfd(CAFE))
    listing = scan_folder(tmp_path / "data")
    assert sorted(item.label for item in listing.items) == [nfc(CAFE)] * 4 + ["tea"] * 2
    assert len({item.file for item in listing.items}) == 6  # each file read from where it is
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted((tmp_path / "data").rglob("*.jpg"))):
        path.rename(flat / f"{nfd(KIMCHI)}.{i}.jpg")
    named = scan_folder(flat, names=True)
    assert {item.label for item in named.items} == {nfc(KIMCHI)} and not named.failures


def test_a_csv_finds_files_whatever_form_either_side_has(tmp_path):
    written = make_folder(tmp_path / "data", {"x": 4})
    files = []
    for i, path in enumerate(written):  # files named on a Mac (decomposed), and one made here (composed)
        files.append(path.rename(tmp_path / "data" / (nfd if i < 3 else nfc)(f"crème_{i}.jpg")))
    rows = [f"{nfc('crème_0.jpg')},{nfd(CAFE)}",  # composed value, decomposed label
            f"{nfc('crème_1')},{CAFE}",  # an id without its suffix
            f"./{nfc('crème_2.jpg')},{CAFE}",  # a path os.path.normpath changes
            f"{nfd('crème_3.jpg')},{nfc(KIMCHI)}"]  # decomposed value, composed file
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "labels.csv")
    assert not listing.failures and not listing.notes, (listing.failures, listing.notes)
    assert [(item.file, item.label) for item in listing.items] == \
        [(files[0], nfc(CAFE)), (files[1], nfc(CAFE)), (files[2], nfc(CAFE)), (files[3], nfc(KIMCHI))]
    assert [item.rel for item in listing.items] == [f.name for f in files]  # as the folder has them


def test_a_headerless_list_whose_first_file_is_named_on_a_mac_has_no_header(tmp_path):
    """The header check looks its first value up as the rows are: before, a composed value naming a decomposed file
    was not found there, so the first row was taken for a header and its image not read."""
    written = make_folder(tmp_path / "data", {"x": 2})
    files = [path.rename(tmp_path / "data" / nfd(f"crème_{i}.jpg")) for i, path in enumerate(written)]
    (tmp_path / "labels.csv").write_text(f"{nfc('crème_0.jpg')},{CAFE}\n{nfc('crème_1.jpg')},{KIMCHI}\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "labels.csv")
    assert [(item.file, item.label) for item in listing.items] == [(files[0], CAFE), (files[1], KIMCHI)]
    assert listing.notes == [f"{tmp_path / 'labels.csv'} has no header row (its first row names a file, "
                             f"{nfc('crème_0.jpg')}): its two columns were read as path and label"]


def test_a_file_listed_in_both_forms_is_one_member(tmp_path):
    path = make_folder(tmp_path / "data", {"x": 1})[0].rename(tmp_path / "data" / nfd("crème.jpg"))
    (tmp_path / "labels.csv").write_text(f"path,label\n{nfd('crème.jpg')},a\n{nfc('crème.jpg')},b\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "labels.csv")
    assert [(item.file, item.label) for item in listing.items] == [(path, "a")]
    assert len(listing.failures) == 1 and "listed again in the CSV with label 'b'" in listing.failures[0][1]


def test_predict_finds_true_labels_in_class_folders_of_either_form(tmp_path):
    from service.cli_predict import expand

    make_folder(tmp_path / "new", {nfd(CAFE): 2, nfc(KIMCHI): 2, "other": 1})
    files, problems, truth = expand([tmp_path / "new"], {nfc(CAFE), nfc(KIMCHI)})
    assert len(files) == 5 and not problems
    assert sorted(truth.values()) == [nfc(CAFE)] * 2 + [nfc(KIMCHI)] * 2
    # a head trained before labels were composed has the folder's own form as its class: its class is the truth
    assert sorted(expand([tmp_path / "new"], {nfd(CAFE)})[2].values()) == [nfd(CAFE)] * 2
