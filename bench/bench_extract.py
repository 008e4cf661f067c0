"""Extraction benchmark: end-to-end vs bare forward vs a naive baseline loop, and the cached rerun, in one run.

    python bench/bench_extract.py [--images 240] [--backbone vgg16] [--batch-size 32] [--workers N]
                                  [--decode auto|cpu|gpu] [--bare-batches 4] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractor.model import LoadedBackbone, resolve  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402
from extractor.workers import default_workers  # noqa: E402

SIZES = [(500, 375), (1024, 768)]


def _jpeg(folder: Path, i: int) -> None:
    rng = np.random.default_rng(i)
    w, h = SIZES[i % 2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5)) % 256] * 3, -1)
    base = base * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 12, (h, w, 3))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"class_{i % 2}" / f"{i:05d}.jpg",
                                                                 quality=90)


def make_jpegs(folder: Path, n: int) -> None:
    """Photo-like JPEGs (smooth gradients, shapes, noise) of the two typical sizes, in two class folders; image i
    is the same on every machine (seeded by i), made on every core."""
    from concurrent.futures import ProcessPoolExecutor

    for c in (0, 1):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_jpeg, [folder] * n, range(n), chunksize=16))


def bare_forward(backbone: str, size: int, batch: int, batches: int) -> float:
    """img/s of the frozen forward alone on random uint8 batches (best settings: channels_last etc.)."""
    return time_forward(LoadedBackbone(resolve(backbone, "random", size), "auto").setup(), batch, batches)


def time_forward(model: LoadedBackbone, batch: int, batches: int) -> float:
    """img/s of a loaded backbone's forward on random uint8 batches at its input size, after a warm-up."""
    size = model.resolved.size
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    model.embed(x)  # warm-up
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        model.embed(x)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - start)


def baseline_loop(files: list[Path], size: int, batch: int) -> float:
    """img/s of the straightforward loop: PIL load, resize, [0,1] NCHW float32, plain forward, batch 32."""
    model = torchvision.models.vgg16(weights=None).features.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(files), batch):
            arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
                      for f in files[i:i + batch]]
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            model(x).flatten(1).numpy()
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--bare-batches", type=int, default=4)
    args = parser.parse_args()
    workers = default_workers() if args.workers is None else args.workers
    size = resolve(args.backbone, "random").size
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_jpegs(data, args.images)
        files = sorted(data.rglob("*.jpg"))
        opts = ExtractOptions(data_dir=data, dataset="bench", backbone=args.backbone, weights="random",
                              batch_size=args.batch_size, workers=workers, decode=args.decode)
        bare_before = bare_forward(args.backbone, size, args.batch_size, args.bare_batches)
        first = extract(opts, FeatureStore(Path(tmp) / "home"))
        rerun = extract(opts, FeatureStore(Path(tmp) / "home"))
        bare_after = bare_forward(args.backbone, size, args.batch_size, args.bare_batches)
        base = baseline_loop(files, size, args.batch_size) if not args.skip_baseline and args.backbone == "vgg16" \
            else float("nan")
    bare = (bare_before + bare_after) / 2
    e2e = args.images / first.seconds
    result = {
        "backbone": args.backbone, "input": size, "images": args.images, "batch": args.batch_size,
        "workers": workers, "device": first.device, "decode": args.decode, "fingerprint": first.fingerprint,
        "torch_threads": torch.get_num_threads(),
        "end_to_end_img_s": round(e2e, 2), "bare_forward_img_s": round(bare, 2),
        "bare_before_after": [round(bare_before, 2), round(bare_after, 2)],
        "baseline_img_s": round(base, 2), "first_run_s": round(first.seconds, 3), "rerun_s": round(rerun.seconds, 4),
        "ratio_e2e_over_bare": round(e2e / bare, 3), "ratio_e2e_over_baseline": round(e2e / base, 3),
        "ratio_first_over_rerun": round(first.seconds / rerun.seconds, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
