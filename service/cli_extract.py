"""CLI commands for features: extract, datasets, export, backbones, weights fetch."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from extractor.ray_cluster import ENGINES
from extractor.store import FeatureStore, default_home
from service.cli import CACHED_BACKBONE, emit, existing_store, table, warn


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    _extract_parser(sub, common)

    p = sub.add_parser("datasets", parents=[common],
                       help="list datasets with counts per split and backbone; datasets rm NAME")
    p.set_defaults(func=cmd_datasets)
    dsub = p.add_subparsers(dest="action", metavar="ACTION")
    dsub.add_parser("list", parents=[common], help="list datasets (the default)").set_defaults(func=cmd_datasets)
    from service.cli_admin import datasets_rm_parser

    datasets_rm_parser(dsub, common)

    p = sub.add_parser("export", parents=[common], help="write a dataset's features to one plain file (HDF5, .npz "
                                                        "or CSV)")
    p.add_argument("--dataset", required=True)
    _backbone_args(p, weights_default=None, backbone_default=None)
    p.add_argument("--out", type=Path, required=True,
                   help="the file to write; its suffix chooses the format: .h5 (HDF5), .npz (NumPy) or .csv")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--no-views", action="store_true", help="leave out the cached augmented views")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("backbones", parents=[common],
                       help="list the curated backbones (--all: every torchvision classification model too)")
    p.add_argument("--all", action="store_true", help="also every torchvision model, by name, with dims and sizes")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("weights", parents=[common], help="manage pretrained weights")
    wsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = wsub.add_parser("fetch", parents=[common], help="download ImageNet weights into the torchvision cache")
    f.add_argument("names", nargs="+", metavar="BACKBONE")
    f.set_defaults(func=cmd_weights_fetch)


def _extract_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("extract", parents=[common], help="extract bottleneck features of a folder of images")
    p.add_argument("data_dir", type=Path,
                   help="folder of class subfolders (or of split folders of them: train/cat), or of images")
    p.add_argument("--dataset", required=True, help="name to record the dataset under")
    p.add_argument("--labels", "--labels-csv", type=Path, help="CSV of path (or id) and label columns")
    p.add_argument("--path-column", help="CSV column with the file path or id")
    p.add_argument("--label-column", help="CSV column with the label")
    p.add_argument("--unlabeled", action="store_true", help="treat every image below DATA_DIR as unlabeled")
    p.add_argument("--name-labels", action="store_true",
                   help="label every image below DATA_DIR by its file name: cat.12.jpg -> cat, "
                        "american_bulldog_10.jpg -> american_bulldog")
    p.add_argument("--add", action="store_true", help="add DATA_DIR's images to an existing dataset")
    p.add_argument("--redefine", action="store_true",
                   help="replace what an existing dataset is made of (its folders, CSV, labels) with this run's")
    p.add_argument("--dry-run", action="store_true",
                   help="say how DATA_DIR would be read (classes, counts, splits, warnings); read no image, load no "
                        "model, register nothing")
    _backbone_args(p)
    _compute_args(p)
    p.add_argument("--augment", metavar="RECIPE",
                   help="also cache augmented views of every train image: classic, crop, or terms like "
                        "flip,rotate=30,shift=0.1,zoom=0.2,crop=0.5 (needs --views)")
    p.add_argument("--views", type=int, default=0, metavar="K", help="views per train image with --augment")
    p.add_argument("--split", help="train,val,test fractions (default 0.6,0.2,0.2), recorded once")
    p.add_argument("--seed", type=int, help="split seed (default 42)")
    p.add_argument("--resplit", action="store_true", help="discard the recorded split and split again")
    p.add_argument("--max-pixels", type=count("--max-pixels"), default=64_000_000,
                   help="refuse larger images (e.g. 64M, 100M, 2G)")
    p.add_argument("--max-bytes", type=count("--max-bytes", 1024), default=64 * 1024 * 1024,
                   help="refuse larger files (e.g. 64M = 64 MiB)")
    _engine_args(p)
    p.set_defaults(func=cmd_extract)


def _compute_args(p: argparse.ArgumentParser) -> None:
    """extract's batch, workers, device, precision, decoding and storage options."""
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: usable cores - 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", default="auto", help="mixed precision on CUDA: auto, off, bf16, fp16")
    p.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"),
                   help="where JPEGs are decoded: cpu (Pillow in the workers), gpu (nvJPEG on the device; its own "
                        "features), auto (the path measured faster: cpu today)")
    p.add_argument("--dtype", default="float32", help="storage: float32 or float16")


def _engine_args(p: argparse.ArgumentParser) -> None:
    """Where extract's work runs (local, or a Ray cluster), and how often it saves."""
    p.add_argument("--engine", default=os.environ.get("HEADSTART_ENGINE") or "local", choices=ENGINES,
                   help="where the work runs: local (this machine), or ray (tasks and GPU actors on a Ray cluster; "
                        "the data folder and the home on a path every node sees). Default $HEADSTART_ENGINE or local")
    p.add_argument("--ray-address", default=os.environ.get("HEADSTART_RAY_ADDRESS") or None, metavar="HOST:PORT",
                   help="the Ray head to join with --engine ray (default $HEADSTART_RAY_ADDRESS; none: start a "
                        "local Ray cluster, listening on 127.0.0.1 only)")
    p.add_argument("--actors", type=int, help="forward actors with --engine ray (default: one per GPU, else 1)")
    p.add_argument("--shard-rows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--flush-seconds", type=float, default=60.0, help="save finished vectors at least this often")


def count(option: str, unit: int = 1000):
    """An argparse type for counts with an optional K/M/G suffix (powers of `unit`)."""
    def parse(text: str) -> int:
        number, power = text.strip(), 0
        if number[-1:].upper() in "KMG" and number[-1:]:
            number, power = number[:-1], "KMG".index(number[-1].upper()) + 1
        try:
            value = float(number) * unit ** power
        except ValueError:
            value = -1
        if not 1 <= value < 2**62:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number, optionally with K, M or G "
                                             f"(for example 64M)")
        return int(value)

    parse.__name__ = option
    return parse


def _backbone_args(p: argparse.ArgumentParser, weights_default: str | None = "imagenet",
                   backbone_default: str | None = "vgg16") -> None:
    p.add_argument("--backbone", default=backbone_default,
                   help="registry name (see `headstart backbones`); default " + (
                       backbone_default or CACHED_BACKBONE))
    p.add_argument("--weights", default=weights_default, help="imagenet, random[:SEED] or a weights file")
    p.add_argument("--size", type=int, help="input size override (e.g. 224 for vgg16)")


def cmd_extract(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    from extractor.decode import Limits
    from extractor.pipeline import ExtractOptions, extract
    from service.progress import ProgressBar

    opts = ExtractOptions(
        data_dir=args.data_dir, dataset=args.dataset, labels_csv=args.labels, path_column=args.path_column,
        label_column=args.label_column, unlabeled=args.unlabeled, name_labels=args.name_labels,
        backbone=args.backbone, weights=args.weights,
        size=args.size, batch_size=args.batch_size, workers=args.workers, device=args.device, amp=args.amp,
        dtype=args.dtype, split=args.split, seed=args.seed, resplit=args.resplit,
        limits=Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels), shard_rows=args.shard_rows,
        flush_seconds=args.flush_seconds, add=args.add, redefine=args.redefine, augment=args.augment,
        views=args.views, decode=args.decode, engine=args.engine, ray_address=args.ray_address, actors=args.actors)
    bar = ProgressBar(f"{args.dataset}/{args.backbone}")
    try:
        summary = extract(opts, FeatureStore(args.home), progress=bar)
    finally:
        bar.close()
    if summary.extracted:
        speed = f"({summary.images_per_second:.1f} img/s on {summary.device})"
    else:  # a rerun that only adds views computes no image vector, but not nothing
        speed = "(all image vectors cached)" if summary.views and summary.views["computed"] else "(nothing to compute)"
    lines = [f"{summary.dataset} / {summary.fingerprint}: {summary.extracted} extracted, {summary.cached} cached, "
             f"{summary.failed} failed, {summary.duplicates} duplicate files, in {summary.seconds:.1f} s {speed}"]
    if summary.views:
        v = summary.views
        lines.append(f"  views ({v['recipe']}, {v['per_image']} per train image): {v['computed']} computed, "
                     f"{v['cached']} cached, {v['failed']} failed")
    lines += [f"  failed: {path}: {reason}" for path, reason in summary.failures[:20]]
    if len(summary.failures) > 20:
        lines.append(f"  ... and {len(summary.failures) - 20} more (see `headstart datasets --json`)")
    warn(args, summary.warnings)
    emit(args, summary.to_dict(), "\n".join(lines))
    return 1 if summary.failed and summary.extracted + summary.cached == 0 else 0


def _dry_run(args: argparse.Namespace) -> int:
    from extractor.definition import Wanted
    from extractor.preview import preview_extract

    wanted = Wanted(args.data_dir, args.labels, args.path_column, args.label_column, args.unlabeled, args.redefine,
                    args.add, args.name_labels)
    home = Path(args.home).expanduser() if args.home else default_home()
    with tempfile.TemporaryDirectory() as empty:  # where there is no home yet, a dry run makes none
        store = FeatureStore(home if (home / "catalog.sqlite").is_file() else empty)
        p = preview_extract(store, args.dataset, wanted, args.split, args.seed)
    labeled = f"{len(p['classes'])} classes" + (f", {p['unlabeled']} images unlabeled" if p["unlabeled"] else "")
    lines = [f"{p['dataset']}{' (exists)' if p['exists'] else ''}: {p['images']} images from "
             f"{'; '.join(p['sources'])}: {labeled if p['classes'] else 'unlabeled'}"]
    shown = list(p["classes"].items())
    lines += [f"  {label}  {n}" for label, n in shown[:30]]
    if len(shown) > 30:
        lines.append(f"  ... and {len(shown) - 30} more classes")
    s = p["splits"]
    lines.append("splits: given by the folders, " + ", ".join(f"{k} {n}" for k, n in s["images"].items())
                 if s["by"] == "folders" else f"splits: {s['fractions']} (train,val,test), seed {s['seed']}, per "
                                              f"image content")
    lines += [f"  failed: {f['path']}: {f['reason']}" for f in p["failures"][:20]]
    if len(p["failures"]) > 20:
        lines.append(f"  ... and {len(p['failures']) - 20} more (--json lists them all)")
    lines.append("dry run: no image was read, no model loaded, nothing registered; drop --dry-run to extract")
    warn(args, p["warnings"])
    emit(args, p, "\n".join(lines))
    return 0


def features_label(features: list[dict]) -> list[str]:
    """`vgg16@150[imagenet]=128` per fingerprint; the fingerprint id is added where two would read the same."""
    labels = [f"{f['backbone']}@{f['input_size']}[{f['source'] or f['weights'].split(':')[0]}]" for f in features]
    return [f"{lab}{'(' + f['fingerprint'] + ')' if labels.count(lab) > 1 else ''}={f['vectors']}"
            for lab, f in zip(labels, features, strict=True)]


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = existing_store(args.home).overview(with_failures=args.json)
    lines = []
    for r in rows:
        s = r["splits"]
        feats = ", ".join(features_label(r["features"])) or (
            f"none: all {r['failed']} files failed" if r["failed"] and not sum(s.values()) else "none yet")
        views = ", ".join(f"{v['recipe_name']} x{v['complete']}" + ("" if v["images"] == v["train_images"] else
                          f" ({v['images']}/{v['train_images']} images)") for v in r["views"]) or "-"
        lines.append([r["name"], r["kind"], f"{s.get('train', 0)}/{s.get('val', 0)}/{s.get('test', 0)}",
                      r["failed"], feats, views])
    human = table(["NAME", "KIND", "TRAIN/VAL/TEST", "FAILED", "FEATURES", "VIEWS"], lines) if rows else \
        "no datasets yet; run `headstart extract`"
    emit(args, rows, human)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from extractor.export import export

    store = existing_store(args.home)
    fp_id = store.resolve(args.dataset, args.backbone, args.weights, args.size)
    result = export(store, args.dataset, fp_id, args.out, args.dtype, views=not args.no_views)
    warn(args, result["warnings"])
    emit(args, result, f"wrote {result['rows']} x {result['dim']} features ({result['classes']} classes)"
                       + (f" and {result['views']} views" if result["views"] else "") + f" to {result['out']}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from extractor.backbones import describe

    rows = describe(every=args.all)
    width = max(len(r["name"]) for r in rows)
    emit(args, rows, "\n".join(f"{r['name']:<{width}} {r['input_size']:>3}px -> {r['dim']:>5}-d  {r['description']}"
                               for r in rows))
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from extractor.backbones import get_spec
    from extractor.weights import fetch

    done = [{"backbone": name, "file": str(fetch(get_spec(name)))} for name in args.names]
    emit(args, done, "\n".join(f"{d['backbone']}: {d['file']}" for d in done))
    return 0
