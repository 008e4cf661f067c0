"""DICOM (.dcm): chest X-ray and dermatology datasets ship it (RSNA Pneumonia: `<patientId>.dcm` beside a CSV of
`patientId,...,Target`). Before, such a folder was 'N files were skipped (.dcm N)' and then 'holds no image'; a
DICOM file given to predict was 'not a supported image'. Now one frame, greyscale (8/16 bits, windowed as a viewer
shows it) or 8-bit RGB, uncompressed or JPEG Baseline (JPEG 2000: test_jpeg2000.py), is read; other kinds are
refused with what to do."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from extractor.decode import DecodeError, Limits, decode, preprocess, probe
from extractor.store import FeatureStore
from tests.conftest import class_image, dicom_bytes, run_main

LIMITS = Limits()
JPEG_BASELINE, JPEG_LOSSLESS, RLE = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5"


def grey(data: bytes) -> np.ndarray:
    img = decode(data, LIMITS)
    assert img.mode == "RGB"
    rgb = np.asarray(img)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    return rgb[..., 0]


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def ramp() -> np.ndarray:
    return (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 1).astype(np.uint16)  # 0 .. 3071, 12 bits


def test_a_16_bit_xray_is_shown_through_its_window():
    shown = grey(dicom_bytes(ramp(), WindowCenter=1024, WindowWidth=2048))  # 0 .. 2048 -> black .. white
    values = ramp()
    expected = np.clip(np.floor(values.astype(np.float64) * 255 / 2048 + 0.5), 0, 255)
    assert np.array_equal(shown, expected)
    assert shown[0, 0] == 0 and shown.max() == 255 and shown.flat[1024] == 128


def test_monochrome1_is_inverted_and_without_a_window_the_range_is_stretched():
    shown = grey(dicom_bytes(ramp() + 100, photometric="MONOCHROME1"))
    assert shown.flat[0] == 255 and shown.flat[-1] == 0  # the lowest value is white in MONOCHROME1
    assert abs(int(shown.flat[len(shown.flat) // 2]) - 128) <= 1


def test_the_window_is_in_rescaled_units():
    """CT: stored values are HU + 1024 (RescaleIntercept -1024); a soft-tissue window of 40/400 is in HU."""
    stored = np.array([[1024 + 40 - 200, 1024 + 40, 1024 + 40 + 200, 0]], np.uint16)
    shown = grey(dicom_bytes(stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400))
    assert shown.tolist() == [[0, 128, 255, 0]]


def test_a_multi_valued_window_uses_the_first():
    shown = grey(dicom_bytes(ramp(), WindowCenter=[1024, 500], WindowWidth=[2048, 100]))
    assert shown.flat[1024] == 128


@pytest.mark.parametrize("kind", ["grey8", "rgb"])
def test_8_bit_pixels_are_read_as_stored_like_the_same_png(kind):
    img = class_image(1, np.random.default_rng(0))
    img = img.convert("L") if kind == "grey8" else img
    data = dicom_bytes(np.asarray(img), photometric="MONOCHROME2" if kind == "grey8" else "RGB")
    png = io.BytesIO()
    img.save(png, "PNG")
    assert np.array_equal(np.asarray(decode(data, LIMITS)), np.asarray(decode(png.getvalue(), LIMITS)))
    assert np.array_equal(preprocess(data, 32, LIMITS), preprocess(png.getvalue(), 32, LIMITS))


@pytest.mark.parametrize(("mode", "photometric"), [("L", "MONOCHROME2"), ("RGB", "YBR_FULL_422")])
def test_a_jpeg_baseline_frame_decodes_as_the_jpeg_itself(mode, photometric):
    img = class_image(2, np.random.default_rng(1)).convert(mode)
    frame = jpeg(img)
    data = dicom_bytes(np.asarray(img), photometric=photometric, syntax=JPEG_BASELINE, encapsulated=frame)
    assert np.array_equal(np.asarray(decode(data, LIMITS)), np.asarray(decode(frame, LIMITS)))


def test_the_device_decoder_leaves_a_dicom_jpeg_frame_to_the_cpu_path():
    """--decode gpu: nvJPEG is given JPEG files; a DICOM's frame (windowed, inverted) takes the Pillow path."""
    from extractor.decode import prepare

    img = Image.new("L", (64, 48), 90)
    data = dicom_bytes(np.asarray(img), syntax=JPEG_BASELINE, encapsulated=jpeg(img))
    kind, pixels = prepare(data, 32, LIMITS)
    assert kind == "pixels" and np.array_equal(pixels, preprocess(data, 32, LIMITS))


def test_a_jpeg_frame_of_another_size_than_its_header_is_refused():
    """The header's size is what the pixel limit judged; a frame claiming less would decode more."""
    small = np.zeros((8, 8), np.uint8)
    data = dicom_bytes(small, syntax=JPEG_BASELINE, encapsulated=jpeg(Image.new("L", (640, 480))))
    with pytest.raises(DecodeError) as refused:
        decode(data, LIMITS)
    assert str(refused.value) == "corrupt or truncated DICOM image: its JPEG frame is 640x480, the header says 8x8"


@pytest.mark.parametrize(("syntax", "named"), [
    (JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"),
    (RLE, "RLE Lossless"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression"),
])
def test_compressions_not_read_are_refused_by_name_with_what_to_do(syntax, named):
    data = dicom_bytes(np.zeros((8, 8), np.uint16), syntax=syntax, encapsulated=b"\0" * 16)
    with pytest.raises(DecodeError) as refused:
        decode(data, LIMITS)
    assert refused.value.status == 415
    assert str(refused.value) == (f"a DICOM image stored as {named}, which headstart does not read: convert it to "
                                  f"uncompressed DICOM (GDCM: gdcmconv --raw IN OUT) or to PNG")


def test_several_frames_palette_colour_and_a_damaged_header_are_refused():
    with pytest.raises(DecodeError, match="a DICOM file of 3 frames"):
        decode(dicom_bytes(np.zeros((3 * 8, 8), np.uint8), NumberOfFrames=3), LIMITS)
    with pytest.raises(DecodeError, match="1 sample.s. per pixel, PALETTE COLOR, 8 bits: headstart reads"):
        decode(dicom_bytes(np.zeros((8, 8), np.uint8), photometric="PALETTE COLOR"), LIMITS)
    damaged = dicom_bytes(np.zeros((8, 8), np.uint8))[:140] + b"\xff" * 64
    with pytest.raises(DecodeError) as refused:
        decode(damaged, LIMITS)
    assert refused.value.status == 422 and str(refused.value).startswith("corrupt DICOM file: its header")


def test_pydicoms_notes_on_a_damaged_file_are_not_printed(tmp_path):
    """(In a fresh process: pytest resets the warning filters a module sets while tests are collected.)"""
    import subprocess
    import sys

    from tests.conftest import REPO

    cut = dicom_bytes(np.zeros((8, 8), np.uint8), syntax=JPEG_BASELINE, encapsulated=jpeg(Image.new("L", (8, 8))))
    (tmp_path / "cut.dcm").write_bytes(cut[:-40])
    probe_code = ("import sys; from pathlib import Path; from extractor.decode import decode, Limits, DecodeError\n"
                  "try:\n    decode(Path(sys.argv[1]).read_bytes(), Limits())\n"
                  "except DecodeError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", probe_code, str(tmp_path / "cut.dcm")], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("corrupt or truncated DICOM image") and done.stderr == "", done


def test_signed_8_bit_values_are_rendered_not_wrapped():
    stored = np.array([[-100, 0, 27]], np.int8)
    shown = grey(dicom_bytes(stored.view(np.uint8), PixelRepresentation=1))
    assert shown.tolist() == [[0, 201, 255]]  # stretched from -100 to 27 (before: -100 read as 156)


def test_a_header_value_of_the_wrong_kind_is_a_damaged_file():
    data = dicom_bytes(np.zeros((4, 4), np.uint8), NumberOfFrames=2).replace(b"IS\x02\x002 ", b"IS\x02\x00x ")
    assert b"IS\x02\x00x " in data
    with pytest.raises(DecodeError) as refused:
        decode(data, LIMITS)
    assert refused.value.status == 422 and str(refused.value).startswith("corrupt DICOM file: ")


def test_the_pixel_limit_is_judged_from_the_header_before_any_pixel():
    data = dicom_bytes(np.zeros((4, 4), np.uint16))  # pixels of 4x4, a header saying 10000x10000
    big = data.replace(b"(\x00\x10\x00US\x02\x00\x04\x00", b"(\x00\x10\x00US\x02\x00\x10\x27")
    big = big.replace(b"(\x00\x11\x00US\x02\x00\x04\x00", b"(\x00\x11\x00US\x02\x00\x10\x27")
    assert big != data
    with pytest.raises(DecodeError, match="decompression bomb refused: 10000x10000 = 100000000 pixels"):
        probe(big, 150, LIMITS)
    with pytest.raises(DecodeError) as cut:
        decode(dicom_bytes(np.zeros((4, 4), np.uint16)).replace(b"(\x00\x10\x00US\x02\x00\x04\x00",
                                                                b"(\x00\x10\x00US\x02\x00\x08\x00"), LIMITS)
    assert str(cut.value).startswith("corrupt or truncated DICOM image")  # more rows than pixels: not read past


def test_an_xray_dataset_as_it_ships_is_extracted_trained_and_scored(tmp_path, capsys):
    """RSNA Pneumonia's layout: `<patientId>.dcm` files, a CSV of patientId, box columns and Target (a patient with
    two boxes has two rows); the ids have no suffix. One file has no suffix at all, as PACS exports name them."""
    rng = np.random.default_rng(0)
    data, rows = tmp_path / "stage_2_train_images", ["patientId,x,y,width,height,Target"]
    data.mkdir()
    for i in range(12):
        target = i % 2
        pixels = (np.asarray(class_image(target, rng).convert("L")).astype(np.uint16) * 16)
        name = f"p{i:03d}" + ("" if i == 11 else ".dcm")
        (data / name).write_bytes(dicom_bytes(pixels, WindowCenter=2048, WindowWidth=4096))
        rows += [f"p{i:03d},10,10,5,5,{target}"] * (2 if target else 1)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    home = ["--home", str(tmp_path / "home")]
    code, out, err = run_main(capsys, "extract", str(data), "--dataset", "xray", "--labels",
                              str(tmp_path / "labels.csv"), "--backbone", "tiny", "--weights", "random", "--json",
                              *home)  # patientId: the column whose values name files (tests/extractor/test_csv_columns)
    assert code == 0, err
    result = json.loads(out)
    assert result["extracted"] == 12 and result["failed"] == 0
    labels = sorted(label for _, _, label, _ in FeatureStore(tmp_path / "home").catalog.members("xray"))
    assert labels == ["0"] * 6 + ["1"] * 6
    assert run_main(capsys, "train", "--dataset", "xray", "--backbone", "tiny", "--name", "h", *home)[0] == 0
    code, out, err = run_main(capsys, "predict", "h", str(data / "p003.dcm"), str(data / "p011"), "--json", *home)
    assert code == 0, err
    rows = json.loads(out)
    assert [row["image"] for row in rows] == [str(data / "p003.dcm"), str(data / "p011")]
    assert all(row["top"] and "error" not in row for row in rows), rows
