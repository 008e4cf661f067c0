"""`make demo`: scikit-learn's bundled digits as PNG class folders -> vgg16 features -> heads -> predict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from service.cli import main as cli

OUT = Path("demo-output")


def write_digits(root: Path, per_class: int) -> int:
    """The 8x8 digits, upscaled to 64x64 greyscale PNGs in one folder per digit (no network needed)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = 0
    for label in range(10):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(digits.target == label)[:per_class]
        for i in indices:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            path = folder / f"{i:04d}.png"
            if not path.exists():
                Image.fromarray(pixels, "L").resize((64, 64), Image.NEAREST).save(path)
            written += 1
    return written


def pick_weights() -> str:
    """ImageNet weights when cached or downloadable; otherwise say loudly that the demo uses random ones."""
    from extractor.backbones import get_spec
    from extractor.errors import WeightsUnavailable
    from extractor.weights import fetch

    try:
        print(f"ImageNet weights for vgg16: {fetch(get_spec('vgg16'))}")
        return "imagenet"
    except WeightsUnavailable as exc:
        banner = "!" * 78
        print(f"{banner}\n!! ImageNet weights are not available here, so this demo uses RANDOM weights.\n"
              f"!! The pipeline is the real one; the accuracy is not what ImageNet features give.\n"
              f"!! ({exc})\n{banner}", flush=True)
        return "random"


def step(title: str, *args: str) -> None:
    print(f"\n$ headstart {' '.join(args)}    # {title}", flush=True)
    code = cli(list(args))
    if code:
        sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=60, help="digits per class (up to ~180)")
    args = parser.parse_args()
    data, home = OUT / "digits", str(OUT / "home")
    print(f"wrote {write_digits(data, args.per_class)} digit PNGs under {data}")
    weights = pick_weights()
    common = ["--home", home]
    step("extract vgg16 bottleneck features", "extract", str(data), "--dataset", "digits", "--backbone", "vgg16",
         "--weights", weights, *common)
    step("a rerun computes nothing", "extract", str(data), "--dataset", "digits", "--backbone", "vgg16",
         "--weights", weights, *common)
    step("what is cached", "datasets", *common)
    step("one plain HDF5 file", "export", "--dataset", "digits", "--backbone", "vgg16",
         "--out", str(OUT / "digits-vgg16.h5"), *common)
    for head in ("logreg", "mlp"):
        step(f"train a {head} head on the cached features", "train", "--dataset", "digits", "--backbone", "vgg16",
             "--head", head, "--name", f"digits-{head}", *common)
        step("test metrics and plots", "evaluate", f"digits-{head}", "--split", "test",
             "--plots", str(OUT / "plots"), *common)
    step("saved heads", "heads", *common)
    if weights.startswith("random"):  # offline demo weights: each backbone's own ImageNet file may be missing
        step("rank backbones by a linear probe (C chosen on val)", "compare", "--dataset", "digits",
             "--backbones", "vgg16,mobilenet_v2", "--weights", weights, *common)
    sample = sorted((data / "digit_7").iterdir())[-1]
    step("a dataset's predictions from the cache (no forward pass), as a CSV", "predict", "digits-logreg",
         "--dataset", "digits", "--split", "test", "--csv", str(OUT / "test-predictions.csv"), *common)
    step("predict one image", "predict", "digits-mlp", str(sample), "--top-k", "3", *common)
    print("\ndemo done: outputs under demo-output/")


if __name__ == "__main__":
    main()
