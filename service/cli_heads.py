"""CLI commands for heads: train, evaluate, predict, heads."""

from __future__ import annotations

import argparse
from pathlib import Path

from extractor.errors import HeadstartError
from extractor.store import FeatureStore
from service.cli import emit, table


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a head on a dataset's cached features")
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--weights", help="which cached features, when several weights were used")
    p.add_argument("--head", default="logreg", help="logreg, mlp or centroid")
    p.add_argument("--name", required=True, help="name to save the head under")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="head parameter (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="metrics (and plots) of a saved head on a split")
    p.add_argument("head")
    p.add_argument("--split", default="test", help="train, val or test")
    p.add_argument("--plots", type=Path, help="write confusion matrix, ROC and training-curve PNGs here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], help="top-k labels of images with a saved head")
    p.add_argument("head")
    p.add_argument("images", nargs="+", type=Path, help="image files, or folders (every image below them)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("heads", parents=[common], help="list saved heads")
    p.set_defaults(func=cmd_heads)


def cmd_train(args: argparse.Namespace) -> int:
    from classifiers.heads import parse_params
    from classifiers.metrics import headline
    from classifiers.training import train_head

    manifest = train_head(FeatureStore(args.home), args.dataset, args.backbone, args.head, args.name,
                          parse_params(args.param, args.head), args.weights)
    m = manifest["metrics"]
    lines = [f"trained {args.head} head {args.name!r} on {args.dataset}/{manifest['fingerprint']['id']} "
             f"({len(manifest['classes'])} classes) in {m['fit_seconds']:.2f} s"]
    lines += [f"  {split:<4} {headline(m[split])}" for split in ("val", "test") if split in m]
    emit(args, {"name": args.name, "kind": args.head, "classes": manifest["classes"], "metrics": m},
         "\n".join(lines))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from classifiers.metrics import headline
    from classifiers.training import evaluate_head

    result = evaluate_head(FeatureStore(args.home), args.head, args.split, args.plots)
    m = result["metrics"]
    lines = [f"{args.head} on {result['dataset']} ({args.split}): {headline(m)}",
             f"  precision/recall/f1 macro {m['precision_macro']:.3f}/{m['recall_macro']:.3f}/{m['f1_macro']:.3f}"
             f"  weighted {m['precision_weighted']:.3f}/{m['recall_weighted']:.3f}/{m['f1_weighted']:.3f}"]
    worst = sorted(m["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
    lines += [f"  {label}: f1 {v['f1']:.3f} (n={v['support']})" for label, v in worst]
    lines += [f"  plot: {p}" for p in result["plots"]]
    emit(args, result, "\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from classifiers.predict import Predictor
    from classifiers.training import heads_dir
    from extractor.decode import DecodeError, read_file

    if args.batch_size < 1:
        raise HeadstartError(f"--batch-size {args.batch_size}: expected an integer >= 1")
    predictor = Predictor(heads_dir(FeatureStore(args.home)), args.head, device=args.device)
    paths, rows = _expand(args.images), []
    for start in range(0, len(paths), args.batch_size):  # a chunk at a time: memory does not grow with the count
        chunk, readable, datas = [], [], []
        for path, problem in paths[start:start + args.batch_size]:
            chunk.append({"image": str(path)})
            if problem:
                chunk[-1]["error"] = problem
                continue
            try:
                datas.append(read_file(path, predictor.limits))
                readable.append(chunk[-1])
            except DecodeError as exc:
                chunk[-1]["error"] = str(exc)
        for row, answer in zip(readable, predictor.predict_bytes(datas, args.top_k, args.batch_size), strict=True):
            row.update(answer)
        if not args.json:  # results appear as they are computed
            print("\n".join(f"{r['image']}: " + ("error: " + r["error"] if "error" in r else ", ".join(
                f"{t['label']} {t['probability']:.3f}" for t in r["top"])) for r in chunk), flush=True)
        rows += chunk
    if args.json:
        emit(args, rows, "")
    return 1 if all("error" in r for r in rows) else 0


def _expand(items: list[Path]) -> list[tuple[Path, str | None]]:
    """Files as given; a folder becomes every image below it, or one row saying it holds none."""
    from extractor.datasets import image_files

    out: list[tuple[Path, str | None]] = []
    for item in items:
        if item.is_dir():
            found, _ = image_files(item)
            out += [(p, None) for p in found] or [(item, "folder holds no image files (.jpg, .png, .webp, ...)")]
        else:
            out.append((item, None))
    return out


def cmd_heads(args: argparse.Namespace) -> int:
    from classifiers.persist import head_dir, list_names, read_manifest
    from classifiers.training import heads_dir

    root = heads_dir(FeatureStore(args.home))
    rows = []
    for name in list_names(root):
        m = read_manifest(head_dir(root, name))
        rows.append({"name": name, "kind": m["kind"], "backbone": m["backbone"], "dataset": m["dataset"],
                     "classes": len(m["classes"]), "test_accuracy": m["metrics"].get("test", {}).get("accuracy"),
                     "created": m["created"], "fingerprint": m["fingerprint"]["id"]})
    human = table(["NAME", "KIND", "BACKBONE", "DATASET", "CLASSES", "TEST ACC"],
                  [[r["name"], r["kind"], r["backbone"], r["dataset"], r["classes"],
                    "-" if r["test_accuracy"] is None else round(r["test_accuracy"], 3)] for r in rows]) \
        if rows else "no heads yet; train one with `headstart train`"
    emit(args, rows, human)
    return 0
