"""Safe image decoding: content-sniffed allowlist, byte and pixel limits, EXIF orientation, any mode to RGB."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from extractor.errors import HeadstartError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Our own pixel check (below) is the limit; PIL's warning in between would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


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
        return f"bytes<={self.max_bytes},pixels<={self.max_pixels}"


def read_file(path: Path, limits: Limits) -> bytes:
    """Read a file's bytes, refusing empty and oversized files before reading them."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise DecodeError("empty file (0 bytes)")
        if size > limits.max_bytes:
            raise DecodeError(f"file is {size} bytes, above the {limits.max_bytes}-byte limit", status=413)
        return path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}", content=False) from None


def open_image(data: bytes, limits: Limits) -> Image.Image:
    """Identify the format from content (allowlist) and check the pixel count from the header only."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"file is {len(data)} bytes, above the {limits.max_bytes}-byte limit", status=413)
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb refused: {exc}") from None
    except Exception:
        head = data[:8].hex(" ")
        raise DecodeError(
            f"not a supported image (expected {', '.join(ALLOWED_FORMATS)} by content; first bytes {head})",
            status=415) from None
    width, height = img.size
    if width * height > limits.max_pixels:
        raise DecodeError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels, "
            f"above the {limits.max_pixels}-pixel limit"
        )
    if width == 0 or height == 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    return img


def _wide_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
    else:  # I;16 variants and I hold 16-bit samples
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(arr.astype(np.float64) * scale, 0, 255).astype(np.uint8), "L")


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
        if target and fmt == "JPEG":
            img.draft("RGB", (target, target))
        img.load()
        img = ImageOps.exif_transpose(img, in_place=True) or img  # in place: no copy when upright
        return to_rgb(img)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"corrupt or truncated {fmt} image: {exc}") from None


def preprocess(data: bytes, size: int, limits: Limits) -> np.ndarray:
    """Bytes -> HWC uint8 array of size x size (the backbone's input, before normalisation)."""
    img = decode(data, limits, target=size)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)
