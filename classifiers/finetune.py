"""Fine-tuning the last stages of a backbone together with a dense head, as a resumable run: the dataset's recorded
train split (files re-read and verified by content hash), early stopping on val accuracy with the best epoch
restored, a crash-safe checkpoint after every epoch. The result is a head like the others whose fingerprint is
the backbone with the fine-tuned weights, and the dataset's features under it land in the cache."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from classifiers.checkpoint import Checkpoint
from classifiers.heads import Monitor
from classifiers.metrics import evaluate
from classifiers.mlp import MLPHead
from classifiers.params import FinetuneParams, check
from classifiers.persist import check_name, heads_dir, save
from classifiers.training import require_labels, split_arrays
from classifiers.tuner import Tuner, loader, start_tuner
from extractor import augment
from extractor.decode import Limits
from extractor.definition import member_files
from extractor.errors import HeadstartError, NotFound
from extractor.lookup import cached_backbone
from extractor.model import resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from extractor.weights import TRUNK
from extractor.workers import check_workers


@dataclass
class Request:
    """One fine-tuning: the CLI and the API build this."""

    dataset: str
    backbone: str | None  # None: vgg16, or the one backbone whose features the dataset has (cached_backbone)
    name: str
    weights: str | None = None
    params: dict = field(default_factory=dict)
    device: str = "auto"
    workers: int | None = None
    restart: bool = False


@dataclass
class Epoch:
    """A progress event: epoch (from 1) of epochs, batch of batches, running loss, last val accuracy."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    val_accuracy: float | None
    elapsed: float


def _base(store: FeatureStore, req: Request) -> tuple[str, str]:
    """The fingerprint and weights of the features the run starts from (extracting them when they are missing)."""
    plain = [fp for fp, b, _, _, src in store.catalog.dataset_summary(req.dataset)["fingerprints"]
             if b == req.backbone and not src.startswith("head:")] if store.catalog.dataset(req.dataset) else []
    if req.weights is None and len(plain) == 1:  # fine-tuned features are no default starting point
        return plain[0], store.catalog.fingerprint(plain[0])["source"]
    try:
        fp_id = store.resolve(req.dataset, req.backbone, req.weights)
    except NotFound:
        if store.catalog.dataset(req.dataset) is None:
            raise
        fp_id = None  # the dataset has no features of this backbone yet: extract them (default weights)
    if fp_id is None or not store.catalog.dataset_rows(req.dataset, fp_id):
        sources = store.catalog.sources(req.dataset)
        extract(ExtractOptions(data_dir=Path(sources[0]["root"]), dataset=req.dataset, backbone=req.backbone,
                               weights=req.weights or "imagenet", device=req.device, decode="cpu"), store)
        fp_id = store.resolve(req.dataset, req.backbone, req.weights)
    return fp_id, store.catalog.fingerprint(fp_id)["source"]


def _items(store: FeatureStore, dataset: str, table, classes: list[str]) -> dict[str, list]:
    """Per split: (sha256, file, class index) of its labeled images with cached features."""
    files = member_files(store.catalog, dataset)
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for sha, label, split in zip(table.sha256, table.labels, table.splits, strict=True):
        if label in index and sha in files:
            out[split].append((sha, files[sha], index[label]))
    return out


def finetune(store: FeatureStore, req: Request, monitor: Monitor | None = None,
             progress: Callable[[Epoch], None] | None = None) -> dict:
    """Run (or resume) the fine-tuning of `req`; the saved head's manifest."""
    check_name(req.name)
    p = check("finetune", FinetuneParams, req.params)
    recipe = augment.parse(p.augment) if p.augment else None
    monitor = monitor or Monitor()
    check_workers(req.workers)
    require_labels(store, req.dataset)
    req = replace(req, backbone=cached_backbone(store, req.dataset, req.backbone))
    fp_id, source = _base(store, req)
    table = store.table(req.dataset, fp_id)
    data = split_arrays(table)
    classes = sorted(set(data["train"][1]))
    if len(classes) < 2 or not len(data["val"][0]):
        raise HeadstartError(f"fine-tuning needs at least 2 classes in train and some val images; dataset "
                             f"{req.dataset!r} has {len(classes)} classes and {len(data['val'][0])} val images")
    items = _items(store, req.dataset, table, classes)
    resolved = resolve(req.backbone, source, table.fingerprint["input_size"])
    config = {"dataset": req.dataset, "backbone": req.backbone, "base": fp_id, "classes": classes,
              "params": p.model_dump()}
    ckpt = Checkpoint(store.home, req.name, config)
    state = ckpt.load(req.restart)
    tuner, optimizer, mean, scale = start_tuner(resolved, p, req.device, data, classes, state)
    run = Run(tuner, optimizer, items, resolved.size, recipe, p, req, monitor, progress)
    history, best = (state["history"], state["best"]) if state else ([], None)
    try:
        best = run.epochs(history, best, lambda **s: ckpt.save({"model": tuner.state(), "mean": mean,
                                                               "scale": scale, **s}))
    except KeyboardInterrupt:  # Ctrl-C keeps the best epoch so far (the checkpoint stays for a resume)
        if run.best is None:
            raise
        tuner.load(run.best["model"])
        _finish(store, req, tuner, classes, p, fp_id, history, run.best, run.failures, table)
        raise
    tuner.load(best["model"])
    manifest = _finish(store, req, tuner, classes, p, fp_id, history, best, run.failures, table)
    ckpt.remove()
    return manifest


class Run:
    """The epochs of one fine-tuning; `epochs()` trains until the last epoch or early stopping."""

    def __init__(self, tuner: Tuner, optimizer, items: dict, size: int, recipe, p: FinetuneParams, req: Request,
                 monitor: Monitor, progress: Callable | None) -> None:
        self.tuner, self.optimizer, self.items, self.size, self.recipe = tuner, optimizer, items, size, recipe
        self.p, self.req, self.monitor, self.progress = p, req, monitor, progress
        self.workers = req.workers
        self.failures: dict[str, str] = {}
        self.cached: dict[str, list] = {}  # frozen-prefix outputs of clean images, reused every epoch
        self.best: dict | None = None  # the best epoch so far (also while interrupted)

    def epochs(self, history: list, best: dict | None, checkpoint: Callable) -> dict:
        if best is None:  # the starting point (the warm-started head) is epoch 0: fine-tuning must beat it
            best = {"epoch": 0, "val_acc": self._score("val")[1], "model": self.tuner.state()}
        self.best = best
        waited = len(history) - best["epoch"]
        for epoch in range(len(history), self.p.epochs):
            if waited >= self.p.patience:
                break
            started = time.monotonic()
            with torch.random.fork_rng(devices=self._devices()):
                torch.manual_seed(self.p.seed * 1_000_003 + epoch)  # dropout: a function of (seed, epoch)
                loss, acc = self._train_epoch(epoch, started)
            val_loss, val_acc = self._score("val")
            row = {"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "val_loss": val_loss,
                   "val_acc": val_acc, "seconds": time.monotonic() - started}
            history.append(row)
            if val_acc > best["val_acc"]:
                best, waited = {"epoch": epoch + 1, "val_acc": val_acc, "model": self.tuner.state()}, 0
            else:
                waited += 1
            self.best = best
            checkpoint(optimizer=self.optimizer.state_dict(), history=history, best=best)
            self.monitor.on_epoch(row, self.p.epochs)
        return best

    def _devices(self) -> list[int]:
        return [self.tuner.device.index or 0] if self.tuner.device.type == "cuda" else []

    def _batches(self, split: str, order: list[int], epoch: int, augmented: bool):
        """(item indices, frozen-prefix output) batches; clean images' prefixes are computed once per run."""
        limits = Limits()
        if augmented:
            for idx, batch, bad in loader(self.items[split], order, self.size, self.recipe, epoch,
                                          self.p.batch_size, self.workers, limits):
                self._bad(split, order, bad)
                if batch is not None:
                    yield [order[i] for i in idx], self.tuner.prefix(batch)
            return
        if split not in self.cached:
            everything = list(range(len(self.items[split])))
            prefixes: list = [None] * len(everything)
            for idx, batch, bad in loader(self.items[split], everything, self.size, None, 0, self.p.batch_size,
                                          self.workers, limits):
                self._bad(split, everything, bad)
                if batch is not None:
                    for i, h in zip(idx, self.tuner.prefix(batch), strict=True):
                        prefixes[i] = h
                self.monitor.check()
            self.cached[split] = prefixes
        usable = [i for i in order if self.cached[split][i] is not None]
        for start in range(0, len(usable), self.p.batch_size):
            chunk = usable[start:start + self.p.batch_size]
            yield chunk, torch.stack([self.cached[split][i] for i in chunk])

    def _bad(self, split: str, order: list[int], bad: list[tuple[int, str]]) -> None:
        for i, reason in bad:
            self.failures[str(self.items[split][order[i]][1])] = reason

    def _train_epoch(self, epoch: int, started: float) -> tuple[float, float]:
        n = len(self.items["train"])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.p.seed * 7919 + epoch)).tolist()
        batches = -(-n // self.p.batch_size)
        total, correct, seen = 0.0, 0, 0
        self.tuner.train(True)
        for b, (idx, hidden) in enumerate(self._batches("train", order, epoch, self.recipe is not None)):
            self.monitor.check()
            labels = torch.tensor([self.items["train"][i][2] for i in idx], device=self.tuner.device)
            self.optimizer.zero_grad(set_to_none=True)
            out = self.tuner.logits(hidden)
            loss = torch.nn.functional.cross_entropy(out, labels)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == labels).sum())
            seen += len(idx)
            if self.progress:
                self.progress(Epoch(epoch + 1, self.p.epochs, b + 1, batches, total / seen, None,
                                    time.monotonic() - started))
        if not seen:
            raise HeadstartError("no train image could be read for fine-tuning (see the failures)")
        if not np.isfinite(total):
            raise HeadstartError(f"fine-tuning diverged (the loss is not a finite number at epoch {epoch + 1}); "
                                 f"lower lr ({self.p.lr:g}) or head_lr ({self.p.head_lr:g})")
        return total / seen, correct / seen

    def _score(self, split: str) -> tuple[float, float]:
        """Loss and accuracy on a split's clean images (their prefixes computed once)."""
        self.tuner.train(False)
        total, correct, seen = 0.0, 0, 0
        with torch.no_grad():
            for idx, hidden in self._batches(split, list(range(len(self.items[split]))), 0, False):
                labels = torch.tensor([self.items[split][i][2] for i in idx], device=self.tuner.device)
                out = self.tuner.logits(hidden)
                total += float(torch.nn.functional.cross_entropy(out, labels, reduction="sum"))
                correct += int((out.argmax(1) == labels).sum())
                seen += len(idx)
        return (total / seen, correct / seen) if seen else (float("nan"), 0.0)


def _finish(store: FeatureStore, req: Request, tuner: Tuner, classes: list[str], p: FinetuneParams, base: str,
            history: list, best: dict, failures: dict, table) -> dict:
    """Save the trunk, cache the dataset's features under its fingerprint, score the head, save it."""
    with tempfile.TemporaryDirectory(dir=store.home) as tmp:
        trunk = Path(tmp) / TRUNK
        save_file(tuner.trunk_state(), str(trunk))
        summary = extract(ExtractOptions(data_dir=Path(store.catalog.sources(req.dataset)[0]["root"]),
                                         dataset=req.dataset, backbone=req.backbone, weights=str(trunk),
                                         size=table.fingerprint["input_size"], device=req.device, decode="cpu"),
                          store)  # the pixels fine-tuning saw: the CPU path's
        tuned = store.table(req.dataset, summary.fingerprint)
        head = MLPHead(device=req.device, hidden=list(p.hidden), dropout=p.dropout, seed=p.seed, lr=p.head_lr)
        head.classes_, head.mean_, head.scale_ = np.array(classes), tuner.mean.cpu().numpy(), tuner.scale.cpu().numpy()
        head.net, head.history = tuner.head.eval(), history
        splits = split_arrays(tuned)
        metrics = {s: evaluate(splits[s][1], head.predict_proba(splits[s][0]), head.classes_)
                   for s in ("val", "test") if len(splits[s][0])}
        info = {"fingerprint": {"id": summary.fingerprint, "spec": tuned.fingerprint}, "weights": f"head:{req.name}",
                "backbone": req.backbone, "dataset": req.dataset, "dim": int(tuner.mean.shape[0]), "metrics": metrics,
                "split_sizes": {s: int(len(splits[s][0])) for s in splits}, "trunk": TRUNK,
                "trained_on": str(tuner.device),
                "finetune": {"params": p.model_dump(), "base_fingerprint": base, "best_epoch": best["epoch"],
                             "epochs_run": len(history), "failures": [{"path": k, "reason": v}
                                                                     for k, v in sorted(failures.items())][:100]}}
        manifest = save(head, info, heads_dir(store), req.name, files={TRUNK: trunk})
    fp = store.catalog.fingerprint(summary.fingerprint)
    store.catalog.register_fingerprint(fp["id"], fp["backbone"], fp["dim"], fp["spec"], f"head:{req.name}")
    return manifest
