"""`headstart finetune`: train the last stages of a backbone with a dense head; resumable, Ctrl-C keeps the best."""

from __future__ import annotations

import argparse
import sys

from service.cli import CACHED_BACKBONE, emit, existing_store

OPTIONS = (  # option, FinetuneParams field, type
    ("--unfreeze", "unfreeze", int), ("--epochs", "epochs", int), ("--lr", "lr", float),
    ("--head-lr", "head_lr", float), ("--batch-size", "batch_size", int), ("--patience", "patience", int),
    ("--dropout", "dropout", float), ("--seed", "seed", int))


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from classifiers.params import FinetuneParams

    p = sub.add_parser("finetune", parents=[common], help="fine-tune the last stages of a backbone with a dense head",
                       description="Trains the last N stages of the backbone and a dense head on the dataset's "
                                   "train split (early stopping on val accuracy, the best epoch restored), with a "
                                   "checkpoint after every epoch: the same command resumes an interrupted run.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", help=f"(default: {CACHED_BACKBONE})")
    p.add_argument("--name", required=True, help="name to save the head under")
    p.add_argument("--weights", help="the backbone weights to start from (default: those of the cached features, "
                                     "or imagenet)")
    fields = FinetuneParams.model_fields
    for option, name, kind in OPTIONS:
        p.add_argument(option, type=kind, help=f"(default: {fields[name].default}) {fields[name].description}")
    p.add_argument("--augment", help="recipe applied to each train image every epoch (default: classic); none "
                                     "for no augmentation")
    p.add_argument("--hidden", help="the head's layer widths (default: 256)")
    p.add_argument("--no-warm-start", action="store_true", help="do not fit the head on the cached features first")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="decoding processes (default: usable cores - 1)")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run's checkpoint and start afresh")
    p.set_defaults(func=cmd_finetune)


def params_of(args: argparse.Namespace) -> dict:
    params = {name: getattr(args, option[2:].replace("-", "_")) for option, name, _ in OPTIONS
              if getattr(args, option[2:].replace("-", "_")) is not None}
    if args.augment is not None:
        params["augment"] = None if args.augment.lower() == "none" else args.augment
    if args.hidden is not None:
        try:
            params["hidden"] = [int(w) for w in args.hidden.split(",")]
        except ValueError:
            params["hidden"] = args.hidden  # refused with one line by the parameter check
    if args.no_warm_start:
        params["warm_start"] = False
    return params


class Bar:
    """One tqdm bar per epoch (batches, running loss), and a line per finished epoch."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = sys.stderr.isatty() and not quiet
        self.bar, self.epoch = None, 0

    def __call__(self, e) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if e.epoch != self.epoch:
            self.close()
            self.epoch = e.epoch
            self.bar = tqdm(total=e.batches, desc=f"epoch {e.epoch}/{e.epochs}", unit="batch", file=sys.stderr,
                            dynamic_ncols=True, leave=False)
        self.bar.n = e.batch
        self.bar.set_postfix(loss=f"{e.loss:.4f}", refresh=False)
        self.bar.refresh()

    def epoch_done(self, row: dict, epochs: int) -> None:
        self.close()
        print(f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}  ({row['seconds']:.1f} s)", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_finetune(args: argparse.Namespace) -> int:
    from classifiers.finetune import Request, finetune
    from classifiers.heads import Monitor
    from classifiers.metrics import headline

    bar = Bar(args.json)
    request = Request(args.dataset, args.backbone, args.name, args.weights, params_of(args), args.device,
                      args.workers, args.restart)
    try:
        manifest = finetune(existing_store(args.home), request, Monitor(on_epoch=bar.epoch_done), bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"headstart: interrupted; head {args.name!r} holds the best epoch so far (if one finished), and the "
              f"same command resumes from the last finished epoch", file=sys.stderr)
        return 130
    finally:
        bar.close()
    m, ft = manifest["metrics"], manifest["finetune"]
    lines = [f"fine-tuned {manifest['backbone']} (last {ft['params']['unfreeze']} stages) and a dense head as "
             f"{args.name!r} on {args.dataset}: best epoch {ft['best_epoch']} of {ft['epochs_run']}, features "
             f"{manifest['fingerprint']['id']}"]
    lines += [f"  {split:<4} {headline(m[split])}" for split in ("val", "test") if split in m]
    lines += [f"  not read: {f['path']}: {f['reason']}" for f in ft["failures"][:10]]
    emit(args, {"name": args.name, "fingerprint": manifest["fingerprint"]["id"], "metrics": m, "finetune": ft},
         "\n".join(lines))
    return 0
