"""Safe decoding: allowlist by content, modes to RGB, EXIF orientation, and every kind of bad file."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extractor.decode import DecodeError, Limits, decode, preprocess, probe, read_file, to_rgb

LIMITS = Limits()


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(color=(200, 30, 30), size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowlisted_formats_decode_to_rgb(fmt):
    img = decode(encode(solid(), fmt), LIMITS)
    assert img.mode == "RGB" and img.size == (40, 30)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 150 and g < 80 and b < 80


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(solid(), "PNG"))  # a PNG named .jpg
    assert decode(read_file(path, LIMITS), LIMITS).size == (40, 30)
    tga = encode(solid(), "TGA")  # PIL could decode it, but it is not on the allowlist
    with pytest.raises(DecodeError, match="not a supported image"):
        decode(tga, LIMITS)


@pytest.mark.parametrize(("brand", "name"), [(b"heic", "HEIC"), (b"mif1", "HEIF"), (b"avif", "AVIF")])
def test_a_damaged_phone_photo_is_named_by_its_format(brand, name):
    """Before: 'not a supported image (expected JPEG, ...; first bytes 00 00 00 18 66 74 79 70)' for an iPhone
    photo; the ISO-BMFF box names its format (tests/extractor/test_phone_formats.py: the formats not read)."""
    data = struct.pack(">I", 24) + b"ftyp" + brand + b"\0\0\0\0" + brand + b"mif1" + b"\0" * 64
    with pytest.raises(DecodeError, match=f"corrupt or truncated {name} image: its header cannot be read"):
        decode(data, LIMITS)


def test_gif_first_frame():
    frames = [solid((250, 0, 0)), solid((0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, _, b = np.asarray(decode(buf.getvalue(), LIMITS)).reshape(-1, 3).mean(axis=0)
    assert r > 200 and b < 50


@pytest.mark.parametrize("mode,color,fmt,expected", [
    ("L", 128, "PNG", (128, 128, 128)),
    ("LA", (128, 0), "PNG", (255, 255, 255)),  # fully transparent -> white background
    ("RGBA", (10, 20, 30, 255), "PNG", (10, 20, 30)),
    ("RGBA", (10, 20, 30, 0), "PNG", (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), "JPEG", (255, 0, 0)),
    ("1", 1, "PNG", (255, 255, 255)),
])
def test_modes_become_rgb(mode, color, fmt, expected):
    img = decode(encode(solid(color, mode=mode), fmt), LIMITS)
    assert img.mode == "RGB"
    np.testing.assert_allclose(np.asarray(img).reshape(-1, 3).mean(axis=0), expected, atol=12)


def test_palette_with_transparency_and_16_bit():
    pal = solid((0, 200, 0)).convert("P")
    index = pal.getpixel((0, 0))  # the palette entry of the green pixels becomes transparent
    assert decode(encode(pal, "PNG", transparency=index), LIMITS).getpixel((0, 0)) == (255, 255, 255)
    wide = Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))
    assert decode(encode(wide, "PNG"), LIMITS).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16))
    assert abs(decode(encode(half, "PNG"), LIMITS).getpixel((0, 0))[0] - 128) <= 1


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    upright = decode(encode(img, "JPEG", exif=exif, quality=95), LIMITS)
    assert upright.size == (20, 40)
    top = np.asarray(upright)[:10].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200  # the red half ends up on top


def test_truncated_zero_byte_and_garbage_are_refused_with_reasons(tmp_path):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(DecodeError, match="corrupt or truncated JPEG"):
        decode(data[: len(data) // 2], LIMITS)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        read_file(empty, LIMITS)
    with pytest.raises(DecodeError, match="not a supported image"):
        decode(b"<html>not an image</html>", LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
@pytest.mark.parametrize("keep", [40, 0.5])
@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's, dropped by the product (next test)
def test_a_file_cut_short_is_named_by_its_format(fmt, keep):
    """Before: a JPEG cut after its first 40 bytes (as an interrupted copy or download leaves it; a WebP cut at
    half) was 'not a supported image (expected JPEG, PNG, ...; first bytes ff d8 ff e0 ...)', its own format's
    signature in the message."""
    noise = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(DecodeError) as caught:
        preprocess(data[: keep if isinstance(keep, int) else len(data) // 2], 32, LIMITS)
    assert str(caught.value).startswith(f"corrupt or truncated {fmt} image"), caught.value


def test_pil_notes_on_a_damaged_file_are_not_printed(tmp_path):
    """Before: a TIFF cut after 40 bytes printed PIL's 'UserWarning: Corrupt EXIF data' with PIL's source path
    into the extract's output, from each worker that met one. (A fresh process: pytest drops the warning filters
    that modules set while they are collected.)"""
    import subprocess
    import sys

    path = tmp_path / "cut.tiff"
    path.write_bytes(encode(solid(), "TIFF")[:40])
    code = (f"from pathlib import Path; from extractor.decode import Limits, preprocess, DecodeError\n"
            f"try: preprocess(Path({str(path)!r}).read_bytes(), 32, Limits())\n"
            f"except DecodeError as exc: print(exc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("corrupt or truncated TIFF image") and done.stderr == "", done


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in a few dozen bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_an_error_within_a_second():
    start = time.monotonic()
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(png_header_only(60000, 60000), LIMITS)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(png_header_only(9000, 9000), Limits(max_pixels=1_000_000))
    assert time.monotonic() - start < 1.0


def test_byte_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(solid(), "PNG"))
    with pytest.raises(DecodeError, match="above the 50-byte limit"):
        read_file(path, Limits(max_bytes=50))


def test_preprocess_shape_and_jpeg_draft():
    big = Image.fromarray(np.random.default_rng(1).integers(0, 255, (768, 1024, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG"):
        arr = preprocess(encode(big, fmt), 150, LIMITS)
        assert arr.shape == (150, 150, 3) and arr.dtype == np.uint8


def _old_preprocess(data: bytes, size: int) -> np.ndarray:
    """The first release's path, kept as the reference: whole-image float64 for wide modes, RGB before resize."""
    from PIL import ImageOps

    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (size, size))
    img.load()
    img = ImageOps.exif_transpose(img, in_place=True) or img
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img)
        scale = (255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0) if img.mode == "F" else 255.0 / 65535.0
        img = Image.fromarray(np.clip(arr.astype(np.float64) * scale, 0, 255).astype(np.uint8), "L")
    img = to_rgb(img)
    return np.asarray(img.resize((size, size), Image.BILINEAR, reducing_gap=3.0) if img.size != (size, size)
                      else img, dtype=np.uint8)


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_memory_light_preprocessing_gives_the_same_pixels_in_every_mode():
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 255, (301, 457, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    cases = {
        "jpeg": _encoded(rgb, "JPEG", quality=90), "jpeg-rotated": _encoded(rgb, "JPEG", exif=exif),
        "png-L": _encoded(rgb.convert("L"), "PNG"), "png-RGBA": _encoded(rgb.convert("RGBA"), "PNG"),
        "png-P": _encoded(rgb.convert("P"), "PNG", transparency=3), "jpeg-CMYK": _encoded(rgb.convert("CMYK"), "JPEG"),
        "png-16": _encoded(Image.fromarray((rng.random((301, 457)) * 65535).astype(np.uint16)), "PNG"),
        "tiff-F": _encoded(Image.fromarray(rng.random((301, 457)).astype(np.float32)), "TIFF"),
        "tiff-F-wide": _encoded(Image.fromarray((rng.random((301, 457)) * 900).astype(np.float32)), "TIFF"),
        "tiff-I": _encoded(Image.fromarray((rng.random((301, 457)) * 70000).astype(np.int32)), "TIFF"),
        "bmp-1": _encoded(rgb.convert("1"), "BMP"),
    }
    for name, data in cases.items():
        for size in (64, 150):
            assert np.array_equal(preprocess(data, size, Limits()), _old_preprocess(data, size)), (name, size)


PEAK_PROBE = """
import sys
from pathlib import Path
from extractor.decode import Limits, preprocess
import pydicom.encaps, pydicom.pixels  # (17 MB, imported once a process on its first DICOM file: not a decode's cost)
def hwm():
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")).split()[1])
data = Path(sys.argv[1]).read_bytes()
before = hwm()
preprocess(data, 150, Limits())
print((hwm() - before) * 1024)
"""


def _phone(img: Image.Image, fmt: str) -> bytes:
    import pillow_heif  # test-only: the HEIC encoder

    if fmt == "AVIF":
        return _encoded(img, "AVIF", quality=50)
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, format="HEIF", quality=50)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["float-tiff", "png16", "rgba-png", "rgb-png", "heic", "rgba-heic", "avif", "rgb-ppm",
                                  "pgm16", "dicom16", "dicom8", "dicom-rgb", "dicom-jpeg-rgb", "j2k-rgb", "j2k-grey16",
                                  "j2k-rgb-reduced", "dicom-j2k16", "dicom-j2k-rgb"])
def test_decode_cost_is_read_from_the_header_and_bounds_the_real_peak(tmp_path, kind):
    import subprocess
    import sys

    from tests.conftest import REPO

    side = (2400, 3000)
    img = {"float-tiff": lambda: Image.fromarray(np.full(side, 0.5, np.float32)),
           "png16": lambda: Image.fromarray(np.full(side, 1000, np.uint16)),
           "rgba-png": lambda: Image.new("RGBA", side[::-1], (10, 20, 30, 128)),
           "rgb-png": lambda: Image.new("RGB", side[::-1], (10, 20, 30)),
           "heic": lambda: Image.new("RGB", side[::-1], (10, 20, 30)),
           "rgba-heic": lambda: Image.new("RGBA", side[::-1], (10, 20, 30, 128)),
           "avif": lambda: Image.new("RGB", side[::-1], (10, 20, 30)),
           "rgb-ppm": lambda: Image.new("RGB", side[::-1], (10, 20, 30)),
           "pgm16": lambda: Image.fromarray(np.full(side, 1000, np.uint16))}.get(kind, lambda: None)()
    if kind.endswith(("heic", "avif")):  # their decoders' own planes (before: ~0.65 of the peak was counted)
        data = _phone(img, "AVIF" if kind == "avif" else "HEIF")
    elif kind in ("rgb-ppm", "pgm16"):
        data = _encoded(img, "PPM")
    elif kind.startswith("dicom"):
        data = _dicom(kind, side)
    elif kind.startswith("j2k"):  # one level (decoded at full size) unless reduced: 2x the file's bytes then
        data = _j2k(kind, side)
    else:
        data = _encoded(img, "TIFF", compression="tiff_adobe_deflate") if kind == "float-tiff" else _encoded(img, "PNG")
    (tmp_path / "img").write_bytes(data)
    cost = probe(data, 150, Limits())  # from the header alone
    peak = int(subprocess.run([sys.executable, "-c", PEAK_PROBE, str(tmp_path / "img")], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout)
    assert peak < cost < 2 * peak, (kind, peak, cost)  # bounds what the decode really took, not wildly above it


def _dicom(kind: str, side: tuple[int, int]) -> bytes:
    from tests.conftest import dicom_bytes

    noise = np.random.default_rng(0).integers(0, 255, (*side, 3), dtype=np.uint8)  # (compresses as X-rays do not)
    if kind == "dicom16":
        return dicom_bytes(noise[..., 0].astype(np.uint16) * 16, WindowCenter=2048, WindowWidth=4096)
    if kind == "dicom8":
        return dicom_bytes(noise[..., 0])
    if kind == "dicom-rgb":
        return dicom_bytes(noise, photometric="RGB")
    if kind == "dicom-j2k16":
        return dicom_bytes(noise[..., 0].astype(np.uint16) * 16, syntax="1.2.840.10008.1.2.4.90",
                           encapsulated=_j2k("j2k-grey16", side), WindowCenter=2048, WindowWidth=4096)
    if kind == "dicom-j2k-rgb":
        return dicom_bytes(noise, photometric="YBR_RCT", syntax="1.2.840.10008.1.2.4.90",
                           encapsulated=_j2k("j2k-rgb", side))
    return dicom_bytes(noise, photometric="YBR_FULL_422", syntax="1.2.840.10008.1.2.4.50",
                       encapsulated=_encoded(Image.fromarray(noise), "JPEG", quality=90))


def _j2k(kind: str, side: tuple[int, int]) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (*side, 3), dtype=np.uint8)
    img = Image.fromarray(noise[..., 0].astype(np.uint16) * 16) if kind == "j2k-grey16" else Image.fromarray(noise)
    return _encoded(img, "JPEG2000", **({} if kind.endswith("reduced") else {"num_resolutions": 1}))


def test_jpeg_cost_counts_its_reduced_decode():
    img = Image.new("RGB", (4000, 3000))
    full = probe(_encoded(img, "PNG"), 150, Limits())
    assert probe(_encoded(img, "JPEG"), 150, Limits()) < full / 4  # decoded at 1/8 scale (plus a fixed overhead)


def test_importing_decode_loads_every_allowed_plugin_so_forked_workers_import_nothing():
    """Decode workers are forked from a process that imported extractor.decode: opening any allowed format there
    must not import Pillow plugins (each worker did, ~0.25 s at the start of every run). DICOM is left out: its
    plugin imports pydicom on the first DICOM file (~0.25 s), so runs without one never pay it."""
    import subprocess
    import sys

    probe = (
        "import io, sys\n"
        "import extractor.decode as d\n"
        "import extractor.formats as f\n"
        "from PIL import Image\n"
        "assert set(f.ALLOWED_FORMATS) <= set(Image.OPEN), sorted(Image.OPEN)\n"
        "files = []\n"
        "for fmt in set(f.ALLOWED_FORMATS) - {'HEIF', 'DICOM'}:\n"
        "    buf = io.BytesIO(); Image.new('RGB', (8, 8)).save(buf, fmt); files.append(buf.getvalue())\n"
        "import pillow_heif\n"  # (the encoder of HEIF: pi-heif only reads)
        "buf = io.BytesIO(); pillow_heif.from_pillow(Image.new('RGB', (8, 8))).save(buf, format='HEIF')\n"
        "files.append(buf.getvalue())\n"
        "before = set(sys.modules)\n"
        "for data in files:\n"
        "    d.preprocess(data, 4, d.Limits())\n"
        "print(sorted(set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout
