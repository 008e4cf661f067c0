"""DICOM images (`.dcm`: chest X-rays, dermatology, pathology) opened as Pillow opens any format: the header alone
gives the size and mode (so the pixel limit and the decode cost are judged before any pixel is decoded), and the
pixels are rendered to 8 bits as a viewer first shows them: the stored values rescaled (RescaleSlope/Intercept),
windowed by the file's first window (WindowCenter/WindowWidth; none: 8-bit values as stored, wider ones stretched
from the darkest pixel to the brightest), MONOCHROME1 inverted (0 is white there). Colour is read as RGB.

Read: one frame, greyscale or RGB, 8 or 16 bits, uncompressed or JPEG Baseline. The JPEG frame is decoded by
Pillow's JPEG decoder and must have the size the header says. Other compressions (JPEG Lossless, JPEG-LS,
JPEG 2000, RLE, deflate) are refused with what to do: their decoders are not in this image (pydicom would need
pylibjpeg or GDCM), or would inflate a crafted file without bound. pydicom (pure Python) parses the header; it is
imported on the first DICOM file only (~0.25 s)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile

# pydicom's notes on damaged files ('End of file reached before delimiter ...'), with its source lines, from each
# decode worker that met one: such a file is refused or read all the same, so they are dropped (as PIL's are)
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")

MAGIC = b"DICM"  # after a 128-byte preamble
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422"}
BLOCK_PIXELS = 1 << 20  # rendered this many at a time
CONVERT = "convert it to uncompressed DICOM (GDCM: gdcmconv --raw IN OUT) or to PNG"


class Refused(Exception):
    """A DICOM file of a kind not read (the reason is the message), or one whose header is damaged."""

    def __init__(self, reason: str, status: int = 415) -> None:
        super().__init__(reason)
        self.status = status


def _header(fp):
    import pydicom

    try:
        return pydicom.dcmread(fp, stop_before_pixels=True)
    except Exception as exc:
        raise Refused(f"corrupt DICOM file: its header cannot be read ({type(exc).__name__}); copy or export it "
                      f"again", 422) from None


def _judged(ds) -> str:
    """The Pillow mode the pixels render to; Refused for what is not read."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if not syntax:
        raise Refused("corrupt DICOM file: its header names no transfer syntax; copy or export it again", 422)
    if syntax not in UNCOMPRESSED and syntax != JPEG_BASELINE:
        import pydicom.uid

        raise Refused(f"a DICOM image stored as {pydicom.uid.UID(syntax).name}, which headstart does not read: "
                      f"{CONVERT}")
    if "Rows" not in ds or "Columns" not in ds:
        raise Refused("corrupt DICOM file: no Rows/Columns before its pixels; copy or export it again", 422)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise Refused(f"a DICOM file of {ds.NumberOfFrames} frames (a series or a clip), which headstart does not "
                      f"read: export the frame to classify as PNG")
    samples, photometric = int(ds.get("SamplesPerPixel", 1)), str(ds.get("PhotometricInterpretation", ""))
    bits = int(ds.get("BitsAllocated", 0))
    grey = samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2") and bits in (8, 16)
    colour = samples == 3 and photometric in COLOUR and bits == 8
    if not (grey or colour) or (syntax == JPEG_BASELINE and bits != 8):
        raise Refused(f"a DICOM image of {samples} sample(s) per pixel, {photometric or 'no photometric'}, {bits} "
                      f"bits: headstart reads greyscale (MONOCHROME1/2, 8 or 16 bits) and 8-bit RGB: {CONVERT}")
    return "L" if grey else "RGB"


class DicomImageFile(ImageFile.ImageFile):
    format = "DICOM"
    format_description = "DICOM (header by pydicom)"

    def _open(self) -> None:
        if self.fp.read(132)[128:] != MAGIC:
            raise SyntaxError("not a DICOM file")
        self.fp.seek(0)
        self._dataset = _header(self.fp)
        try:
            self._mode = _judged(self._dataset)
            self._size = (int(self._dataset.Columns), int(self._dataset.Rows))
            self.cost_per_pixel = _cost(self._dataset, self._mode)
        except Refused:
            raise
        except Exception as exc:  # a value of the wrong kind (Rows 'abc'): damaged, not a format we do not know
            raise Refused(f"corrupt DICOM file: {exc}; copy or export it again", 422) from None
        self.tile = []

    def load(self):
        if self._im is None:
            self.fp.seek(0)
            self.im = self._rendered().im
        return Image.Image.load(self)

    def _rendered(self) -> Image.Image:
        """The pixels as an image of this one's mode: uncompressed ones read by pydicom (byte order, signedness,
        planar or YBR colour; read from the bytes straight into one array), a JPEG frame by Pillow after checking it
        has the header's size; greyscale rendered (`render`) unless 8-bit values are to be shown as stored."""
        import pydicom
        from pydicom.encaps import generate_frames

        if self._dataset.file_meta.TransferSyntaxUID == JPEG_BASELINE:
            frame = next(generate_frames(pydicom.dcmread(self.fp).PixelData, number_of_frames=1))
            image = Image.open(io.BytesIO(frame), formats=("JPEG",))
            if image.size != self.size:
                raise ValueError(f"its JPEG frame is {image.size[0]}x{image.size[1]}, the header says "
                                 f"{self.size[0]}x{self.size[1]}")
            image.load()
            image = image.convert(self.mode) if image.mode != self.mode else image
            if self.mode == "RGB" or as_stored(self._dataset):
                return image
            pixels = np.asarray(image)
        else:
            pixels = pydicom.pixels.pixel_array(self.fp)
            if self.mode == "RGB" or as_stored(self._dataset):
                return Image.fromarray(pixels.astype(np.uint8, copy=False), self.mode)
        return Image.fromarray(render(self._dataset, pixels), "L")


def _cost(ds, mode: str) -> int:
    """Peak bytes a pixel of `_rendered` (for extractor.decode.decode_cost), measured at 3000x2400: pydicom's
    array of the stored values and the image made of it (RGB: 3 + 4); a greyscale render's 8-bit output beside its
    input; Pillow's JPEG decode and, when rendered, its array and output."""
    if ds.file_meta.TransferSyntaxUID == JPEG_BASELINE:
        return 5 if mode == "RGB" else 2 if as_stored(ds) else 4
    if mode == "RGB":
        return 7
    return int(ds.BitsAllocated) // 8 + (1 if as_stored(ds) else 2)


def as_stored(ds) -> bool:
    """Whether greyscale values are shown as stored: 8 bits unsigned, no window, no rescale, not inverted."""
    return _window(ds) is None and int(ds.get("BitsStored", 8)) <= 8 and int(ds.get("PixelRepresentation", 0)) == 0 \
        and ds.PhotometricInterpretation == "MONOCHROME2" and float(ds.get("RescaleSlope", 1) or 1) == 1 \
        and float(ds.get("RescaleIntercept", 0) or 0) == 0


def render(ds, pixels: np.ndarray) -> np.ndarray:
    """Greyscale pixels to 8 bits as a viewer first shows them (see the module's docstring), a block of rows at a
    time: the float temporaries stay small (a 64-megapixel X-ray in float32 would be 256 MB)."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    window = _window(ds)
    if window:
        low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:  # the stored extremes, rescaled (a negative slope swaps them)
        low, high = sorted((float(pixels.min()) * slope + intercept, float(pixels.max()) * slope + intercept))
    scale = 255 / (high - low) if high > low else 0.0
    invert = ds.PhotometricInterpretation == "MONOCHROME1"
    out = np.empty(pixels.shape, np.uint8)
    step = max(1, BLOCK_PIXELS // max(1, pixels.shape[1]))
    for top in range(0, pixels.shape[0], step):
        values = pixels[top:top + step].astype(np.float32)
        values *= slope * scale
        values += (intercept - low) * scale
        np.clip(values, 0, 255, out=values)
        if invert:
            np.subtract(255, values, out=values)
        values += 0.5
        out[top:top + step] = values
    return out


def _window(ds) -> tuple[float, float] | None:
    """The first (center, width) the file gives, or None."""
    from pydicom.multival import MultiValue

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in (center, width))
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 else None


# No accept function: Pillow shows one 16 bytes, and the magic is at 128; _open checks it (tried last).
Image.register_open(DicomImageFile.format, DicomImageFile)
