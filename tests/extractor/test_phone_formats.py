"""Phones' photo formats: HEIC/HEIF (iPhones' default) and AVIF are read like any other image. Before, a folder of
iPhone photos was refused with 'convert them to JPEG or PNG', and an AVIF too, though Pillow reads it."""

from __future__ import annotations

import io
import json

import numpy as np
import pillow_heif  # test-only: its encoder writes the HEIC files (headstart reads them with pi-heif)
import pytest
from PIL import Image

from extractor import formats
from extractor.decode import DecodeError, Limits, decode, preprocess
from extractor.folders import scan_folder
from tests.conftest import class_image, run_main

LIMITS = Limits()
ORIENTATION = 0x0112


def heic(img: Image.Image, orientation: int = 1, quality: int = 95) -> bytes:
    """An HEIC as a phone writes it: with an EXIF orientation, the encoder stores the rotation in the container
    (irot/imir) as iPhones do."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, format="HEIF", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def by_pillow(fmt: str):
    """An encoder of `fmt` through Pillow, with an EXIF orientation (AVIF and JPEG keep it in EXIF)."""
    def encode(img: Image.Image, orientation: int = 1) -> bytes:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        buf = io.BytesIO()
        img.save(buf, fmt, quality=95, exif=exif.tobytes())
        return buf.getvalue()

    return encode


avif, jpeg = by_pillow("AVIF"), by_pillow("JPEG")


def marked() -> Image.Image:
    """Landscape, a red band on the left and a green band at the top: any rotation or mirror moves them."""
    arr = np.full((48, 64, 3), 90, np.uint8)
    arr[:, :16] = (230, 20, 20)
    arr[:10, :] = (20, 230, 20)
    return Image.fromarray(arr)


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
def test_phone_formats_decode_to_the_pixels_of_the_same_photo_as_a_jpeg(encode):
    img = marked()
    got = decode(encode(img), LIMITS)
    assert got.mode == "RGB" and got.size == (64, 48)
    assert np.abs(np.asarray(got, np.int16) - np.asarray(img, np.int16)).mean() < 6  # lossy, at quality 95
    small = preprocess(encode(img), 32, LIMITS)
    assert small.shape == (32, 32, 3)
    assert np.abs(small.astype(np.int16) - preprocess(jpeg(img), 32, LIMITS)).mean() < 6


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_rotated_phone_photo_comes_out_upright_as_its_jpeg_does(encode, orientation):
    """A phone stores the photo as the sensor saw it and says how to turn it (HEIC: in the container, with the
    EXIF tag kept for other readers; AVIF: the EXIF tag). Turned once, never twice."""
    img = marked()
    expected = np.asarray(decode(jpeg(img, orientation), LIMITS), np.int16)
    got = np.asarray(decode(encode(img, orientation), LIMITS), np.int16)
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 6, orientation


def test_a_truncated_heic_is_named_as_one():
    data = heic(class_image(0, np.random.default_rng(0), (200, 150)))
    with pytest.raises(DecodeError, match=r"corrupt or truncated HEIC image") as caught:
        decode(data[:len(data) // 3], LIMITS)
    assert caught.value.status == 422


def test_an_avif_is_named_as_a_format_not_read_where_pillow_has_no_avif(monkeypatch):
    """A Pillow built without libavif cannot read AVIF: then it is named, with what to do."""
    monkeypatch.setattr(formats, "ALLOWED_FORMATS", tuple(f for f in formats.ALLOWED_FORMATS if f != "AVIF"))
    with pytest.raises(DecodeError, match="an AVIF photo, a format headstart does not read: convert it") as caught:
        decode(avif(marked()), LIMITS)
    assert caught.value.status == 415


def test_a_jpeg_xl_is_named_as_a_format_not_read():
    for data in (b"\xff\x0a" + b"\0" * 40, b"\0\0\0\x0cJXL \r\n\x87\n" + b"\0" * 40):
        with pytest.raises(DecodeError, match="a JPEG XL photo, a format headstart does not read: convert it"):
            decode(data, LIMITS)


def test_a_folder_of_iphone_photos_is_extracted_and_predicted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label, index in (("cat", 0), ("dog", 1)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            img = class_image(index, rng, (80, 60))
            (tmp_path / "data" / label / f"IMG_{i:04d}.HEIC").write_bytes(heic(img, orientation=6, quality=80))
            (tmp_path / "data" / label / f"IMG_{i:04d}.avif").write_bytes(avif(img))
    listing = scan_folder(tmp_path / "data")
    assert len(listing.items) == 24 and not listing.unsupported and not listing.skipped
    home = str(tmp_path / "home")
    code, out, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "phone", "--backbone", "tiny",
                              "--weights", "random", "--home", home, "--json")
    assert code == 0 and "does not read" not in err, err
    assert json.loads(out)["failed"] == 0
    assert run_main(capsys, "train", "--dataset", "phone", "--backbone", "tiny", "--name", "h", "--home", home)[0] == 0
    photo = tmp_path / "data" / "dog" / "IMG_0005.HEIC"
    code, out, err = run_main(capsys, "predict", "h", str(photo), "--json", "--home", home)
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["label"] in ("cat", "dog")
