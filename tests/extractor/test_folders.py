"""Data folders as users have them. Already split into folders, as tutorials and public datasets lay it out
(data/train/cats, data/validation/cats): the top-level folders are splits, the folders inside them the classes
(before, `train` and `validation` became the two classes and a head learned to tell the splits apart); a split
folder of images alone (an unlabeled test/) is left out. Flat, with labels in the file names (Kaggle's cat.0.jpg,
Oxford-IIIT Pets' american_bulldog_10.jpg): read unlabeled and pointed out, or labeled by --name-labels. One folder
too high (pets/pets/cat, as an archive unpacks): pointed out."""

from __future__ import annotations

import json
import shutil

from extractor.folders import scan_folder
from extractor.store import FeatureStore
from tests.conftest import make_folder, run_main


def members(home) -> dict[str, tuple[str, str]]:
    """path -> (label, split)"""
    return {path: (label, split) for path, _, label, split in FeatureStore(home).catalog.members("pets")}


def test_the_keras_layout_gives_its_classes_and_keeps_its_splits(tmp_path, capsys):
    make_folder(tmp_path / "data" / "train", {"cats": 8, "dogs": 8})
    make_folder(tmp_path / "data" / "validation", {"cats": 4, "dogs": 4}, seed=3)
    home = ["--home", str(tmp_path / "home")]
    extract = ["extract", str(tmp_path / "data"), "--dataset", "pets", "--backbone", "tiny", "--weights", "random"]
    code, _, err = run_main(capsys, *extract, *home)
    assert code == 0, err
    assert "the top-level folders name the splits, train/ (train), validation/ (val), and the folders inside them " \
           "the classes; with no test folder the test split is empty: heads report val figures" in err
    found = members(tmp_path / "home")
    assert {label for label, _ in found.values()} == {"cats", "dogs"}  # never "train" and "validation"
    recorded = FeatureStore(tmp_path / "home").catalog.dataset("pets")
    assert recorded["split"] == "folders"  # no fractions were used (before: the default 0.6,0.2,0.2 was recorded)
    beside = scan_folder(tmp_path / "data" / "train")  # the train folder given alone: its sibling is pointed out
    assert beside.notes == [f"{tmp_path / 'data' / 'train'} is a train folder, and validation beside it holds class "
                            f"folders too: this dataset splits the train images alone; to use those folders' splits, "
                            f"extract {tmp_path / 'data'} instead"]
    assert scan_folder(tmp_path / "data" / "validation").notes == []
    assert all(split == ("train" if path.startswith("train/") else "val") for path, (_, split) in found.items())
    assert sum(path.startswith("validation/") for path in found) == 8
    code, out, err = run_main(capsys, "train", "--dataset", "pets", "--backbone", "tiny", "--name", "p", *home)
    assert code == 0 and "val  accuracy" in out and "(n=8)" in out, err
    code, out, _ = run_main(capsys, "evaluate", "p", "--split", "val", "--json", *home)
    assert code == 0 and json.loads(out)["metrics"]["n"] == 8
    # the folders decide, also for images split before: one moved from validation/ to train/ moves with it
    moved = sorted((tmp_path / "data" / "validation" / "cats").iterdir())[0]
    shutil.move(moved, tmp_path / "data" / "train" / "cats" / moved.name)
    # the same content in two split folders: used once, in the first by path, and said
    copy = sorted((tmp_path / "data" / "train" / "dogs").iterdir())[0]
    shutil.copy(copy, tmp_path / "data" / "validation" / "dogs" / f"copy-{copy.name}")
    code, _, err = run_main(capsys, *extract, "--split", "0.8,0.1,0.1", *home)
    assert code == 0, err
    assert "--split 0.8,0.1,0.1 does not apply" in err
    assert "1 images are in two split folders (the same content): each is used in the first by path only" in err
    found = members(tmp_path / "home")
    assert found[f"train/cats/{moved.name}"] == ("cats", "train") and f"validation/cats/{moved.name}" not in found
    assert found[f"validation/dogs/copy-{copy.name}"] == ("dogs", "train")  # its content is a train image


def test_a_train_folder_alone_holds_the_classes_and_is_split_as_any(tmp_path, capsys):
    make_folder(tmp_path / "data" / "Train", {"cats": 10, "dogs": 10})
    (tmp_path / "data" / "Train" / "notes.jpg").write_bytes(b"x")  # a loose file beside the class folders
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "pets", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "home"))
    assert code == 0, err
    assert "the classes are the folders inside Train/, and its images are split train/val/test as any" in err
    assert "1 files at the top level" in err
    found = members(tmp_path / "home")
    assert {label for label, _ in found.values()} == {"cats", "dogs"} and len(found) == 20
    assert {split for _, split in found.values()} == {"train", "val", "test"}


def test_folders_that_are_not_all_splits_stay_classes(tmp_path):
    make_folder(tmp_path / "a", {"train": 2, "cats": 2})  # "train" beside a class: a class named train, said
    listing = scan_folder(tmp_path / "a")
    assert {item.label for item in listing.items} == {"train", "cats"}
    assert listing.notes == ["the folders train are named like splits but were read as classes: split folders are "
                             "taken as such when all the top-level folders are splits (one of them train) holding one "
                             "folder per class (data/train/cats/1.jpg)"]
    make_folder(tmp_path / "b" / "test", {"cats": 2})  # split-named folders without a train folder: as before
    make_folder(tmp_path / "b" / "val", {"cats": 2})
    listing = scan_folder(tmp_path / "b")
    assert {item.label for item in listing.items} == {"test", "val"} and not listing.split_folders
    make_folder(tmp_path / "c", {"train": 2, "test": 2})  # split names holding images, not class folders
    listing = scan_folder(tmp_path / "c")  # (Kaggle's train/ of cat.0.jpg beside test1/, say)
    assert {item.label for item in listing.items} == {"train", "test"} and not listing.split_folders
    assert len(listing.notes) == 1 and listing.notes[0].startswith("the folders test, train are named like splits")
    assert listing.notes[0].endswith(f"; train/ holds images, not class folders: extract {tmp_path / 'c' / 'train'} "
                                     f"alone (with --name-labels when the file names hold the labels, as cat.12.jpg)")
    make_folder(tmp_path / "d", {"cats": 2, "dogs": 2})
    assert scan_folder(tmp_path / "d").notes == []


def test_a_split_folder_of_images_alone_is_left_out_and_said(tmp_path, capsys):
    make_folder(tmp_path / "data" / "train", {"cats": 6, "dogs": 6})
    make_folder(tmp_path / "data" / "validation", {"cats": 3, "dogs": 3}, seed=2)
    unlabeled = make_folder(tmp_path / "tmp", {"x": 4}, seed=3)
    (tmp_path / "data" / "test").mkdir()
    for path in unlabeled:  # Kaggle's way: the test images to score, no labels
        path.rename(tmp_path / "data" / "test" / path.name)
    listing = scan_folder(tmp_path / "data")
    assert {item.label for item in listing.items} == {"cats", "dogs"} and len(listing.items) == 18
    assert listing.split_folders == {"train": "train", "validation": "val"}
    assert {item.split for item in listing.items} == {"train", "val"}
    assert listing.notes == [f"test/ holds 4 images without class folders: they were left out of this labeled "
                             f"dataset; to score them, predict on that folder (headstart predict HEAD "
                             f"{tmp_path / 'data' / 'test'}), or extract it as a dataset of its own (--unlabeled)"]
    shutil.rmtree(tmp_path / "data" / "validation")  # a train folder of classes beside it alone: split as any
    listing = scan_folder(tmp_path / "data")
    assert {item.split for item in listing.items} == {None} and len(listing.items) == 12
    assert listing.split_folders == {"train": "train"} and len(listing.notes) == 1


def test_one_folder_too_high_is_pointed_out(tmp_path, capsys):
    make_folder(tmp_path / "pets" / "pets", {"cat": 3, "dog": 3})  # unzip pets.zip: pets/pets/cat/...
    (tmp_path / "pets" / "meta").mkdir()  # food-101's images/ beside meta/ (no images)
    listing = scan_folder(tmp_path / "pets")
    assert {item.label for item in listing.items} == {"pets"}
    assert listing.notes == [f"all the images are inside pets/, one class, and the folders in it (cat, dog) look like "
                             f"the classes: to read those, extract {tmp_path / 'pets' / 'pets'} instead (with "
                             f"--redefine when the dataset was extracted already)"]
    make_folder(tmp_path / "one", {"cat": 3})  # one class, images directly in it: nothing to point at
    assert scan_folder(tmp_path / "one").notes == []
    make_folder(tmp_path / "zip" / "cats_and_dogs_filtered" / "train", {"cats": 2, "dogs": 2})  # the tutorial's zip
    make_folder(tmp_path / "zip" / "cats_and_dogs_filtered" / "validation", {"cats": 1, "dogs": 1})
    assert scan_folder(tmp_path / "zip").notes == [
        f"all the images are inside cats_and_dogs_filtered/, one class, and the folders in it (train, validation) "
        f"look like splits of class folders: to read those, extract {tmp_path / 'zip' / 'cats_and_dogs_filtered'} "
        f"instead (with --redefine when the dataset was extracted already)"]


def test_labels_in_file_names_are_pointed_out_and_taken_with_name_labels(tmp_path, capsys):
    data = tmp_path / "images"
    written = make_folder(tmp_path / "src", {"a": 10})
    data.mkdir()
    breeds = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier"]  # as Oxford-IIIT Pets names them
    for i, path in enumerate(written[:9]):
        (data / f"{breeds[i % 3]}_{i + 1}.jpg").write_bytes(path.read_bytes())
    (data / "42.jpg").write_bytes(written[9].read_bytes())  # a number alone: no label in it
    home = ["--home", str(tmp_path / "home")]
    extract = ["extract", str(data), "--dataset", "pets", "--backbone", "tiny", "--weights", "random"]
    code, _, err = run_main(capsys, *extract, *home)
    assert code == 0, err
    assert "their names start with what look like labels (3: Abyssinian 3, american_bulldog 3, " \
           "american_pit_bull_terrier 3): to take those as the labels, extract with --name-labels (the API's " \
           "name_labels; on the page, labels: file names), and --redefine if the dataset was extracted already" \
           in err  # before, american_bulldog and american_pit_bull_terrier were one label, "american"
    code, out, err = run_main(capsys, *extract, "--name-labels", "--redefine", "--json", *home)
    assert code == 0 and "look like labels" not in err, err
    assert json.loads(out)["failures"] == [{"path": "42.jpg", "reason": "no label in the file name: --name-labels "
                                            "reads names made of a label and a number, as cat.12.jpg or "
                                            "american_bulldog_10.jpg; rename the file, or move it out of the folder"}]
    found = members(tmp_path / "home")
    assert {label for label, _ in found.values()} == set(breeds) and found["american_bulldog_2.jpg"][0] == \
        "american_bulldog"
    code, out, err = run_main(capsys, *extract, *home)  # a rerun keeps how the dataset is labeled
    assert code == 0 and "look like labels" not in err and "nothing to compute" in out, err
    code, _, err = run_main(capsys, *extract, "--unlabeled", *home)
    assert code == 1 and "reads " + str(data) + " (labels from the file names); this run asks for" in err
    code, _, err = run_main(capsys, *extract, "--unlabeled", "--name-labels", *home)
    assert code == 1 and "expected one of them, not several" in err


def test_kaggle_dogs_vs_cats_is_pointed_at_its_train_folder_and_split_names_take_suffixes(tmp_path):
    """Kaggle's dogs vs cats unpacks as train/ (cat.0.jpg, dog.0.jpg) beside test1/ (1.jpg, unlabeled). Before,
    test1 was not taken for a split name: two classes, train and test1, with no word on what to do."""
    written = make_folder(tmp_path / "src", {"cat": 3, "dog": 3})
    for folder in ("train", "test1"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i, path in enumerate(written):
        path.rename(tmp_path / "data" / "train" / f"{path.parent.name}.{i}.jpg")
    (tmp_path / "data" / "test1" / "1.jpg").write_bytes((tmp_path / "data" / "train" / "cat.0.jpg").read_bytes())
    listing = scan_folder(tmp_path / "data")
    assert listing.notes == [f"the folders test1, train are named like splits but were read as classes: split "
                             f"folders are taken as such when all the top-level folders are splits (one of them "
                             f"train) holding one folder per class (data/train/cats/1.jpg); train/ holds images, not "
                             f"class folders: extract {tmp_path / 'data' / 'train'} alone (with --name-labels when the "
                             f"file names hold the labels, as cat.12.jpg)"]
    from extractor.folders import split_of

    assert [split_of(n) for n in ("train", "Train_Images", "test1", "Validation Data", "val-set", "dev", "testing",
                                  "trainval", "cats", "test123", "contest")] == \
        ["train", "train", "test", "val", "val", "val", "test", None, None, None, None]


def test_labels_in_names():
    from extractor.folders import label_in_name

    assert [label_in_name(n) for n in ("cat.12.jpg", "dog_01.png", "dog (2).png", "Great Pyrenees 7.jpeg",
                                       "cat2_5.jpg", "12.jpg", "cat.jpg", "IMG_0001.JPG")] == \
        ["cat", "dog", "dog", "Great Pyrenees", "cat2", None, None, "IMG"]


def test_camera_names_and_asked_for_unlabeled_folders_get_no_such_note(tmp_path):
    written = make_folder(tmp_path / "src", {"a": 6})
    for name, prefixes in (("camera", ["IMG_", "IMG_", "DSC_"]), ("one", ["photo-"]), ("dates", ["2024-0"])):
        folder = tmp_path / name
        folder.mkdir()
        for i, path in enumerate(written):
            (folder / f"{prefixes[i % len(prefixes)]}{i}.jpg").write_bytes(path.read_bytes())
        assert scan_folder(folder).notes == [], name
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    for i, path in enumerate(written):
        (labeled / f"{'cat' if i % 2 else 'dog'}_{i}.jpg").write_bytes(path.read_bytes())
    assert len(scan_folder(labeled).notes) == 1 and scan_folder(labeled, unlabeled=True).notes == []


def test_name_labels_keep_the_splits_that_folders_name(tmp_path, capsys):
    written = make_folder(tmp_path / "src", {"cat": 6, "dog": 6})
    for i, path in enumerate(written):
        split = "train" if i % 3 else "validation"
        (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
        path.rename(tmp_path / "data" / split / f"{path.parent.name}.{i}.jpg")
    listing = scan_folder(tmp_path / "data", names=True)
    assert {(item.label, item.split) for item in listing.items} == {("cat", "train"), ("cat", "val"),
                                                                    ("dog", "train"), ("dog", "val")}
    assert all(item.split == ("train" if item.rel.startswith("train/") else "val") for item in listing.items)
    assert listing.split_folders == {"train": "train", "validation": "val"}
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--name-labels",
                            "--backbone", "tiny", "--weights", "random", "--home", str(tmp_path / "home"))
    assert code == 0 and "the top-level folders name the splits, train/ (train), validation/ (val), and the file " \
                         "names the classes" in err, err
    assert {split for _, (_, split) in members_of(tmp_path / "home", "d").items()} == {"train", "val"}


def members_of(home, dataset: str) -> dict[str, tuple[str, str]]:
    return {path: (label, split) for path, _, label, split in FeatureStore(home).catalog.members(dataset)}


def test_a_dry_run_says_how_the_folder_is_read_and_touches_nothing(tmp_path, capsys, monkeypatch):
    make_folder(tmp_path / "data" / "train", {"cats": 5, "dogs": 4})
    make_folder(tmp_path / "data" / "validation", {"cats": 2, "dogs": 2}, seed=3)
    monkeypatch.setattr("extractor.model.LoadedBackbone.setup",
                        lambda self: (_ for _ in ()).throw(AssertionError("a model was loaded")))
    home = tmp_path / "home"
    code, out, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "pets", "--dry-run",
                              "--home", str(home))
    assert code == 0, err
    assert out.splitlines() == [
        f"pets: 13 images from {tmp_path / 'data'} (class subfolders): 2 classes", "  cats  7", "  dogs  6",
        "splits: given by the folders, train 9, val 4",
        "dry run: no image was read, no model loaded, nothing registered; drop --dry-run to extract"]
    assert "the top-level folders name the splits, train/ (train), validation/ (val)" in err
    assert not home.exists()  # no home is made (before: an empty one)
    FeatureStore(home)
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "pets", "--dry-run",
                            "--home", str(home))
    assert code == 0 and FeatureStore(home).catalog.dataset_names() == []
    code, out, _ = run_main(capsys, "extract", str(tmp_path / "data" / "train"), "--dataset", "p2", "--dry-run",
                            "--split", "0.5,0.25,0.25", "--seed", "7", "--json", "--home", str(home))
    answer = json.loads(out)
    assert code == 0 and answer["splits"] == {"by": "fractions", "fractions": "0.5,0.25,0.25", "seed": 7}
    assert answer["classes"] == {"cats": 5, "dogs": 4} and answer["dry_run"] is True
    code, _, err = run_main(capsys, "extract", str(tmp_path / "nothing"), "--dataset", "p3", "--dry-run",
                            "--home", str(home))
    assert code == 1 and "does not exist" in err
