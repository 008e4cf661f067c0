"""CLI commands for heads: train, evaluate, predict, heads."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli import CACHED_BACKBONE, emit, existing_store, table, warn


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a head on a dataset's cached features",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_head_params_help())
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", help=f"(default: {CACHED_BACKBONE})")
    p.add_argument("--weights", help="which cached features, when several weights were used")
    p.add_argument("--head", default="logreg", help="logreg, mlp or centroid (default: logreg)")
    p.add_argument("--name", required=True, help="name to save the head under")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="head parameter (repeatable); the parameters and their defaults are listed below")
    p.add_argument("--views", type=int, default=0, metavar="K",
                   help="also train on K cached augmented views of each train image (extract --augment first)")
    p.add_argument("--augment", metavar="RECIPE", help="which recipe's views, when the dataset has several")
    _stream_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="metrics (and plots) of a saved head on a split")
    p.add_argument("head")
    p.add_argument("--dataset", metavar="NAME",
                   help="score on another labeled dataset (a holdout set), extracted with the head's backbone and "
                        "weights (default: the head's own dataset)")
    p.add_argument("--split", help="train, val, test or all (default: test; all with another --dataset)")
    p.add_argument("--plots", type=Path, help="write confusion matrix, ROC and training-curve PNGs here")
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="also score with probabilities averaged over N test-time views (1-8; cached)")
    p.add_argument("--device", default="auto", help="where test-time views are computed")
    _stream_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("heads", parents=[common], help="list saved heads; heads rm NAME; heads rollback NAME")
    p.set_defaults(func=cmd_heads)
    hsub = p.add_subparsers(dest="action", metavar="ACTION")
    hsub.add_parser("list", parents=[common], help="list saved heads (the default)").set_defaults(func=cmd_heads)
    r = hsub.add_parser("rm", parents=[common], help="delete a head and all its versions")
    r.add_argument("name")
    r.set_defaults(func=cmd_heads_rm)
    b = hsub.add_parser("rollback", parents=[common],
                        help="make the version a later save replaced current again (run twice to undo)")
    b.add_argument("name")
    b.set_defaults(func=cmd_heads_rollback)


def _stream_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream", default="auto", choices=("auto", "always", "never"),
                   help="read the feature table in blocks instead of whole (auto: when its float32 features exceed "
                        "HEADSTART_STREAM_MB, default 1024, for training; evaluation reads in blocks unless never)")


def _head_params_help() -> str:
    from classifiers.params import HEADS, ON_DEVICE

    lines = ["head parameters (--param KEY=VALUE) and their defaults:"]
    for kind, model in HEADS.items():
        lines.append(f"  {kind}: " + ", ".join(f"{k}={_plain(v)}" for k, v in model().model_dump().items())
                     + (", device=auto" if kind in ON_DEVICE else ""))
    return "\n".join(lines)


def _plain(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "null" if value is None else str(value)


def cmd_train(args: argparse.Namespace) -> int:
    from classifiers.heads import parse_params
    from classifiers.metrics import headline, small_split_warning
    from classifiers.training import train_head

    manifest = train_head(existing_store(args.home), args.dataset, args.backbone, args.head, args.name,
                          parse_params(args.param, args.head), args.weights, views=args.views, augment=args.augment,
                          stream=args.stream)
    m = manifest["metrics"]
    lines = [f"trained {args.head} head {args.name!r} on {args.dataset}/{manifest['fingerprint']['id']} "
             f"({len(manifest['classes'])} classes) in {m['fit_seconds']:.2f} s" + _chosen(manifest.get("chosen"))
             + (f", with {manifest['views']['per_image']} {manifest['views']['recipe']} views per train image "
                f"({manifest['views']['rows']} rows)" if manifest.get("views") else "")]
    lines += [f"  {split:<4} {headline(m[split])}" for split in ("val", "test") if split in m]
    warnings = manifest.get("warnings", []) + [w for split in ("val", "test")
                                               if (w := small_split_warning(split, m.get(split, {})))]
    warn(args, warnings)
    emit(args, {"name": args.name, "kind": args.head, "backbone": manifest["backbone"],
                "fingerprint": manifest["fingerprint"]["id"], "classes": manifest["classes"], "metrics": m,
                "warnings": manifest.get("warnings", []),
                **({"chosen": manifest["chosen"]} if manifest.get("chosen") else {})}, "\n".join(lines))
    return 0


def _chosen(chosen: dict | None) -> str:
    """C=auto: which C the val split chose, and from what sweep."""
    if not chosen:
        return ""
    sweep = chosen["sweep"]
    return f", C={chosen['C']:g} chosen on val (of {len(sweep)} from {sweep[0]['C']:g} to {sweep[-1]['C']:g})"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from classifiers.evaluation import evaluate_head
    from classifiers.metrics import confusion_lines, headline

    result = evaluate_head(existing_store(args.home), args.head, args.split, args.plots, args.tta, args.device,
                           args.stream, args.dataset)
    m = result["metrics"]
    lines = [f"{args.head} on {result['dataset']} ({result['split']}): {headline(m)}",
             *([f"  with {args.tta} test-time views: {headline(result['tta']['metrics'])}"] if args.tta else []),
             f"  precision/recall/f1 macro {m['precision_macro']:.3f}/{m['recall_macro']:.3f}/{m['f1_macro']:.3f}"
             f"  weighted {m['precision_weighted']:.3f}/{m['recall_weighted']:.3f}/{m['f1_weighted']:.3f}"]
    present = [(label, v) for label, v in m["per_class"].items() if v["support"]]  # absent classes have no f1
    worst = sorted(present, key=lambda kv: kv[1]["f1"])[:5]
    lines += ["  weakest classes:"] + [f"    {label}: f1 {v['f1']:.3f} (n={v['support']})" for label, v in worst]
    lines += ["  " + line for line in confusion_lines(m)]
    lines += [f"  plot: {p}" for p in result["plots"]]
    warn(args, result["warnings"])
    emit(args, result, "\n".join(lines))
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_heads(args: argparse.Namespace) -> int:
    from classifiers.persist import heads_dir, list_heads

    rows = []
    for m in list_heads(heads_dir(existing_store(args.home))):
        if "error" in m:
            rows.append({"name": m["name"], "error": m["error"]})
            continue
        rows.append({"name": m["name"], "kind": m["kind"] + ("+trunk" if m.get("trunk") else ""),
                     "backbone": m["backbone"], "dataset": m["dataset"],
                     "classes": len(m["classes"]), "val_accuracy": m["metrics"].get("val", {}).get("accuracy"),
                     "test_accuracy": m["metrics"].get("test", {}).get("accuracy"),
                     "created": m["created"], "fingerprint": m["fingerprint"]["id"]})
    good = [r for r in rows if "error" not in r]
    lines = [table(["NAME", "KIND", "BACKBONE", "DATASET", "CLASSES", "VAL ACC", "TEST ACC", "CREATED"],
                   [[r["name"], r["kind"], r["backbone"], r["dataset"], r["classes"], _score(r["val_accuracy"]),
                     _score(r["test_accuracy"]), r["created"]] for r in good])] if good else []
    lines += [f"{r['name']}: cannot be used: {r['error']}" for r in rows if "error" in r]
    emit(args, rows, "\n".join(lines) or "no heads yet; train one with `headstart train`")
    return 0


def cmd_heads_rm(args: argparse.Namespace) -> int:
    from classifiers.persist import delete, heads_dir

    delete(heads_dir(existing_store(args.home)), args.name)
    emit(args, {"deleted": args.name}, f"deleted head {args.name!r}")
    return 0


def cmd_heads_rollback(args: argparse.Namespace) -> int:
    from classifiers.persist import heads_dir, rollback

    m = rollback(heads_dir(existing_store(args.home)), args.name)
    emit(args, {"name": args.name, "created": m["created"], "metrics": m["metrics"]},
         f"head {args.name!r} is now the version of {m['created']} (test accuracy "
         f"{_score(m['metrics'].get('test', {}).get('accuracy'))}); `headstart heads rollback {args.name}` undoes it")
    return 0
