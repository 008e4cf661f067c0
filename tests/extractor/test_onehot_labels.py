"""Labels CSVs given one-hot, a column per class holding 1 on its rows, as many public datasets ship them: ISIC 2019
(`image,MEL,NV,BCC,...,UNK`, values `1.0`/`0.0`), Kaggle's Plant Pathology 2020 (`image_id,healthy,
multiple_diseases,rust,scab`). Before, such a file was 'cannot tell the label column ...; pass --label-column NAME',
and following that advice gave a dataset of two classes, `0` and `1`, without a word."""

from __future__ import annotations

import json

import pytest

from extractor.errors import HeadstartError
from extractor.labelcsv import scan_csv
from extractor.store import FeatureStore
from tests.conftest import make_folder, run_main

CLASSES = ["healthy", "multiple_diseases", "rust", "scab"]


@pytest.fixture
def data(tmp_path):
    make_folder(tmp_path / "images", {"leaf": 8})  # images/leaf/leaf_0000.jpg ...
    return tmp_path


def write(data, header: list[str], marks: list[list[float]], fmt: str = "{:g}") -> None:
    rows = [",".join(header)]
    for i, row in enumerate(marks):
        rows.append(",".join([f"leaf/leaf_{i:04d}", *(fmt.format(m) for m in row)]))
    (data / "labels.csv").write_text("\n".join(rows) + "\n")


def one_hot(classes: list[int], width: int) -> list[list[float]]:
    return [[1.0 if c == k else 0.0 for k in range(width)] for c in classes]


def test_plant_pathology_rows_take_the_class_of_the_column_they_mark(data):
    classes = [0, 1, 2, 3, 2, 3, 0, 2]
    write(data, ["image_id", *CLASSES], one_hot(classes, 4))
    listing = scan_csv(data / "images", data / "labels.csv")
    assert [item.label for item in listing.items] == [CLASSES[c] for c in classes]
    assert not listing.failures
    assert listing.columns == ("image_id", None)  # a rerun finds the class columns again
    assert listing.notes == ["labels.csv is one-hot: each row's class is the column holding 1 among healthy, "
                             "multiple_diseases, rust, scab"]


def test_isic_floats_and_a_class_no_row_marks(data):
    header = ["image", "MEL", "NV", "BCC", "UNK"]
    write(data, header, one_hot([0, 1, 2, 0, 1, 2, 0, 1], 4), fmt="{:.1f}")
    assert (data / "labels.csv").read_text().splitlines()[1] == "leaf/leaf_0000,1.0,0.0,0.0,0.0"
    listing = scan_csv(data / "images", data / "labels.csv")
    assert [item.label for item in listing.items] == ["MEL", "NV", "BCC", "MEL", "NV", "BCC", "MEL", "NV"]


def test_rows_marking_no_class_or_several_are_failures_naming_them(data):
    marks = one_hot([0, 1, 2, 3, 0, 1], 4) + [[0, 0, 0, 0], [0, 0, 1, 1]]
    write(data, ["image_id", *CLASSES], marks)
    listing = scan_csv(data / "images", data / "labels.csv")
    assert len(listing.items) == 6
    assert listing.failures == [
        ("leaf/leaf_0006", "marks no class (none of healthy, multiple_diseases, rust, scab holds 1): a row needs "
                           "one 1"),
        ("leaf/leaf_0007", "marks several classes (rust, scab): a head gives each image one class; keep one 1 in "
                           "the row"),
    ]


def test_a_multi_label_file_is_refused_with_what_to_do(data):
    write(data, ["image_id", *CLASSES], [[1, 0, 1, 0]] * 5 + one_hot([0, 1, 2], 4))
    with pytest.raises(HeadstartError) as refused:
        scan_csv(data / "images", data / "labels.csv")
    assert str(refused.value) == (
        f"{data / 'labels.csv'}: 5 of 8 rows mark several of the class columns (healthy, multiple_diseases, rust, "
        f"scab): it is multi-label, and a head gives each image one class; pass --label-column NAME to learn one "
        f"column as a 0/1 label, or keep one 1 per row")


def test_a_label_column_named_on_a_one_hot_file_is_read_with_a_warning(data):
    write(data, ["image_id", *CLASSES], one_hot([0, 1, 2, 3, 2, 3, 0, 2], 4))
    listing = scan_csv(data / "images", data / "labels.csv", label_column="rust")
    assert [item.label for item in listing.items] == ["0", "0", "1", "0", "1", "0", "0", "1"]
    assert listing.notes == ["--label-column rust holds 0 and 1, as do healthy, multiple_diseases, scab: labels.csv "
                             "looks one-hot (a column per class); without --label-column each row's class is the "
                             "column holding 1"]


def test_a_binary_label_beside_other_columns_is_not_one_hot(data):
    """One 0/1 column is a label (Kaggle's `id,has_cactus`), not a set of classes: still asked which column."""
    write(data, ["id", "has_cactus", "width"], [[i % 2, 64] for i in range(8)])
    with pytest.raises(HeadstartError) as refused:
        scan_csv(data / "images", data / "labels.csv")
    assert "cannot tell the label column" in str(refused.value)


def metadata(data, label_column: str) -> None:
    """HAM10000's metadata CSV: `lesion_id,image_id,dx,...`, the class in `dx`."""
    rows = [f"lesion_id,image_id,{label_column},age,sex"] + [
        f"HAM_{i // 2},leaf/leaf_{i:04d},{['nv', 'mel'][i % 2]},{40 + i},{['male', 'female'][i % 2]}" for i in range(8)]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")


def test_the_skin_lesion_metadata_is_read_by_its_dx_column(data):
    """Before: 'cannot tell the label column among lesion_id, image_id, dx, ...'."""
    metadata(data, "dx")
    listing = scan_csv(data / "images", data / "labels.csv")
    assert listing.columns == ("image_id", "dx")
    assert [item.label for item in listing.items] == ["nv", "mel"] * 4


def test_columns_that_cannot_be_told_are_listed_with_how_many_values_each_holds(data):
    """Counts show which column is a class (2 values among 8 rows) and which are per-image values."""
    metadata(data, "finding")
    with pytest.raises(HeadstartError) as refused:
        scan_csv(data / "images", data / "labels.csv")
    assert str(refused.value) == (
        f"{data / 'labels.csv'}: cannot tell the label column among lesion_id (4 values), finding (2 values), age "
        f"(8 values), sex (2 values); pass --label-column NAME")


def test_a_one_hot_dataset_is_extracted_and_a_rerun_reads_it_the_same_way(data, capsys):
    classes = [0, 1, 2, 3, 2, 3, 0, 2]
    write(data, ["image_id", *CLASSES], one_hot(classes, 4))
    home = ["--home", str(data / "home")]
    run = ["extract", str(data / "images"), "--dataset", "leaves", "--backbone", "tiny", "--weights", "random",
           "--json", *home]
    code, out, err = run_main(capsys, *run, "--labels", str(data / "labels.csv"))
    assert code == 0, err
    assert json.loads(out)["extracted"] == 8
    members = FeatureStore(data / "home").catalog.members("leaves")
    assert sorted(label for _, _, label, _ in members) == sorted(CLASSES[c] for c in classes)
    code, out, err = run_main(capsys, *run)  # no --labels: the recorded CSV, read one-hot again
    assert code == 0, err
    assert json.loads(out)["extracted"] == 0
    assert sorted(label for _, _, label, _ in FeatureStore(data / "home").catalog.members("leaves")) == \
        sorted(CLASSES[c] for c in classes)
