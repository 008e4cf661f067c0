"""JPEG 2000: `.jp2`/`.j2k` files (archives, microscopy, remote sensing) and DICOM's JPEG 2000 frames (mammography and
X-ray archives store most of their images so). Before, a folder of them was 'N files were skipped (.jp2 N)', a file
given to predict was 'not a supported image', and a JPEG 2000 DICOM was refused by its transfer syntax. Now they are
read, at the most reduced wavelet level still at least the input size (the JPEG draft's counterpart)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extractor import j2k
from extractor.decode import DecodeError, Limits, decode, preprocess, probe
from extractor.store import FeatureStore
from tests.conftest import dicom_bytes, make_folder, run_main

LIMITS = Limits()
J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"


def encoded(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG2000", **options)
    return buf.getvalue()


def photo(width: int = 1200, height: int = 900) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x // 7 + y // 5) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def xray(height: int = 600, width: int = 500) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((np.sin(x / 40) + np.cos(y / 60)) * 1000 + 2048).clip(0, 4095).astype(np.uint16)


def test_a_jp2_photo_is_read_at_a_reduced_level_still_at_least_the_input_size():
    data = encoded(photo())  # 5 wavelet levels (Pillow's default)
    assert j2k.codestream(data) == j2k.Codestream((1200, 900), 8, False, 5)
    expected = Image.open(io.BytesIO(data))
    expected.reduce = 2  # 300x225: a third level would give 150x112, below 150
    expected.load()
    expected = np.asarray(expected.resize((150, 150), Image.BILINEAR, reducing_gap=3.0))
    assert np.array_equal(preprocess(data, 150, LIMITS), expected)
    full = np.asarray(decode(data, LIMITS).resize((150, 150), Image.BILINEAR, reducing_gap=3.0))
    assert np.abs(full.astype(int) - expected).mean() < 3  # the same picture
    large = photo(2400, 1800)
    assert probe(encoded(large), 150, LIMITS) < probe(encoded(large, num_resolutions=1), 150, LIMITS) / 4


def test_a_codestream_with_few_levels_is_reduced_by_those_only():
    data = encoded(photo(2400, 1800), no_jp2=True, num_resolutions=2)  # a bare .j2k codestream of one level
    assert j2k.codestream(data).levels == 1 and j2k.reduction(j2k.codestream(data), 150) == 1
    img = Image.open(io.BytesIO(data))
    img.reduce = 1
    img.load()  # 1200x900, which Pillow's resize first reduces by 2 (the plugin's `reduce` shadows Image.reduce)
    expected = np.asarray(img.resize((150, 150), Image.BILINEAR, reducing_gap=3.0))
    assert np.array_equal(preprocess(data, 150, LIMITS), expected)  # without the cap: 'broken data stream'


def test_16_bit_greyscale_decodes_as_the_same_16_bit_png():
    grey = Image.fromarray(xray())
    png = io.BytesIO()
    grey.save(png, "PNG")
    assert np.array_equal(np.asarray(decode(encoded(grey), LIMITS)), np.asarray(decode(png.getvalue(), LIMITS)))


def test_a_component_with_fewer_levels_bounds_the_reduction():
    data = encoded(photo(), no_jp2=True)  # SOC, SIZ (3 components), COD (5 levels), ...
    siz_end = 4 + int.from_bytes(data[4:6], "big")
    coc = b"\xff\x53\x00\x09" + bytes([1, 0, 2, 4, 4, 0, 0])  # component 1: 2 levels, 64x64 code blocks
    assert j2k.codestream(data[:siz_end] + coc + data[siz_end:]) == j2k.Codestream((1200, 900), 8, False, 2)


@pytest.mark.parametrize("cut", [40, 300])
def test_a_damaged_jpeg_2000_is_a_recorded_failure(cut):
    data = encoded(photo(), no_jp2=True)[:cut]
    with pytest.raises(DecodeError) as refused:
        preprocess(data, 150, LIMITS)
    assert refused.value.status == 422 and "JPEG2000" in str(refused.value)
    with pytest.raises(ValueError):
        j2k.codestream(data[:20])


def test_a_folder_of_jp2_and_j2k_files_is_extracted(tmp_path, capsys):
    written = make_folder(tmp_path / "data", {"a": 3, "b": 3}, fmt="PNG")
    for i, path in enumerate(written):  # the same pictures as JPEG 2000
        suffix, options = (".jp2", {}) if i % 2 else (".j2k", {"no_jp2": True})
        path.with_suffix(suffix).write_bytes(encoded(Image.open(path).convert("RGB"), **options))
        path.unlink()
    assert sorted(p.suffix for p in (tmp_path / "data").rglob("*.*")) == [".j2k"] * 3 + [".jp2"] * 3
    code, out, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                              "--weights", "random", "--home", str(tmp_path / "home"), "--json")
    result = json.loads(out)
    assert code == 0 and (result["extracted"], result["failed"], result["skipped"]) == (6, 0, 0), err


def test_a_jpeg_2000_dicom_shows_the_pixels_of_the_same_uncompressed_dicom():
    pixels = xray()
    window = {"WindowCenter": 1800, "WindowWidth": 2400, "RescaleIntercept": -100}
    plain = dicom_bytes(pixels, **window)
    compressed = dicom_bytes(pixels, syntax=J2K_LOSSLESS, encapsulated=encoded(Image.fromarray(pixels), no_jp2=True),
                             **window)
    assert np.array_equal(np.asarray(decode(compressed, LIMITS)), np.asarray(decode(plain, LIMITS)))
    reduced = preprocess(compressed, 150, LIMITS)  # drafted: 500x600 -> 250x300, then resized
    assert np.abs(reduced.astype(int) - preprocess(plain, 150, LIMITS)).mean() < 3
    assert probe(compressed, 150, LIMITS) < probe(plain, 150, LIMITS)


def test_signed_jpeg_2000_samples_are_read_as_stored():
    """pydicom's own test files: the same signed 16-bit MR slice uncompressed and as a JPEG 2000 frame. Pillow shifts
    signed samples up by half their range; unshifted, this MR's window showed a white square."""
    import pydicom

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    plain, compressed = ((files / name).read_bytes() for name in ("MR_small.dcm", "MR_small_jp2klossless.dcm"))
    shown = np.asarray(decode(compressed, LIMITS))
    assert shown.std() > 10 and np.array_equal(shown, np.asarray(decode(plain, LIMITS)))


def test_colour_jpeg_2000_dicom_is_read_as_rgb():
    rgb = np.asarray(photo(320, 240))
    data = dicom_bytes(rgb, photometric="YBR_RCT", syntax=J2K_LOSSLESS, encapsulated=encoded(Image.fromarray(rgb)))
    assert np.array_equal(np.asarray(decode(data, LIMITS)), rgb)


def test_a_jpeg_2000_frame_of_another_size_than_its_header_is_refused():
    data = dicom_bytes(np.zeros((8, 8), np.uint16), syntax=J2K,
                       encapsulated=encoded(Image.fromarray(xray()), no_jp2=True))
    with pytest.raises(DecodeError) as refused:
        preprocess(data, 150, LIMITS)
    assert refused.value.status == 422
    assert str(refused.value) == "corrupt or truncated DICOM image: its JPEG 2000 frame is 500x600, the header says 8x8"


def test_a_jpeg_2000_dicom_dataset_is_extracted_and_predicted(tmp_path, capsys):
    home = ["--home", str(tmp_path / "home")]
    for i in range(8):
        label = "a" if i % 2 else "b"
        pixels = xray(96, 80) // (1 + i % 2)
        frame = encoded(Image.fromarray(pixels), no_jp2=True)
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / label / f"{i}.dcm").write_bytes(dicom_bytes(pixels, syntax=J2K_LOSSLESS,
                                                                        encapsulated=frame))
    code, out, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "x", "--backbone", "tiny",
                              "--weights", "random", *home, "--json")
    assert code == 0 and json.loads(out)["extracted"] == 8, err
    assert len(FeatureStore(tmp_path / "home").catalog.members("x")) == 8
    assert run_main(capsys, "train", "--dataset", "x", "--name", "h", *home)[0] == 0
    code, out, err = run_main(capsys, "predict", "h", str(tmp_path / "data" / "a" / "1.dcm"), *home, "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["image"] == str(tmp_path / "data" / "a" / "1.dcm") and row["top"] and "error" not in row
