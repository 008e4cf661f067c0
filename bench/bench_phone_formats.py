"""What a phone's photo costs to decode, beside the same photo as a JPEG.

Photo-like images (gradients and noise, as bench_extract's) at a phone camera's 12 MP (4032x3024) and at 1024x768,
each encoded as JPEG (quality 90), HEIC and AVIF (--quality, default 50: a 12 MP HEIC of ~3.7 MB, near a phone's
1.5-3 MB; their decode time follows the file's bitrate, so the sizes are printed); then the shipped `preprocess`
(bytes -> the backbone's 150x150 input) on one core, in interleaved rounds, best of each. A JPEG decodes at a
reduced DCT scale; HEIC and AVIF decode at full size, so this is the price of a folder of phone photos.
pillow-heif (a dev dependency) writes the HEIC files.

    python bench/bench_phone_formats.py [--images 4] [--rounds 3] [--quality 50]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractor.decode import Limits, preprocess  # noqa: E402

SIZES = {"12MP": (4032, 3024), "1024x768": (1024, 768)}


def photo(i: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(i)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5)) % 256] * 3, -1)
    base = base * rng.uniform(0.5, 1.0, 3).astype(np.float32) + rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "HEIC":
        import pillow_heif

        pillow_heif.from_pillow(img).save(buf, format="HEIF", quality=quality)
    else:
        img.save(buf, fmt, quality=90 if fmt == "JPEG" else quality)
    return buf.getvalue()


def timed(files: list[bytes], size: int) -> float:
    start = time.perf_counter()
    for data in files:
        preprocess(data, size, Limits())
    return (time.perf_counter() - start) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per size and format (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default 3)")
    parser.add_argument("--size", type=int, default=150, help="the backbone's input size (default 150, vgg16)")
    parser.add_argument("--quality", type=int, default=50, help="HEIC and AVIF quality (default 50)")
    args = parser.parse_args()
    formats = ("JPEG", "HEIC", "AVIF")
    for label, dims in SIZES.items():
        images = [photo(i, dims) for i in range(args.images)]
        files = {fmt: [encode(img, fmt, args.quality) for img in images] for fmt in formats}
        best = {fmt: float("inf") for fmt in formats}
        for _ in range(args.rounds):
            for fmt in formats:
                best[fmt] = min(best[fmt], timed(files[fmt], args.size))
        kb = {fmt: sum(map(len, files[fmt])) / len(files[fmt]) / 1024 for fmt in formats}
        print(f"{label}: " + ", ".join(f"{fmt} {best[fmt] * 1000:.1f} ms/img ({kb[fmt]:.0f} KB)" for fmt in formats)
              + f"; HEIC/JPEG {best['HEIC'] / best['JPEG']:.1f}x, AVIF/JPEG {best['AVIF'] / best['JPEG']:.1f}x")


if __name__ == "__main__":
    main()
