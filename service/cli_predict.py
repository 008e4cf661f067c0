"""`headstart predict`: top-k labels for image files and folders, or for a dataset split straight from the cache."""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path

from extractor.durable import cannot_write, output_file, publish
from extractor.errors import HeadstartError
from service.cli import emit, existing_store

CSV_COLUMNS = ("image", "prediction", "probability", "top_k", "true_label", "split", "cached", "error")


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="top-k labels of images, or of a dataset from the cache",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("head")
    p.add_argument("images", nargs="*", type=Path, help="image files, or folders (every image below them)")
    p.add_argument("--dataset", help="predict a dataset's images from its cached vectors (no forward pass)")
    p.add_argument("--split", choices=("train", "val", "test"), help="with --dataset: only this split")
    p.add_argument("--csv", type=Path, help="also write one row per image to this CSV file")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="average the probabilities over N test-time views (1-8: the image, flipped, crops)")
    p.set_defaults(func=cmd_predict)


def _check(args: argparse.Namespace) -> None:
    if args.top_k < 1 or args.batch_size < 1:
        raise HeadstartError(f"--top-k {args.top_k} / --batch-size {args.batch_size}: expected integers >= 1")
    if args.tta:
        from extractor.augment import check_views

        check_views(args.tta, tta=True)
    if not args.images and not args.dataset:
        raise HeadstartError("nothing to predict: expected image files or folders, or --dataset NAME")
    if args.split and not args.dataset:
        raise HeadstartError("--split chooses a split of --dataset; pass --dataset NAME too")


URL_SCHEMES = ("http:/", "https:/", "ftp:/", "s3:/", "gs:/")


def expand(items: list[Path], classes: set[str] | None = None) -> tuple[list[Path], list[dict], dict[Path, str]]:
    """Files as given and every image below given folders; rows for paths that do not exist or hold none; and the
    true label of images below a given folder's subfolder named as one of `classes` (new photos sorted by class;
    matched as labels are, composed: a head's classes from before labels were composed match too)."""
    import os
    from collections import Counter

    from extractor.datasets import composed, image_names, label_of, unread_photos

    found, problems, truth = [], [], {}
    known = {composed(c): c for c in classes or ()}
    for item in items:
        if item.is_dir():
            unread: Counter = Counter()
            names, _ = image_names(item, unread=unread)
            images = [Path(name) for name in names]
            found += images
            top = os.path.join(str(item), "")  # by string: 1.20 s for 200,000 images, 1.74 s by Path.relative_to
            for name, image in zip(names, images, strict=True):
                first, below, _ = name[len(top):].partition(os.sep)
                if below and (label := known.get(label_of(first))) is not None:
                    truth[image] = label
            if not images:
                also = f"; {unread_photos(unread)}" if unread else " (.jpg, .png, .webp, ...)"
                problems.append({"image": str(item), "error": f"folder holds no image files headstart reads{also}"})
        elif item.exists():
            found.append(item)
        elif str(item).startswith(URL_SCHEMES):  # Path made https://x of https:/x
            url = str(item).replace(":/", "://", 1)
            problems.append({"image": url, "error": f"a URL, and headstart reads files on this machine: download it "
                                                    f"first (curl -O {url}) and give the file"})
        else:
            problems.append({"image": str(item), "error": "no such file or folder"})
    return found, problems, truth


class Output:
    """Rows as they come: human lines on stdout (errors on stderr), or one JSON line at the end; and a CSV."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rows, self.failed = args, [], 0
        self.labeled = self.right = 0  # rows with a true label (a dataset's, or a class folder's) and how many right
        self.csv_file = self.csv = None
        if args.csv:  # written to a temp file, published whole at the end: checked before any prediction
            self.path = output_file(args.csv, "--csv", "predictions.csv")
            self.tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                self.csv_file = open(self.tmp, "w", newline="", encoding="utf-8")
            except OSError as exc:
                raise cannot_write(self.path, "--csv", exc) from None
            self.csv = csv.DictWriter(self.csv_file, CSV_COLUMNS)
            self.csv.writeheader()

    def add(self, rows: list[dict]) -> None:
        from extractor.datasets import shown

        self.failed += sum("error" in r for r in rows)
        scored = [r for r in rows if r.get("true_label") is not None and r.get("top")]
        self.labeled += len(scored)
        self.right += sum(r["top"][0]["label"] == r["true_label"] for r in scored)
        for r in rows:  # a file name that is not UTF-8: as `\\xNN`, which every output can hold
            r["image"] = shown(r["image"])
        if self.csv:
            self.csv.writerows(_csv_row(r) for r in rows)
        if self.args.json:
            self.rows += rows
            return
        for r in rows:
            if "error" in r:
                print(f"headstart: error: {r['image']}: {r['error']}", file=sys.stderr)
            else:
                truth = f"  (true: {r['true_label']})" if r.get("true_label") is not None else ""
                print(f"{r['image']}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"]) + truth,
                      flush=True)

    def close(self) -> None:
        if self.csv_file:
            self.csv_file.close()
            try:
                publish(self.tmp, self.path)
            except OSError as exc:
                self.discard()
                raise cannot_write(self.path, "--csv", exc) from None
        if self.args.json:
            emit(self.args, self.rows, "")
        elif self.labeled:  # on stderr: stdout stays one line per image
            print(f"headstart: accuracy {self.right / self.labeled:.3f}: {self.right} of the {self.labeled} images "
                  f"with a true label (a dataset's, or the class folder they are in) predicted right", file=sys.stderr)

    def discard(self) -> None:
        """A run that failed leaves no temp file behind (and no CSV: it would be partial)."""
        if self.csv_file:
            self.csv_file.close()
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)


def _csv_row(r: dict) -> dict:
    top = r.get("top") or [{}]
    return {"image": r["image"], "prediction": top[0].get("label", ""), "probability": top[0].get("probability", ""),
            "top_k": "|".join(f"{t['label']}:{t['probability']}" for t in r.get("top", [])),
            "true_label": r.get("true_label", ""), "split": r.get("split", ""), "cached": r.get("cached", ""),
            "error": r.get("error", "")}


def from_dataset(store, predictor, dataset: str, split: str | None, k: int, tta: int = 0) -> list[dict]:
    """The dataset's images (one split or all) predicted from their cached vectors under the head's fingerprint,
    all or nothing (classifiers.predict.cached_predictions); with `tta`, from cached test-time views."""
    from classifiers.predict import cached_predictions, top_k_rows

    _, rows = cached_predictions(store, predictor.head, predictor.manifest, dataset, split, k, score=not tta)
    if tta:  # cached test-time views of each split (computed once)
        from classifiers.tta import dataset_proba

        for name in sorted({r["split"] for r in rows}):
            picked = [r for r in rows if r["split"] == name]
            proba = dataset_proba(store, predictor.head, predictor.resolved, dataset, name,
                                  [r["sha256"] for r in picked], tta, predictor.device)
            for r, top in zip(picked, top_k_rows(proba, predictor.head.classes_, k), strict=True):
                r["top"] = top
    return [{"image": r["image"], "true_label": r["true_label"], "split": r["split"], "top": r["top"],
             "cached": True} for r in rows]


def cmd_predict(args: argparse.Namespace) -> int:
    from classifiers.persist import heads_dir
    from classifiers.predict import Predictor
    from classifiers.predict_files import predict_files

    _check(args)
    store = existing_store(args.home)
    predictor = Predictor(heads_dir(store), args.head, device=args.device)  # the head only: the backbone is lazy
    paths, problems, truth = expand(args.images, {str(c) for c in predictor.head.classes_})
    out = Output(args)
    try:
        out.add(problems)  # said before any model loads
        if not paths and not args.dataset:
            out.close()
            return 1
        if args.dataset:
            out.add(from_dataset(store, predictor, args.dataset, args.split, args.top_k, args.tta))
        done = 0
        for rows in predict_files(store, predictor, paths, args.top_k, args.batch_size, args.tta):
            for path, row in zip(paths[done:done + len(rows)], rows, strict=True):
                if path in truth:
                    row["true_label"] = truth[path]
            done += len(rows)
            out.add(rows)
    except BaseException:
        out.discard()
        raise
    out.close()
    return 1 if out.failed else 0

