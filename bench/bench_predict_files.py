"""`headstart predict FILES` on new (uncached) photo-like JPEGs: decoding the next chunk on a thread while the current
one is in the forward (`ahead`, the default on CUDA) against reading, decoding, then the forward, chunk after chunk
(the default on the CPU), and against the forward and head alone on the same images decoded beforehand, rounds
interleaved in one run.

    python bench/bench_predict_files.py [--images 192] [--backbone vgg16] [--batch-size 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402
from classifiers import predict_files as pf  # noqa: E402
from classifiers.persist import heads_dir  # noqa: E402
from classifiers.predict import Predictor  # noqa: E402
from classifiers.training import train_head  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402


def head_on(tmp: Path, files: list[Path], backbone: str) -> tuple[FeatureStore, Predictor]:
    """A logreg head trained on 16 other photos (random weights), and its predictor with the backbone loaded."""
    for i, path in enumerate(files):
        (tmp / "train" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp / "train" / path.parent.name / f"t{i}.jpg")
    store = FeatureStore(tmp / "home")
    extract(ExtractOptions(tmp / "train", "train", backbone=backbone, weights="random"), store)
    train_head(store, "train", backbone, "logreg", "h")
    predictor = Predictor(heads_dir(store), "h")
    predictor.backbone  # noqa: B018  (loaded before any timing)
    return store, predictor


def rows(store, predictor, paths, k: int, batch: int, ahead: bool) -> list[dict]:
    return [r for chunk in pf.predict_files(store, predictor, paths, k, batch, ahead=ahead) for r in chunk]


def forward_only(predictor, arrays, k: int, batch: int) -> list:
    """The forward and the head alone, on inputs decoded beforehand."""
    return predictor.predict_arrays(arrays, k, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "photos", args.images + 16)
        by_class = [sorted((tmp / "photos" / f"class_{c}").glob("*.jpg")) for c in (0, 1)]
        store, predictor = head_on(tmp, by_class[0][:8] + by_class[1][:8], args.backbone)
        paths = sorted(by_class[0][8:] + by_class[1][8:])
        arrays = predictor.decode_many([p.read_bytes() for p in paths])
        forward_only(predictor, arrays[:args.batch_size], 1, args.batch_size)  # warm-up
        best = {"sequential": float("inf"), "ahead": float("inf"), "forward": float("inf")}
        answers = {}
        for _ in range(args.rounds):
            for name, run in (("sequential", lambda: rows(store, predictor, paths, 3, args.batch_size, False)),
                              ("ahead", lambda: rows(store, predictor, paths, 3, args.batch_size, True)),
                              ("forward", lambda: forward_only(predictor, arrays, 3, args.batch_size))):
                start = time.perf_counter()
                answers[name] = run()
                best[name] = min(best[name], time.perf_counter() - start)
    assert [r["top"] for r in answers["ahead"]] == [r["top"] for r in answers["sequential"]] == answers["forward"]
    rate = {name: args.images / seconds for name, seconds in best.items()}
    print(json.dumps({
        "backbone": args.backbone, "images": args.images, "batch": args.batch_size, "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(), "device": str(predictor.backbone.device),
        "img_s": {name: round(r, 2) for name, r in rate.items()},
        "ahead_over_sequential": round(rate["ahead"] / rate["sequential"], 3),
        "ahead_over_forward_only": round(rate["ahead"] / rate["forward"], 3),
        "sequential_over_forward_only": round(rate["sequential"] / rate["forward"], 3),
    }, indent=1))


if __name__ == "__main__":
    main()
