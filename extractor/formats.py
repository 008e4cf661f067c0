"""Which content is an image: the allowed formats and their Pillow plugins (loaded at import), the revision of
these rules, and the one-line reason for bytes that open as none of them (a format not read, a file cut short, an
archive)."""

from __future__ import annotations

import importlib
import warnings

import pi_heif
import PIL
from PIL import Image, features

from extractor import dicom  # noqa: F401  (registers its plugin)
from extractor.j2k import J2K_SIGNATURE, JP2_SIGNATURE

# Phones' formats: HEIC/HEIF (iPhones' default) through pi-heif, libheif with its HEVC decoder only (LGPL; no
# encoder), whose Pillow format is HEIF; AVIF through Pillow's own plugin, where its build has libavif.
pi_heif.register_heif_opener()
PHONE_FORMATS = ("HEIF", "AVIF") if features.check("avif") else ("HEIF",)
# PPM: binary Netpbm (PBM, PGM, PPM; datasets such as GTSRB ship it), the plain-text forms refused (open_image).
# DICOM: extractor.dicom's plugin, last (its magic is at byte 128: tried once the others have said no).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "JPEG2000", *PHONE_FORMATS, "DICOM")
# The revision of the rules here that decide whether content is an image (raise it with a change that reads, or
# refuses, some content otherwise). With the decoders' versions it is part of Limits.signature: content refused by one
# decoder is remembered as bad for that decoder only, and tried again once by another. 3: HEIC/HEIF and AVIF read.
# 4: binary Netpbm read. 5: DICOM read. 6: JPEG 2000 read (files, and DICOM's frames).
DECODE_RULES = 6
# Our own pixel check (extractor.decode) is the limit; PIL's warning in between would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# PIL's own notes on damaged files (e.g. 'Corrupt EXIF data' of a cut TIFF) printed PIL's source path into an
# extract's output, from each worker that met one; such a file is refused or read all the same, so they are dropped.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# The plugins of the allowed formats, loaded here: a process that imports this module before it forks its decode
# workers hands them over loaded. Left to Image.open, each fresh worker imported them itself (WebP and TIFF through
# Image.init(), every plugin Pillow has): ~0.25 s per worker at the start of every run, measured with 2 workers.
Image.preinit()
for _plugin in ("Bmp", "Gif", "Jpeg", "Jpeg2K", "Png", "Ppm", "Tiff", "WebP",
                *(["Avif"] if "AVIF" in PHONE_FORMATS else [])):
    importlib.import_module(f"PIL.{_plugin}ImagePlugin")


def decoders() -> str:
    """Which decoders, under which rules, judge content here (a part of decode.Limits.signature)."""
    return f"pillow {PIL.__version__},pi-heif {pi_heif.__version__},rules {DECODE_RULES}"


# what to do with photos in formats not read (here per file; extractor.datasets counts them in folders)
CONVERT = "to JPEG or PNG (a photo app's export, or a converter such as ImageMagick)"
# ISO-BMFF brands of phone photo formats (the `ftyp` box at byte 4 names them): the name a message gives, and the
# Pillow format that reads it
BRANDS = {b"heic": ("HEIC", "HEIF"), b"heix": ("HEIC", "HEIF"), b"heim": ("HEIC", "HEIF"), b"heis": ("HEIC", "HEIF"),
          b"mif1": ("HEIF", "HEIF"), b"msf1": ("HEIF", "HEIF"), b"avif": ("AVIF", "AVIF"), b"avis": ("AVIF", "AVIF")}
JPEG_XL = (b"\xff\x0a", b"\0\0\0\x0cJXL \r\n\x87\n")  # a bare codestream, or in its container
# Plain-text Netpbm: Pillow decodes its text in Python, 7.8 s for a 64 MiB P3 here (a binary one of as many pixels
# takes milliseconds), too slow to take from anyone who can send a file; rare in datasets besides.
PLAIN_NETPBM = (b"P1", b"P2", b"P3")
PLAIN_NETPBM_REFUSED = ("a plain-text (ASCII) Netpbm image (PBM, PGM or PPM), a form headstart does not read: convert "
                        "it to binary Netpbm or PNG (netpbm's pnmtopnm, or ImageMagick)")


def _phone_format(data: bytes) -> tuple[str, bool] | None:
    """(the name of the phone photo format the bytes begin with, whether it is read), or None."""
    if bytes(data[:12]).startswith(JPEG_XL):
        return "JPEG XL", False
    if bytes(data[4:8]) != b"ftyp" or (brand := BRANDS.get(bytes(data[8:12]))) is None:
        return None
    return brand[0], brand[1] in ALLOWED_FORMATS


# the first bytes of each allowed format (WebP: RIFF, then WEBP at byte 8; BMP: BM, then 4 reserved zero bytes at 6)
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (J2K_SIGNATURE, "JPEG2000"),
               (JP2_SIGNATURE, "JPEG2000"))


def _signed_format(data: bytes) -> str | None:
    """The allowed format whose signature the bytes begin with (what a file cut short still shows), or None."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and head[6:10] == b"\0\0\0\0":
        return "BMP"
    return next((fmt for sig, fmt in _SIGNATURES if head.startswith(sig)), None)


# archives datasets are downloaded as: (first bytes, at which offset, what it is, how to unpack it)
_ARCHIVES = ((b"PK\x03\x04", 0, "a zip archive", "unzip"), (b"PK\x05\x06", 0, "a zip archive", "unzip"),
             (b"ustar", 257, "a tar archive", "tar -xf"), (b"\x1f\x8b", 0, "a gzip-compressed file", "tar -xf"),
             (b"BZh", 0, "a bzip2-compressed file", "tar -xf"),
             (b"\x28\xb5\x2f\xfd", 0, "a zstd-compressed file", "tar -xf"),
             (b"\xfd7zXZ\x00", 0, "an xz-compressed file", "tar -xf"),
             (b"7z\xbc\xaf\x27\x1c", 0, "a 7z archive", "7z x"), (b"Rar!\x1a\x07", 0, "a RAR archive", "unrar x"))
ARCHIVE_PROBE = 262  # bytes that tell every archive above


def archive(data: bytes) -> tuple[str, str] | None:
    """(what archive the bytes begin as, the command that unpacks it), or None."""
    for magic, at, kind, command in _ARCHIVES:
        if bytes(data[at:at + len(magic)]) == magic:
            return kind, command
    return None


def refusal(data: bytes) -> tuple[str, int]:
    """(why bytes that open as no allowed format are refused, the HTTP status that goes with it)."""
    if packed := archive(data):
        return f"{packed[0]}, not an image: unpack it ({packed[1]}), and give the images inside", 415
    phone = _phone_format(data)
    if phone and not phone[1]:
        return (f"a{'n' * phone[0].startswith('A')} {phone[0]} photo, a format headstart does not read: convert it "
                f"{CONVERT}", 415)
    if signed := phone and phone[0] or _signed_format(data):
        return (f"corrupt or truncated {signed} image: its header cannot be read ({len(data)} bytes); copy or "
                f"download the file again", 422)
    return f"not a supported image (expected {', '.join(ALLOWED_FORMATS)} by content; first bytes " \
           f"{bytes(data[:8]).hex(' ')})", 415
