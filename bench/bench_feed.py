"""Feed rate (issue 14): the shipped extraction pipeline with an instant forward (vectors of the right shape, at
once; everything else real: list, hash, decode, resize, shard write, commit), on photo-like JPEGs.

    python bench/bench_feed.py [--images 240] [--decode cpu|gpu] [--workers N] [--repeat 2] [--fresh]
                               [--device cuda] [--forward instant|real] [--backbone vgg16]

Prints img/s, img/s per core (the cores this process may use), the ceiling that implies for 8, 16 and 32-core
hosts, and where one image's CPU time goes (read, hash, decode, resize), measured in this process. The runs go in
this process, warmed by the earlier ones; `--fresh` runs each in a new process (as a `headstart extract` runs; the
imports are not timed) and reports those too.
`--decode gpu` measures the GPU-decode code path as everything but the device decode: hash, sniff each
JPEG's head in the workers, read it whole in the main process (what the CPU side still does when a GPU
decodes); on a CUDA `--device` the device decode is real (nvJPEG). `--forward real` runs the backbone (random
weights) too: the end-to-end rate on that device."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if "--repo" in sys.argv:  # measure another checkout's pipeline (e.g. a git worktree of an earlier commit)
    REPO = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402  (from this checkout)
from extractor.decode import Limits, preprocess  # noqa: E402
from extractor.model import LoadedBackbone  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402


def instant_forward(decode_too: bool) -> None:
    """The backbone does nothing: setup loads no model, embed returns zeros of the right shape."""
    def setup(self):

        self.model = object()
        return self

    def embed(self, batch):
        return np.zeros((len(batch), self.resolved.fingerprint.dim), np.float32)

    LoadedBackbone.setup = setup
    LoadedBackbone.embed = embed
    if not decode_too:
        return
    try:  # the device decode is instant too: what is measured is the CPU side (hash, sniff, read)
        import extractor.devicedecode as devicedecode

        def instant_decode(payloads, size, device, orientations=None):  # no data: stacking them is device work
            return [torch.empty((size, size, 3), dtype=torch.uint8, device="meta") for _ in payloads]

        devicedecode.decode_batch = instant_decode  # to_batch finds it there
    except ImportError:  # an earlier checkout without the device-decode path
        pass


def run(folder: Path, home: Path, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    extra = {"decode": args.decode} if "decode" in ExtractOptions.__dataclass_fields__ else {}
    summary = extract(ExtractOptions(data_dir=folder, dataset="feed", backbone=args.backbone, weights="random",
                                     size=args.size, workers=args.workers, device=args.device,
                                     batch_size=args.batch_size, **extra),
                      FeatureStore(home))
    seconds = time.perf_counter() - started
    assert summary.extracted == summary.files, summary
    return seconds


def fresh_run(folder: Path, home: Path) -> float:
    """One run in a new process, with this process's arguments: its seconds (the imports not counted)."""
    argv = [a for a in sys.argv[1:] if a != "--fresh"]
    out = subprocess.run([sys.executable, __file__, *argv, "--one", str(folder), str(home)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def breakdown(files: list[Path]) -> dict:
    """Milliseconds per image of each CPU step, in this process."""
    steps = {"read": 0.0, "sha256": 0.0, "decode+resize (PIL, draft)": 0.0}
    for f in files:
        t0 = time.perf_counter()
        data = f.read_bytes()
        t1 = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        t2 = time.perf_counter()
        preprocess(data, 150, Limits())
        t3 = time.perf_counter()
        steps["read"] += t1 - t0
        steps["sha256"] += t2 - t1
        steps["decode+resize (PIL, draft)"] += t3 - t2
    return {k: round(v / len(files) * 1000, 3) for k, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--decode", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2, help="runs (fresh home each): the best is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--forward", default="instant", choices=("instant", "real"))
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repo", type=Path, help="run another checkout's pipeline (its code, this benchmark)")
    parser.add_argument("--fresh", action="store_true", help="also time each run in a new process")
    parser.add_argument("--one", nargs=2, type=Path, help=argparse.SUPPRESS)  # FOLDER HOME: one run, print seconds
    args = parser.parse_args()
    # with an instant forward the main process is mostly idle: every usable core decodes (the shipped default
    # keeps one for the forward)
    args.workers = len(os.sched_getaffinity(0)) if args.workers is None else args.workers
    cores = len(os.sched_getaffinity(0))
    if args.forward == "instant":
        instant_forward(decode_too=not args.device.startswith("cuda"))
    if args.one:
        print(run(*args.one, args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "photos", args.images)
        files = sorted((Path(tmp) / "photos").rglob("*.jpg"))
        breakdown(files[:8])  # warm the page cache and the decoders
        fresh = [fresh_run(Path(tmp) / "photos", Path(tmp) / f"fresh{i}") for i in range(args.repeat)] \
            if args.fresh else []
        best = min(run(Path(tmp) / "photos", Path(tmp) / f"home{i}", args) for i in range(args.repeat))
        steps = breakdown(files)
    rate = args.images / best
    print(json.dumps({"repo": str(REPO), "images": args.images, "decode": args.decode, "workers": args.workers,
                      "device": args.device, "forward": args.forward, "backbone": args.backbone,
                      "cores": cores,
                      "seconds": round(best, 2), "img_per_s": round(rate, 1),
                      "img_per_s_per_core": round(rate / cores, 1),
                      "ceiling_img_per_s": {n: round(rate / cores * n) for n in (8, 16, 32)},
                      **({"fresh_process_img_per_s_per_core": [round(args.images / s / cores, 1) for s in fresh]}
                         if fresh else {}),
                      "ms_per_image": steps}))


if __name__ == "__main__":
    main()
