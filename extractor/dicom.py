"""DICOM images (`.dcm`: chest X-rays, dermatology, pathology) opened as Pillow opens any format: the header alone
gives the size and mode (so the pixel limit and the decode cost are judged before any pixel is decoded), and the
pixels are rendered to 8 bits as a viewer first shows them: the stored values rescaled (RescaleSlope/Intercept),
windowed by the file's first window (WindowCenter/WindowWidth; none: 8-bit values as stored, wider ones stretched
from the darkest pixel to the brightest), MONOCHROME1 inverted (0 is white there). Colour is read as RGB.

Read: one frame, greyscale or RGB, 8 or 16 bits, uncompressed, JPEG Baseline or JPEG 2000. A compressed frame is
decoded by Pillow (its JPEG decoder; OpenJPEG, at a reduced wavelet level when drafted, as JPEG 2000 files are) and
must have the size the header says. Other compressions (JPEG Lossless, JPEG-LS, RLE, deflate) are refused with what
to do: their decoders are not in this image (pydicom would need pylibjpeg or GDCM), or would inflate a crafted file
without bound. pydicom (pure Python) parses the header; it is imported on the first DICOM file only (~0.25 s)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile

from extractor import j2k

# pydicom's notes on damaged files ('End of file reached before delimiter ...'), with its source lines, from each
# decode worker that met one: such a file is refused or read all the same, so they are dropped (as PIL's are)
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")

MAGIC = b"DICM"  # after a 128-byte preamble
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}  # lossless only, and lossy or lossless
READ = UNCOMPRESSED | JPEG_2000 | {JPEG_BASELINE}
COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}  # the last two: JPEG 2000's, decoded as RGB
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
    if syntax not in READ:
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
    colour = samples == 3 and photometric in COLOUR and bits == 8 and (photometric.startswith("YBR_F") or
                                                                        photometric == "RGB" or syntax in JPEG_2000)
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
            self.stream_bytes = _stream_bytes(self._dataset, self.fp)
        except Refused:
            raise
        except Exception as exc:  # a value of the wrong kind (Rows 'abc'): damaged, not a format we do not know
            raise Refused(f"corrupt DICOM file: {exc}; copy or export it again", 422) from None
        self.tile, self._reduce, self._frame = [], 0, None

    def draft(self, mode, size):
        """A JPEG 2000 frame decodes at its most reduced level still at least `size`; a damaged one is left to load
        to report."""
        if self._dataset.file_meta.TransferSyntaxUID in JPEG_2000 and not self._reduce and size:
            try:
                self._reduce = j2k.reduction(self._codestream(), min(size))
            except Exception:
                return None
            self._size = j2k.reduced(self._size, self._reduce)
        return None

    def _compressed_frame(self) -> bytes:
        import pydicom
        from pydicom.encaps import generate_frames

        if self._frame is None:
            self.fp.seek(0)
            self._frame = next(generate_frames(pydicom.dcmread(self.fp).PixelData, number_of_frames=1))
        return self._frame

    def _check_frame(self, kind: str, size: tuple[int, int]) -> None:
        """A compressed frame must have the header's size: the pixel limit was judged on the header, and a frame
        claiming less would decode more."""
        full = (int(self._dataset.Columns), int(self._dataset.Rows))
        if size != full:
            raise ValueError(f"its {kind} frame is {size[0]}x{size[1]}, the header says {full[0]}x{full[1]}")

    def _codestream(self) -> j2k.Codestream:
        """The frame's JPEG 2000 header, checked against the DICOM header's size."""
        stream = j2k.codestream(self._compressed_frame())
        self._check_frame("JPEG 2000", stream.size)
        return stream

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

        if self._dataset.file_meta.TransferSyntaxUID in JPEG_2000:
            return self._jpeg_2000()
        if self._dataset.file_meta.TransferSyntaxUID == JPEG_BASELINE:
            image = Image.open(io.BytesIO(self._compressed_frame()), formats=("JPEG",))
            self._check_frame("JPEG", image.size)
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

    def _jpeg_2000(self) -> Image.Image:
        """The JPEG 2000 frame at the drafted level. Pillow widened its samples to the 8 or 16 bits of its mode and
        shifted signed ones up by half their range: greyscale is narrowed back to the stored values (the shift is
        folded into the render's intercept) before it is rendered."""
        stream = self._codestream()
        image = Image.open(io.BytesIO(self._compressed_frame()), formats=("JPEG2000",))
        if (image.mode in ("L", "I;16")) != (self.mode == "L"):
            raise ValueError(f"its JPEG 2000 frame is {image.mode}, the header says "
                             f"{self._dataset.PhotometricInterpretation}")
        if stream.precision > 16:
            raise ValueError(f"its JPEG 2000 frame has {stream.precision}-bit samples, the header says at most 16")
        image.reduce = self._reduce
        image.load()
        if self.mode == "RGB":
            return image.convert("RGB") if image.mode != "RGB" else image
        offset = 1 << (stream.precision - 1) if stream.signed else 0
        shift = (16 if image.mode == "I;16" else 8) - stream.precision
        if image.mode == "L" and not offset and not shift and as_stored(self._dataset):
            return image
        pixels = np.asarray(image)
        return Image.fromarray(render(self._dataset, pixels >> shift if shift else pixels, offset), "L")


def _stream_bytes(ds, fp) -> int:
    """Bytes a JPEG 2000 frame's decode holds beyond its pixels: the frame read out of the file, and the copies
    Pillow's decoder and OpenJPEG each make of it (the file's own size stands for the frame's)."""
    if ds.file_meta.TransferSyntaxUID not in JPEG_2000:
        return 0
    fp.seek(0, io.SEEK_END)
    return 3 * fp.tell()


def _cost(ds, mode: str) -> int:
    """Peak bytes a pixel of `_rendered` (for extractor.decode.decode_cost), measured at 3000x2400: pydicom's
    array of the stored values and the image made of it (RGB: 3 + 4); a greyscale render's 8-bit output beside its
    input; Pillow's JPEG decode and, when rendered, its array and output."""
    if ds.file_meta.TransferSyntaxUID == JPEG_BASELINE:
        return 5 if mode == "RGB" else 2 if as_stored(ds) else 4
    if ds.file_meta.TransferSyntaxUID in JPEG_2000:  # OpenJPEG's 32-bit plane a sample (see extractor.decode)
        return 19 if mode == "RGB" else int(ds.BitsAllocated) // 8 + 5 + (0 if as_stored(ds) else 3)
    if mode == "RGB":
        return 7
    return int(ds.BitsAllocated) // 8 + (1 if as_stored(ds) else 2)


def as_stored(ds) -> bool:
    """Whether greyscale values are shown as stored: 8 bits unsigned, no window, no rescale, not inverted."""
    return _window(ds) is None and int(ds.get("BitsStored", 8)) <= 8 and int(ds.get("PixelRepresentation", 0)) == 0 \
        and ds.PhotometricInterpretation == "MONOCHROME2" and float(ds.get("RescaleSlope", 1) or 1) == 1 \
        and float(ds.get("RescaleIntercept", 0) or 0) == 0


def render(ds, pixels: np.ndarray, offset: int = 0) -> np.ndarray:
    """Greyscale pixels (the stored values plus `offset`) to 8 bits as a viewer first shows them (see the module's
    docstring), a block of rows at a time: the float temporaries stay small (a 64-megapixel X-ray in float32 would be
    256 MB)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0) - offset * slope
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
