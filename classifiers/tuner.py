"""The model being fine-tuned: a backbone whose last N stages train, under the dense head; and the data of one
epoch, read, verified, decoded and augmented in DataLoader workers (view `epoch` of each image: a pure function
of its content, the recipe and the epoch, so a resumed run sees the same pixels); and its start, fresh (its head
warm-started on the cached features) or from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from classifiers.mlp import MLPHead, build_net
from classifiers.params import FinetuneParams
from extractor.augment import Recipe, make_views
from extractor.decode import Limits, decode_job, preprocess
from extractor.engine_local import collate
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, Resolved, amp_dtype
from extractor.stages import Stage, run, split
from extractor.workers import workers_for


class EpochImages(Dataset):
    """Item i: (i, uint8 HWC image or None, the reason when None). `recipe` None: the clean image."""

    def __init__(self, items: list[tuple[str, Path, int]], size: int, recipe: Recipe | None, epoch: int,
                 limits: Limits) -> None:
        self.items, self.size, self.recipe, self.epoch, self.limits = items, size, recipe, epoch, limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        sha, path, _ = self.items[i]
        if self.recipe is None:  # the bytes are hashed again, as for views (extractor.augment.make_views)
            image, error = decode_job((sha, path, None), self.limits, lambda data: preprocess(data, self.size,
                                                                                                self.limits))
        else:
            views, error = make_views(sha, path, [self.epoch], self.size, self.limits, self.recipe)
            image = views[0] if error is None else None
        return i, image, None if error is None else str(error)


def loader(items: list, order: list[int], size: int, recipe: Recipe | None, epoch: int, batch: int,
           workers: int | None, limits: Limits) -> DataLoader:
    """Batches of the items in `order` (workers are forked, as in extraction; None: the default count)."""
    workers = workers_for(workers, len(order), batch)
    return DataLoader(EpochImages([items[i] for i in order], size, recipe, epoch, limits), batch_size=batch,
                      num_workers=workers, collate_fn=collate, prefetch_factor=2 if workers else None)


class Tuner:
    """Backbone stages (the frozen prefix runs without autograd; BatchNorm there stays in eval mode) and a dense
    head on standardised features."""

    def __init__(self, resolved: Resolved, unfreeze: int, device: str, classes: int, hidden: list[int],
                 dropout: float, mean: np.ndarray, scale: np.ndarray) -> None:
        self.backbone = LoadedBackbone(resolved, device).setup()
        self.device = self.backbone.device
        self.frozen, self.trainable = split(resolved.spec.name, self.backbone.model, unfreeze)
        for _, modules, _ in self.trainable:
            modules.requires_grad_(True)
        self.mean = torch.as_tensor(mean, device=self.device)
        self.scale = torch.as_tensor(scale, device=self.device)
        self.head = build_net(len(mean), hidden, dropout, classes).to(self.device)
        self.amp = amp_dtype(self.device, "auto")

    def trainable_modules(self) -> list[nn.Module]:
        return [modules for _, modules, _ in self.trainable]

    def parameter_groups(self, lr: float, head_lr: float) -> list[dict]:
        trunk = [p for m in self.trainable_modules() for p in m.parameters()]
        return [{"params": trunk, "lr": lr}, {"params": list(self.head.parameters()), "lr": head_lr}]

    def train(self, on: bool = True) -> None:
        """Training mode for the trainable stages and the head; BatchNorm layers stay in inference mode everywhere
        (their affine parameters train, their running statistics stay those of the pretrained weights: small
        fine-tuning batches would otherwise drag them, the usual advice when fine-tuning)."""
        for module in self.trainable_modules():
            module.train(on)
            for layer in module.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()
        self.head.train(on)

    def prefix(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> the frozen stages' output (no autograd: nothing is kept for a backward pass)."""
        with torch.no_grad(), self._autocast():
            return run(self.frozen, self.backbone.normalize(batch))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features = run(self.trainable, hidden.to(self.device))
        return self.head((features.float() - self.mean) / self.scale)

    def _autocast(self):
        if self.amp is None:
            from contextlib import nullcontext

            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp)

    def state(self) -> dict[str, dict]:
        return {"trainable": {f"{i}.{k}": v.detach().cpu().clone() for i, m in enumerate(self.trainable_modules())
                              for k, v in m.state_dict().items()},
                "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}

    def load(self, state: dict[str, dict]) -> None:
        for i, module in enumerate(self.trainable_modules()):
            prefix = f"{i}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state["trainable"].items()
                                    if k.startswith(prefix)})
        self.head.load_state_dict(state["head"])

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The whole trunk's tensors, as a weights file for the backbone (all stages, trained or not)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.backbone.model.state_dict().items()}


def stage_names(stages: list[Stage]) -> list[str]:
    return [s[0] for s in stages]


def start_tuner(resolved: Resolved, p: FinetuneParams, device: str, data: dict, classes: list[str], state: dict | None):
    """(tuner, optimizer, mean, scale): from the checkpoint's `state` when resuming, else fresh (seeded), its head
    warm-started on the cached features unless asked not to."""
    warm = None if state else warm_start(data, classes, p, device)
    mean, scale = (state["mean"], state["scale"]) if state else (torch.from_numpy(warm.mean_),
                                                                  torch.from_numpy(warm.scale_))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)  # the head's initial weights (when not warm-started) are seeded too
        tuner = Tuner(resolved, p.unfreeze, device, len(classes), p.hidden, p.dropout, mean.numpy(), scale.numpy())
    if state:
        tuner.load(state["model"])
    elif p.warm_start:
        tuner.head.load_state_dict(warm.net.state_dict())
    optimizer = torch.optim.Adam(tuner.parameter_groups(p.lr, p.head_lr))
    if state:
        optimizer.load_state_dict(state["optimizer"])
    return tuner, optimizer, mean, scale


def warm_start(data: dict, classes: list[str], p: FinetuneParams, device: str) -> MLPHead:
    """A dense head fitted on the cached features first (seconds), so that fine-tuning starts from a good head
    (with warm_start); its standardisation of the features is used either way."""
    X, y = data["train"]
    head = MLPHead(device=device, hidden=list(p.hidden), dropout=p.dropout, seed=p.seed,
                   epochs=30 if p.warm_start else 1)
    head.fit(X, y, *data["val"])
    if list(head.classes_) != classes:
        raise HeadstartError("internal: warm-start classes differ")
    return head
