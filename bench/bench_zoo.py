"""The curated zoo (issue 14): bare forward img/s of each curated backbone on this machine, and for the small ones
(mobilenet_v2, convnext_tiny by default) the end-to-end extraction rate over the bare forward, side by side.

    python bench/bench_zoo.py [--batch 16] [--batches 3] [--images 320] [--e2e mobilenet_v2,convnext_tiny]
                              [--device auto] [--only NAME,...]

Random weights (the forward costs the same); each backbone at its own input size; channels_last and, on CUDA,
AMP as the shipped extractor uses them. The end-to-end runs use the shipped pipeline (photo-like JPEGs: decode,
resize, forward, shard write) with its default workers; bare is measured before and after it and averaged."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402
from bench.bench_extract import time_forward as bare  # noqa: E402
from extractor.backbones import CURATED_ZOO  # noqa: E402
from extractor.model import LoadedBackbone, resolve  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402
from extractor.workers import default_workers  # noqa: E402

CURATED = ["vgg16", "inception_v3", "resnet50", *(row[0] for row in CURATED_ZOO)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--e2e", default="mobilenet_v2,convnext_tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--only", help="comma-separated backbones (default: the curated list)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else CURATED
    rows = {}
    for name in names:
        model = LoadedBackbone(resolve(name, "random"), args.device).setup()
        rows[name] = {"input": model.resolved.size, "dim": model.resolved.fingerprint.dim,
                      "bare_img_s": round(bare(model, args.batch, args.batches), 1)}
        del model
        print(json.dumps({name: rows[name]}), flush=True)
    e2e_names = [n for n in args.e2e.split(",") if n]
    if e2e_names:
        with tempfile.TemporaryDirectory() as tmp:
            make_jpegs(Path(tmp) / "photos", args.images)
            for name in e2e_names:
                model = LoadedBackbone(resolve(name, "random"), args.device).setup()
                before = bare(model, args.batch, args.batches)
                summary = extract(ExtractOptions(data_dir=Path(tmp) / "photos", dataset="zoo", backbone=name,
                                                 weights="random", batch_size=args.batch, device=args.device,
                                                 decode=args.decode), FeatureStore(Path(tmp) / f"home-{name}"))
                after = bare(model, args.batch, args.batches)
                e2e = summary.extracted / summary.seconds
                rows.setdefault(name, {}).update({
                    "e2e_img_s": round(e2e, 1), "bare_around_e2e": [round(before, 1), round(after, 1)],
                    "ratio_e2e_over_bare": round(e2e / ((before + after) / 2), 3), "decode": args.decode,
                    "workers": default_workers(), "device": summary.device})
                print(json.dumps({name: rows[name]}), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "batch": args.batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
