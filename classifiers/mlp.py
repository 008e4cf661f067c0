"""The classic dense head in PyTorch: (Dense relu, Dropout) x N, softmax; Adam, early stopping on val, seeded."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from classifiers import params
from classifiers.heads import Head, encode, standardiser
from extractor.errors import Diverged, HeadstartError
from extractor.model import resolve_device


def build_net(dim: int, hidden: list[int], dropout: float, n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class MLPHead(Head):
    kind = "mlp"
    Params = params.MLPParams
    on_device = True
    description = "dense head (512 relu, dropout 0.3, 512 relu, dropout 0.3, softmax) in PyTorch, early stopping"

    def __init__(self, device: str = "auto", **values) -> None:
        super().__init__(**values)
        self.device = device

    def _device(self, loading: bool = False) -> torch.device:
        """Where it runs: auto, cpu, cuda[:N]. A head trained on CUDA loads on the CPU where there is none."""
        try:
            if not isinstance(self.device, str):
                raise HeadstartError(f"device {self.device!r}: expected auto, cpu, cuda or cuda:N")
            return resolve_device(self.device)
        except HeadstartError:
            if loading:  # trained on a GPU this host lacks: run where it can
                return resolve_device("auto")
            raise

    def _loss_weights(self, codes: np.ndarray, device: torch.device) -> torch.Tensor | None:
        mode = self.params["class_weight"]
        if mode is None:
            return None
        if mode != "balanced":
            raise HeadstartError(f"class_weight {mode!r}: expected balanced or null")
        counts = np.bincount(codes, minlength=len(self.classes_)).astype(np.float64)
        weights = counts.sum() / (len(self.classes_) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32, device=device)

    def fit(self, X, y, X_val=None, y_val=None):
        codes = self._set_classes(y)
        self.mean_, self.scale_ = standardiser(X)
        device = self._device()
        self.trained_on = str(device)
        p = self.params
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(p["seed"]))
            self.net = build_net(X.shape[1], list(p["hidden"]), float(p["dropout"]), len(self.classes_)).to(device)
            Xt, yt = self._tensor(X, device), torch.as_tensor(codes, device=device)
            gen = torch.Generator(device="cpu").manual_seed(int(p["seed"]))
            bs = self._batch_size(len(X))
            val = None
            if X_val is not None and len(X_val):
                val_codes, known = encode(self.classes_, y_val)
                val = (self._tensor(X_val[known], device), torch.as_tensor(val_codes, device=device))

            def epoch(opt, loss_fn) -> dict:
                order = torch.randperm(len(Xt), generator=gen).to(device)  # one gather, then contiguous slices
                self.net.train()
                total, correct = self._steps(Xt[order], yt[order], bs, opt, loss_fn)
                return {"train_loss": total / len(Xt), "train_acc": correct / len(Xt)}

            self._train(epoch, (lambda loss_fn: self._score(*val, loss_fn)) if val else None, device, codes)
        return self

    def _tensor(self, X: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.as_tensor((np.asarray(X, np.float32) - self.mean_) / self.scale_, device=device)

    def _train(self, epoch_fn, score_fn, device, codes: np.ndarray) -> None:
        """Epochs with early stopping on val: `epoch_fn(opt, loss_fn)` runs one pass over the train rows (all in
        memory, or streamed in blocks: classifiers.streaming), `score_fn(loss_fn)` scores val (None: no val)."""
        p = self.params
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        opt = torch.optim.Adam(self.net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]),
                               **fused)
        loss_fn = nn.CrossEntropyLoss(weight=self._loss_weights(codes, device))
        best, best_loss, waited = None, float("inf"), 0
        for epoch in range(int(p["epochs"])):
            start = time.perf_counter()
            row = {"epoch": epoch + 1, **epoch_fn(opt, loss_fn)}
            if score_fn is not None:
                row.update(score_fn(loss_fn))
            row["seconds"] = time.perf_counter() - start
            if not all(np.isfinite(v) for k, v in row.items() if k.endswith("loss")):
                raise Diverged(f"training mlp diverged: the loss is not a finite number at epoch {epoch + 1}; "
                               f"lower lr (now {p['lr']:g}) or weight_decay")
            self.history.append(row)
            self.monitor.on_epoch(row, int(p["epochs"]))
            self.monitor.check()
            watched = row.get("val_loss", row["train_loss"])
            if watched < best_loss - 1e-6:
                best_loss, waited = watched, 0
                best = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                waited += 1
                if score_fn is not None and waited >= int(p["patience"]):
                    break
        if best is not None:
            self.net.load_state_dict(best)
        self.net.eval()

    def _steps(self, Xs, ys, bs: int, opt, loss_fn) -> tuple[float, int]:
        """Optimiser steps over rows already shuffled, in contiguous batch slices: (summed loss, correct)."""
        total, correct = 0.0, 0
        for step, i in enumerate(range(0, len(Xs), bs)):
            if step % 64 == 63:
                self.monitor.check()
            xb, yb = Xs[i:i + bs], ys[i:i + bs]
            opt.zero_grad(set_to_none=True)
            out = self.net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
        return total, correct

    def _batch_size(self, n: int) -> int:
        """`auto`: about 12 steps an epoch, between 32 and 256 rows (big batches are what makes CPU fast)."""
        size = self.params["batch_size"]
        if size == "auto":
            return int(min(256, max(32, n // 12)))
        if not isinstance(size, int) or size < 1:
            raise HeadstartError(f"batch_size {size!r}: expected auto or an integer >= 1")
        return size

    def _score(self, X, y, loss_fn) -> dict:
        self.net.eval()
        with torch.inference_mode():
            out = self.net(X)
            return {"val_loss": float(loss_fn(out, y)), "val_acc": float((out.argmax(1) == y).float().mean())}

    def predict_proba(self, X):
        device = next(self.net.parameters()).device
        with torch.inference_mode():
            out = self.net(self._tensor(X, device))
            return torch.softmax(out, dim=1).float().cpu().numpy()

    def state(self):
        tensors = {f"net.{k}": v.detach().cpu().contiguous().numpy() for k, v in self.net.state_dict().items()}
        return {"mean": self.mean_, "scale": self.scale_, **tensors}

    def set_state(self, tensors):
        self.mean_, self.scale_ = tensors["mean"], tensors["scale"]
        net = build_net(self.mean_.shape[0], list(self.params["hidden"]), float(self.params["dropout"]),
                        len(self.classes_))
        own = net.state_dict()
        given = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        if set(given) != set(own) or any(tuple(given[k].shape) != tuple(own[k].shape) for k in own):
            raise HeadstartError(f"mlp tensors do not match hidden={self.params['hidden']} with "
                                 f"{len(self.classes_)} classes and {self.mean_.shape[0]} inputs")
        net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in given.items()})
        self.net = net.to(self._device(loading=True)).eval()
