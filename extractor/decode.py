"""Safe image decoding: content-sniffed allowlist (extractor.formats), byte and pixel limits, EXIF orientation, any
mode to RGB."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from extractor import dicom, formats, j2k
from extractor.errors import HeadstartError

T = TypeVar("T")

class DecodeError(HeadstartError):
    """One file could not become an image; the message is the recorded reason.

    `content` is False when the bytes themselves may be fine (unreadable file, file changed meanwhile).
    """

    def __init__(self, reason: str, content: bool = True, status: int = 422) -> None:
        super().__init__(reason)
        self.content, self.status = content, status

    def __reduce__(self):  # keep the attributes when crossing from a DataLoader worker process
        return DecodeError, (str(self), self.content, self.status)


@dataclass(frozen=True)
class Limits:
    """Refuse files and images above these sizes before decoding their pixels."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 64_000_000

    def signature(self) -> str:
        """What decided that content is bad: these limits, and the decoders (see formats.DECODE_RULES)."""
        return f"bytes<={self.max_bytes},pixels<={self.max_pixels},{formats.decoders()}"


def read_file(path: Path, limits: Limits, into: memoryview | None = None,
              stat: tuple[int, int] | None = None) -> bytes | memoryview:
    """Read a file's bytes, refusing empty and oversized files before reading them. `into`: a buffer to read them
    into when they fit (a view of it is returned): reading into memory used before is ~4x faster than into a
    fresh object of a photo's size, whose pages the kernel must first map. `stat`: the file's, just taken."""
    try:
        size = stat[0] if stat else path.stat().st_size
        if size == 0:
            raise DecodeError("empty file (0 bytes)")
        if size > limits.max_bytes:
            raise DecodeError(f"file is {size} bytes, above the {limits.max_bytes}-byte limit", status=413)
        if into is None or size > len(into):
            return path.read_bytes()
        with open(path, "rb", buffering=0) as fh:
            got = 0
            while got < size and (n := fh.readinto(into[got:size])):
                got += n
        return into[:got]
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}", content=False) from None


def file_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the file cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def read_verified(sha256: str, path: Path, stat: tuple[int, int] | None, limits: Limits,
                  into: memoryview | None = None) -> bytes | memoryview:
    """A member's bytes, checked to be the content its hash names. Unchanged size and mtime before and after the
    read (the hash cache's own rule) mean the same bytes; otherwise they are hashed again and refused if they
    differ. `into`: see read_file."""
    before = file_stat(path)
    data = read_file(path, limits, into, before)
    if stat is not None and before == stat == file_stat(path):
        return data
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DecodeError("file changed since it was hashed; run the extraction again", content=False)
    return data


def decode_job(job: tuple[str, Path, tuple[int, int] | None], limits: Limits,
               convert: Callable[[bytes], T]) -> tuple[T | None, DecodeError | None]:
    """`convert` applied to one member's verified bytes: (result, None), or (None, the reason). One bad file is a
    recorded failure, never a crashed job."""
    try:
        return convert(read_verified(*job, limits)), None
    except DecodeError as exc:
        return None, exc
    except Exception as exc:
        return None, DecodeError(f"unexpected decode error: {type(exc).__name__}: {exc}")


def open_image(data: bytes, limits: Limits) -> Image.Image:
    """Identify the format from content (allowlist) and check the pixel count from the header only."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"file is {len(data)} bytes, above the {limits.max_bytes}-byte limit", status=413)
    try:
        img = Image.open(io.BytesIO(data), formats=formats.ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb refused: {exc}") from None
    except dicom.Refused as exc:
        raise DecodeError(str(exc), status=exc.status) from None
    except Exception:
        reason, status = formats.refusal(data)
        raise DecodeError(reason, status=status) from None
    if img.format == "PPM" and bytes(data[:2]) in formats.PLAIN_NETPBM:
        raise DecodeError(formats.PLAIN_NETPBM_REFUSED, status=415)
    width, height = img.size
    if width * height > limits.max_pixels:
        raise DecodeError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels, "
            f"above the {limits.max_pixels}-pixel limit"
        )
    if width == 0 or height == 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    return img


BLOCK_PIXELS = 1 << 20  # wide images are converted this many pixels at a time (~13 MB of temporaries)


def _wide_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float images -> L, in blocks of rows: no whole-image float64 copy (an 8000x8000
    float image would need 512 MB for it). The arithmetic per pixel is the same as on the whole image."""
    if img.mode == "F":
        high = img.getextrema()[1]
        scale = 255.0 if max(float(high), 0.0) <= 1.0 else 1.0
    else:  # I;16 variants and I hold 16-bit samples
        scale = 255.0 / 65535.0
    width, height = img.size
    out = Image.new("L", img.size)
    rows = max(1, BLOCK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        block = np.asarray(img.crop((0, top, width, min(height, top + rows)))).astype(np.float64)
        block *= scale  # in place: the same products as `array * scale`, without another copy
        np.clip(block, 0, 255, out=block)
        out.paste(Image.fromarray(block.astype(np.uint8), "L"), (0, top))
    return out


# Peak bytes per pixel of decoding a mode and converting it to RGB at full size (beyond the file's bytes).
# Pillow keeps RGB (and RGBA, CMYK, ...) in 4 bytes a pixel.
_COST = {"1": 5, "L": 2, "P": 5, "RGB": 4, "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I;16": 4, "I;16L": 4,
         "I;16B": 4, "I;16N": 4, "I": 6, "F": 6}
_ALPHA_COST = 21  # RGBA decode + RGBA copy + white background + composite + RGB, 4 bytes each
# HEIF and AVIF decoders fill their own YCbCr and RGB planes before Pillow copies the pixels: peaks measured at
# 3000x2400, 8.7 (HEIC) and 9.5 (AVIF) bytes a pixel against an RGB PNG's 4.2
_CODEC_PLANES = 6
# OpenJPEG decodes each component into a 32-bit plane of its own (at the reduced size), Pillow copies them into its
# image, and the planes are freed before the conversion to RGB: peaks measured at 3000x2400, full size, 18.5 (RGB),
# 23.4 (RGBA), 7.8 (16-bit grey) and 5.8 (8-bit grey) bytes a pixel. Pillow's decoder and OpenJPEG each hold a copy
# of the codestream: at a reduced level, where the planes are small, those make the peak (2.0x the file's bytes).
_J2K_PLANE = 5
_J2K_IMAGE = {"L": 1, "P": 1, "I;16": 2}  # bytes a pixel of Pillow's image (4 for the others)


def decode_cost(img: Image.Image) -> int:
    """Bytes that decoding this opened (not yet loaded) image needs at its peak, from its header alone:
    its mode and size (after a JPEG draft or a JPEG 2000 reduction), transparency, and whether EXIF orientation makes
    a rotated copy."""
    width, height = j2k.reduced(img.size, img._reduce) if img.format == "JPEG2000" else img.size
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    per_pixel = img.cost_per_pixel if img.format == "DICOM" else _ALPHA_COST if alpha else _COST.get(img.mode, 8)
    try:
        rotated = img.getexif().get(0x0112, 1) not in (None, 1)
    except Exception:  # a broken EXIF block is not our estimate's problem
        rotated = False
    stream = 0
    if img.format == "JPEG2000":
        per_pixel = max(per_pixel, _J2K_IMAGE.get(img.mode, 4) + _J2K_PLANE * len(img.getbands()))
        stream = 2 * img.tile[0].args[4] if img.tile else 0  # the tile's arguments end with the stream's length
    elif img.format == "DICOM":
        stream = img.stream_bytes
    per_pixel += (4 if rotated else 0) + (_CODEC_PLANES if img.format in formats.PHONE_FORMATS else 0)
    blocks = BLOCK_PIXELS * 17 if img.mode.startswith("I") or img.mode == "F" else 0  # _wide_to_l's temporaries
    return int(width * height * per_pixel * 1.2) + blocks + stream + (8 << 20)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparency is composited on white, 16-bit is scaled, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _wide_to_l(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, limits: Limits, target: int | None = None) -> Image.Image:
    """Bytes -> upright RGB image. With `target`, JPEGs decode at a reduced scale still >= target."""
    img = open_image(data, limits)
    fmt = img.format
    try:
        if target:
            _draft(img, data, target)
        img.load()
        img = ImageOps.exif_transpose(img, in_place=True) or img  # in place: no copy when upright
        return to_rgb(img)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"corrupt or truncated {fmt} image: {exc}") from None


def probe(data: bytes, size: int, limits: Limits, full: bool = False) -> int:
    """The decode cost (bytes) of `preprocess(data, size, limits)`, from the header; raises DecodeError like it.
    `full`: of the device-decode path instead, which decodes at full size (no JPEG draft) and resizes a float
    copy (4 bytes a channel)."""
    img = open_image(data, limits)
    if full:
        width, height = img.size
        return decode_cost(img) + width * height * 3 * 4
    _draft(img, data, size)
    return decode_cost(img)


def _draft(img: Image.Image, data: bytes, size: int) -> None:
    """Decode no larger than needed, still at least `size` a side: a JPEG at a reduced DCT scale, a JPEG 2000 at a
    reduced wavelet level (a damaged header is left to the decode to report)."""
    if img.format == "JPEG" or img.format == "DICOM":  # (DICOM: its JPEG 2000 frames only)
        img.draft("RGB", (size, size))
    elif img.format == "JPEG2000":
        try:
            img.reduce = j2k.reduction(j2k.codestream(data), size)
        except ValueError:
            pass


def preprocess(data: bytes, size: int, limits: Limits) -> np.ndarray:
    """Bytes -> HWC uint8 array of size x size (the backbone's input, before normalisation).

    Greyscale (and 16-bit or float, once made L) is resized before it becomes RGB: the same pixels (RGB from L
    repeats the channel), a third of the memory."""
    img = open_image(data, limits)
    fmt = img.format
    try:
        _draft(img, data, size)
        img.load()
        img = ImageOps.exif_transpose(img, in_place=True) or img
        if img.mode.startswith("I") or img.mode == "F":
            img = _wide_to_l(img)
        if img.mode == "L":
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=3.0) if img.size != (size, size) else img
        img = to_rgb(img)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"corrupt or truncated {fmt} image: {exc}") from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


# For decoding on the device (extractor.devicedecode, and the Ray engine's decode tasks): what the CPU side
# judges of a file without importing torch.
ORIENTATION = 0x0112  # the EXIF tag


def jpeg_orientation(data: bytes, limits: Limits) -> tuple[str, int]:
    """("jpeg", EXIF orientation) for an RGB or greyscale JPEG within the pixel limit, judged from its head (or
    whole bytes); DecodeError otherwise. The orientation is read here, in the worker: torchvision's own EXIF
    handling reads it image by image in the decoding thread."""
    img = open_image(data, limits)  # format by content, pixel limit from the header only
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        raise DecodeError(f"{img.format} {img.mode}: not for the device decoder")
    orientation = img.getexif().get(ORIENTATION, 1)
    return "jpeg", orientation if orientation in range(1, 9) else 1


def prepare(data: bytes, size: int, limits: Limits) -> tuple[str, object]:
    """("jpeg", EXIF orientation) when the device can decode these bytes, else ("pixels", the CPU path's array)."""
    try:
        return jpeg_orientation(data, limits)
    except DecodeError:  # the CPU path decodes it, or gives the reason why not
        return "pixels", preprocess(data, size, limits)
