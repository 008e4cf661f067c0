"""The path column of a labels CSV found by what it holds when its name is none we know: NIH ChestX-ray14's
`Image Index`, ISIC 2020's `image_name`, RSNA Pneumonia's `patientId`. Before: 'cannot tell the path column among
...; pass --path-column NAME'."""

from __future__ import annotations

import pytest

from extractor.errors import HeadstartError
from extractor.labelcsv import scan_csv
from tests.conftest import make_folder


@pytest.fixture
def data(tmp_path):
    make_folder(tmp_path / "images", {"x": 6})  # images/x/x_0000.jpg ...
    return tmp_path


def read(data, header: str, row, label_column: str | None = None) -> tuple[list[tuple[str, str]], tuple]:
    (data / "labels.csv").write_text("\n".join([header] + [row(i) for i in range(6)]) + "\n")
    listing = scan_csv(data / "images", data / "labels.csv", label_column=label_column)
    assert not listing.failures, listing.failures
    return [(item.rel, item.label) for item in listing.items], listing.columns


def test_nih_chest_xray_image_index(data):
    rows, columns = read(data, "Image Index,Finding Labels,Follow-up #,Patient ID",
                         lambda i: f"x/x_{i:04d}.jpg,{['Effusion', 'No Finding'][i % 2]},{i},{100 + i}",
                         label_column="Finding Labels")
    assert columns == ("Image Index", "Finding Labels")
    assert rows == [(f"x/x_{i:04d}.jpg", ["Effusion", "No Finding"][i % 2]) for i in range(6)]


def test_isic_2020_image_name_ids_without_suffix(data):
    rows, columns = read(data, "image_name,patient_id,sex,target",
                         lambda i: f"x/x_{i:04d},IP_{i},male,{i % 2}")
    assert columns == ("image_name", "target")
    assert rows == [(f"x/x_{i:04d}.jpg", str(i % 2)) for i in range(6)]


def test_two_columns_naming_files_are_still_asked_for(data):
    (data / "labels.csv").write_text("\n".join(["left,right,label"] + [f"x/x_{i:04d}.jpg,x/x_{5 - i:04d}.jpg,a"
                                                                       for i in range(6)]) + "\n")
    with pytest.raises(HeadstartError) as refused:
        scan_csv(data / "images", data / "labels.csv")
    assert str(refused.value) == (f"{data / 'labels.csv'}: cannot tell the path column among left, right, label; "
                                  f"pass --path-column NAME")
