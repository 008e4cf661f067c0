"""Netpbm images (PPM, PGM, PBM): the German Traffic Sign benchmark (GTSRB, a classic of transfer-learning tutorials)
ships as .ppm in class folders with a GT-00000.csv of `Filename;...;ClassId` each; the AT&T face database as .pgm.
Before, such a folder was 'N files without an image suffix were skipped (.ppm ...)' and then 'holds no image'. The
binary forms (P4, P5, P6) are read; the plain-text ones (P1-P3) are refused with a reason: Pillow decodes their text
in Python, 7.8 s for a 64 MiB P3 here, too slow to take from anyone who can send a file."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from extractor.decode import DecodeError, Limits, decode, preprocess
from extractor.labelcsv import scan_csv
from extractor.store import FeatureStore
from tests.conftest import class_image, run_main

LIMITS = Limits()


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("mode", "magic"), [("RGB", b"P6"), ("L", b"P5"), ("1", b"P4")])
def test_binary_netpbm_decodes_to_the_pixels_of_the_same_png(mode, magic):
    img = class_image(1, np.random.default_rng(0)).convert(mode)
    data = encoded(img, "PPM")
    assert data[:2] == magic
    assert np.array_equal(np.asarray(decode(data, LIMITS)), np.asarray(decode(encoded(img, "PNG"), LIMITS)))
    assert np.array_equal(preprocess(data, 32, LIMITS), preprocess(encoded(img, "PNG"), 32, LIMITS))


def test_a_16_bit_pgm_is_scaled_as_a_16_bit_png():
    wide = Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21)
    pgm = encoded(wide, "PPM")
    assert pgm.startswith(b"P5\n64 48\n65535\n")
    assert np.array_equal(preprocess(pgm, 32, LIMITS), preprocess(encoded(wide, "PNG"), 32, LIMITS))


@pytest.mark.parametrize("magic", [b"P1", b"P2", b"P3"])
def test_plain_text_netpbm_is_refused_at_once_with_what_to_do(magic):
    channels = {b"P1": 1, b"P2": 1, b"P3": 3}[magic]
    width, height = 4000, 2000  # 8 MP of text samples: seconds for Pillow's Python decoder
    text = magic + f"\n{width} {height}\n".encode() + (b"" if magic == b"P1" else b"255\n") + \
        b"0 " * (width * height * channels)
    start = time.perf_counter()
    with pytest.raises(DecodeError) as refused:
        decode(text, Limits(max_bytes=1 << 30))
    assert time.perf_counter() - start < 0.5
    assert refused.value.status == 415
    assert str(refused.value) == ("a plain-text (ASCII) Netpbm image (PBM, PGM or PPM), a form headstart does not "
                                  "read: convert it to binary Netpbm or PNG (netpbm's pnmtopnm, or ImageMagick)")


def gtsrb(root, classes: int = 2, per_class: int = 5) -> dict[str, int]:
    """GTSRB's layout: Final_Training/Images/<class id>/<track>_<n>.ppm beside GT-<class id>.csv, and a test folder
    of .ppm with GT-final_test.csv giving each file's ClassId among other columns, separated by semicolons."""
    rng = np.random.default_rng(0)
    train = root / "Final_Training" / "Images"
    for c in range(classes):
        folder = train / f"{c:05d}"
        folder.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for i in range(per_class):
            class_image(c, rng).save(folder / f"00000_{i:05d}.ppm")
            rows.append(f"00000_{i:05d}.ppm;64;48;5;5;58;42;{c}")
        (folder / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    test = root / "Final_Test" / "Images"
    test.mkdir(parents=True)
    truth = {}
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(classes * 2):
        class_image(i % classes, rng).save(test / f"{i:05d}.ppm")
        truth[f"{i:05d}.ppm"] = i % classes
        rows.append(f"{i:05d}.ppm;64;48;5;5;58;42;{i % classes}")
    (root / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return truth


def test_the_traffic_sign_benchmark_is_extracted_trained_and_scored_as_it_unpacks(tmp_path, capsys):
    truth = gtsrb(tmp_path / "GTSRB")
    home = ["--home", str(tmp_path / "home")]
    model = ["--backbone", "tiny", "--weights", "random"]
    code, out, err = run_main(capsys, "extract", str(tmp_path / "GTSRB" / "Final_Training" / "Images"),
                              "--dataset", "signs", *model, "--json", *home)
    assert code == 0, err
    result = json.loads(out)
    assert result["extracted"] == 10 and result["failed"] == 0
    said = " ".join(result["warnings"])
    assert "(.csv 2)" in said and ".ppm" not in said, said  # the per-class CSVs are the only files skipped
    labels = {label for _, _, label, _ in FeatureStore(tmp_path / "home").catalog.members("signs")}
    assert labels == {"00000", "00001"}
    listing = scan_csv(tmp_path / "GTSRB" / "Final_Test" / "Images", tmp_path / "GTSRB" / "GT-final_test.csv")
    assert listing.columns == ("Filename", "ClassId")  # found among eight columns by its name
    assert {item.rel: item.label for item in listing.items} == {k: str(v) for k, v in truth.items()}
    assert run_main(capsys, "train", "--dataset", "signs", "--backbone", "tiny", "--name", "h", *home)[0] == 0
    code, out, err = run_main(capsys, "predict", "h", str(tmp_path / "GTSRB" / "Final_Test" / "Images"), "--json",
                              *home)
    assert code == 0, err
    assert len(json.loads(out)) == 4 and all("top" in row for row in json.loads(out))
