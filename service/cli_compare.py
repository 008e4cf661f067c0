"""`headstart compare`: rank backbones on a dataset by a linear probe on their cached features."""

from __future__ import annotations

import argparse
import sys

from service.cli import emit, existing_store, warn


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compare", parents=[common], help="rank backbones on a dataset by a linear probe",
                       description="Extracts each backbone's features of the dataset (cached: a second compare "
                                   "extracts nothing), fits a logreg head on each with C chosen on val from a "
                                   "sweep, and prints a table ranked by val accuracy.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbones", required=True, help="comma-separated, e.g. vgg16,resnet50,convnext_tiny")
    p.add_argument("--sample", type=int, help="use about N of the dataset's images (the same share of each split, "
                                              "the same ones every run)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), random or random:SEED")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from classifiers.compare import compare, images_used, table_lines

    def progress(name: str, done: int, total: int) -> None:
        if not args.json:
            print(f"[{done + 1}/{total}] {name}: features and a linear probe", file=sys.stderr, flush=True)

    rows = compare(existing_store(args.home), args.dataset, args.backbones.split(","), args.sample, args.weights,
                   args.device, progress)
    warn(args, dict.fromkeys(w for r in rows for w in r["warnings"]))
    emit(args, {"dataset": args.dataset, "sample": args.sample, "rows": rows},
         "\n".join([f"backbones on {args.dataset} (logreg, C chosen on val; {images_used(rows)}), best first:",
                    *table_lines(rows)]))
    return 0
