"""Fine-tuning, measured (issue 12): speed of `headstart finetune` next to the bare frozen forward and a
straightforward PyTorch fine-tuning loop, what each speed choice gives, and accuracy against frozen features.

    python bench/bench_finetune.py speed [--images 200] [--epochs 2]
    python bench/bench_finetune.py accuracy [--dataset shapes|digits] [--epochs 30]

speed: vgg16@150 (random weights: speed does not depend on them) on photo-like JPEGs, --unfreeze 2, in one run:
  finetune (classic augmentation every epoch; and without augmentation, where the frozen prefix is computed once),
  (a) the bare frozen forward of the same images, (b) the straightforward loop: torchvision's whole vgg16 trunk
  with blocks 1-3 set requires_grad=False, PIL decoding in the loop, float32 NCHW, the same head and batch size;
  then the choices one by one on decoded batches: the frozen prefix with and without autograd, channels_last.
accuracy: EfficientNet-Lite0 with ImageNet weights (as bench_views.py), one split: logreg and mlp on frozen
  features against finetune with its defaults (last 2 stages, classic augmentation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402
from bench.bench_views import lite0_weights, shapes  # noqa: E402
from classifiers.finetune import Request, finetune  # noqa: E402
from classifiers.training import train_head  # noqa: E402
from extractor.decode import Limits, preprocess  # noqa: E402
from extractor.model import resolve  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402
from extractor.workers import default_workers  # noqa: E402

BATCH = 32


def straightforward_epoch(files: list[Path], labels: list[int]) -> float:
    """Seconds for one epoch of the textbook loop (no headstart code at all)."""
    model = torchvision.models.vgg16(weights=None).features
    for layer in list(model)[:17]:  # blocks 1-3 frozen
        layer.requires_grad_(False)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8192, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(256, 2))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, 1e-5)
    model.train()
    head.train()
    started = time.perf_counter()
    for i in range(0, len(files), BATCH):
        x = torch.stack([torchvision.transforms.functional.to_tensor(Image.open(f).convert("RGB").resize((150, 150)))
                         for f in files[i:i + BATCH]])
        y = torch.tensor(labels[i:i + BATCH])
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(model(x)), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - started


def bare_forward(images: list[np.ndarray]) -> float:
    from extractor.model import LoadedBackbone

    backbone = LoadedBackbone(resolve("vgg16", "random", 150), "cpu").setup()
    backbone.embed_arrays(images[:BATCH])
    started = time.perf_counter()
    for i in range(0, len(images), BATCH):
        backbone.embed_arrays(images[i:i + BATCH])
    return time.perf_counter() - started


def choices(images: list[np.ndarray]) -> dict:
    """Forward + backward of the last two blocks on decoded batches: prefix without autograd vs with it; and
    channels_last vs contiguous."""
    from classifiers.tuner import Tuner

    out = {}
    batch = torch.from_numpy(np.stack(images[:BATCH]))
    labels = torch.zeros(BATCH, dtype=torch.long)
    for label, no_grad_prefix, channels_last in (("prefix no-grad, channels_last", True, True),
                                                 ("prefix with autograd", False, True),
                                                 ("contiguous (no channels_last)", True, False)):
        tuner = Tuner(resolve("vgg16", "random", 150), 2, "cpu", 2, [256], 0.5, np.zeros(8192, np.float32),
                      np.ones(8192, np.float32))
        if not channels_last:
            tuner.backbone.model.to(memory_format=torch.contiguous_format)
        if not no_grad_prefix:
            for _, modules, _ in tuner.frozen:
                modules.requires_grad_(True)
        tuner.train(True)

        def step(tuner=tuner, no_grad_prefix=no_grad_prefix, channels_last=channels_last) -> None:
            x = tuner.backbone.normalize(batch)
            if not channels_last:
                x = x.contiguous()
            if no_grad_prefix:
                with torch.no_grad():
                    hidden = tuner.prefix(batch) if channels_last else _prefix(tuner, x)
            else:
                hidden = _prefix(tuner, x)
            loss = torch.nn.functional.cross_entropy(tuner.logits(hidden), labels)
            loss.backward()

        step()
        started = time.perf_counter()
        for _ in range(3):
            step()
        out[label] = round((time.perf_counter() - started) / 3 / BATCH * 1000, 1)
    return {"ms_per_image_forward_backward": out}


def _prefix(tuner, x: torch.Tensor) -> torch.Tensor:
    from extractor.stages import run

    return run(tuner.frozen, x)


def speed(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "photos", args.images)
        store = FeatureStore(Path(tmp) / "home")
        extract(ExtractOptions(data_dir=Path(tmp) / "photos", dataset="p", backbone="vgg16", weights="random",
                               split="0.8,0.1,0.1", workers=default_workers()), store)
        train = len([m for m in store.catalog.members("p") if m[3] == "train"])
        rows = {}
        for label, augment in (("classic", "classic"), ("none", None)):
            started = time.perf_counter()
            manifest = finetune(store, Request("p", "vgg16", f"ft-{label}", "random", params={
                "epochs": args.epochs, "patience": args.epochs, "augment": augment, "warm_start": False}))
            seconds = [h["seconds"] for h in manifest["history"]]
            rows[f"finetune_{label}"] = {"epoch_s": [round(s, 2) for s in seconds],
                                         "img_per_s": round(train / seconds[-1], 2),
                                         "total_s": round(time.perf_counter() - started, 1)}
        files = sorted((Path(tmp) / "photos").rglob("*.jpg"))
        members = {m[0]: m[3] for m in store.catalog.members("p")}
        train_files = [f for f in files if members[f.relative_to(Path(tmp) / "photos").as_posix()] == "train"]
        images = [preprocess(f.read_bytes(), 150, Limits()) for f in train_files]
        bare = bare_forward(images)
        loop = straightforward_epoch(train_files, [int(f.parent.name[-1]) for f in train_files])
    rows["bare_forward"] = {"s": round(bare, 2), "img_per_s": round(train / bare, 2)}
    rows["straightforward_loop"] = {"epoch_s": round(loop, 2), "img_per_s": round(train / loop, 2)}
    best = rows["finetune_classic"]["epoch_s"][-1]
    return {"train_images": train, **rows, **choices(images),
            "straightforward_over_finetune": round(loop / best, 2),
            "finetune_over_bare_forward": round(best / bare, 2)}


def accuracy(args: argparse.Namespace) -> dict:
    weights = lite0_weights()
    with tempfile.TemporaryDirectory() as tmp:
        data, store = Path(tmp) / "data", FeatureStore(Path(tmp) / "home")
        if args.dataset == "digits":
            from service.demo import write_digits

            write_digits(data, 200)
            split = "0.2,0.2,0.6"
        else:
            shapes(data, args.per_class)
            split = "0.1,0.1,0.8"
        extract(ExtractOptions(data_dir=data, dataset="d", backbone="efficientnet_lite0", weights=weights,
                               split=split, seed=1, workers=default_workers()), store)
        rows = {kind: round(train_head(store, "d", "efficientnet_lite0", kind, kind, weights=weights)["metrics"]
                            ["test"]["accuracy"], 4) for kind in ("logreg", "mlp")}
        runs = {"defaults": {"epochs": args.epochs},
                "unfreeze2_lr1e-4": {"epochs": args.epochs, "patience": args.epochs, "lr": 1e-4, "head_lr": 1e-3},
                "unfreeze4_lr1e-4": {"epochs": args.epochs, "patience": args.epochs, "lr": 1e-4, "head_lr": 1e-3,
                                     "unfreeze": 4}}
        if args.dataset == "digits":  # classic mirrors digits into other digits: a recipe without flips too
            runs["unfreeze4_lr1e-4_noflip"] = {**runs["unfreeze4_lr1e-4"], "augment": "rotate=15,shift=0.1,zoom=0.15"}
        for label, params in runs.items():
            started = time.perf_counter()
            manifest = finetune(store, Request("d", "efficientnet_lite0", f"ft-{label}", weights, params=params))
            history = manifest["history"]
            rows[f"finetuned_{label}"] = {
                "test": round(manifest["metrics"]["test"]["accuracy"], 4),
                "best_epoch": manifest["finetune"]["best_epoch"], "epochs_run": len(history),
                "s_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
                "total_s": round(time.perf_counter() - started, 1)}
            print(json.dumps({label: rows[f"finetuned_{label}"]}), flush=True)
        rows["splits"] = store.catalog.dataset_summary("d")["splits"]
    return {"dataset": args.dataset, **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--images", type=int, default=200)
    s.add_argument("--epochs", type=int, default=2)
    a = sub.add_parser("accuracy")
    a.add_argument("--dataset", choices=("shapes", "digits"), default="shapes")
    a.add_argument("--per-class", type=int, default=150)
    a.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps({"part": args.part, **{"speed": speed, "accuracy": accuracy}[args.part](args)}))


if __name__ == "__main__":
    main()
