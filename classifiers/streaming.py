"""Heads on feature tables larger than memory: the table is read in blocks, shard by shard, never whole, for the
standardiser, for training (the mlp over shuffled blocks; logreg by a streamed softmax-regression solver) and for
evaluation. Training streams beyond a size threshold (HEADSTART_STREAM_MB of float32 features, default 1024); smaller
tables keep the exact in-memory solvers. Evaluation always reads block by block (faster at every size measured)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from classifiers.heads import NO_VAL_FOR_C_AUTO, Head, LogRegHead
from extractor.errors import HeadstartError
from extractor.store import FeatureStore

STREAM_CHOICES = ("auto", "always", "never")
# rows gathered (and shuffled) at once: a few shards' worth. Each buffer is copied a few times on its way to the
# model (float32, shuffled, standardised): with 256 MB a streamed train peaked at 1.8 GB RSS, with 64 MB 1.2 GB
BUFFER_BYTES = 64 << 20
LOGREG_SOLVER = {"epochs": 20, "patience": 3, "lr": 1e-3, "dropout": 0.0, "seed": 0}


def threshold_bytes() -> int:
    """Float32 feature bytes above which training and evaluation stream (HEADSTART_STREAM_MB, default 1024)."""
    raw = os.environ.get("HEADSTART_STREAM_MB", "1024")
    try:
        return max(0, int(float(raw) * (1 << 20)))
    except ValueError:
        raise HeadstartError(f"HEADSTART_STREAM_MB={raw!r}: expected a number of megabytes (e.g. 1024)") from None


def check_stream(stream: str) -> str:
    if stream not in STREAM_CHOICES:
        raise HeadstartError(f"--stream {stream!r}: expected one of {', '.join(STREAM_CHOICES)}")
    return stream


def should_stream(store: FeatureStore, dataset: str, fp_id: str, stream: str = "auto") -> bool:
    """Whether training reads the table in blocks: above the threshold, or when asked."""
    if check_stream(stream) != "auto":
        return stream == "always"
    counts = {fp: n for fp, _, _, n, _ in store.catalog.dataset_summary(dataset)["fingerprints"]}
    info = store.catalog.fingerprint(fp_id)
    return info is not None and counts.get(fp_id, 0) * info["dim"] * 4 > threshold_bytes()


@dataclass
class Blocks:
    """One split's labeled rows: per shard file, its row numbers and label codes (into `names`)."""

    store: FeatureStore
    dim: int
    names: list[str]
    files: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(len(r) for r in self.rows)

    def buffers(self, rows: int, rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(float32 features, label codes) of about `rows` rows at a time; with `rng`, shards in a random order
        and the rows of each buffer shuffled."""
        order = rng.permutation(len(self.files)) if rng is not None else range(len(self.files))
        xs, ys, held = [], [], 0
        for i in order:
            xs.append(self.store.read_shard(self.files[i], self.rows[i]).astype(np.float32, copy=False))
            ys.append(self.codes[i])
            held += len(self.rows[i])
            if held >= rows:
                yield _joined(xs, ys, rng)
                xs, ys, held = [], [], 0
        if held:
            yield _joined(xs, ys, rng)


def _joined(xs: list, ys: list, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    X, y = (np.concatenate(xs), np.concatenate(ys)) if len(xs) > 1 else (xs[0], ys[0])
    if rng is not None:
        perm = rng.permutation(len(y))
        X, y = X[perm], y[perm]
    return X, y


def locate(store: FeatureStore, dataset: str, fp_id: str) -> dict[str, Blocks]:
    """Each split's labeled rows, grouped by shard, from the catalog alone (no vector is read)."""
    dim = store.catalog.fingerprint(fp_id)["dim"]
    names: list[str] = []
    index: dict[str, int] = {}
    out = {s: Blocks(store, dim, names) for s in ("train", "val", "test")}
    pending: dict[str, tuple[str, list[int], list[int]]] = {}

    def close(split: str) -> None:
        file, rows, codes = pending.pop(split)
        out[split].files.append(file)
        out[split].rows.append(np.array(rows, np.int64))
        out[split].codes.append(np.array(codes, np.int32))

    for label, split, file, row in store.catalog.dataset_locations(dataset, fp_id):
        if label is None or split not in out:
            continue
        if split in pending and pending[split][0] != file:
            close(split)
        code = index.setdefault(label, len(index))
        if code == len(names):
            names.append(label)
        pending.setdefault(split, (file, [], []))
        pending[split][1].append(row)
        pending[split][2].append(code)
    for split in list(pending):
        close(split)
    return out


def buffer_rows(dim: int) -> int:
    return max(1024, BUFFER_BYTES // (dim * 4))


def standardise(train: Blocks) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale over all train rows in one streamed pass (float64 sums), as standardiser()."""
    total, sq, n = np.zeros(train.dim), np.zeros(train.dim), 0
    for X, _ in train.buffers(buffer_rows(train.dim)):
        total += X.sum(axis=0, dtype=np.float64)
        sq += np.square(X, dtype=np.float64).sum(axis=0)
        n += len(X)
    mean = total / n
    scale = np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
    scale[scale < 1e-12] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def _classes(train: Blocks) -> tuple[np.ndarray, np.ndarray]:
    """(sorted class names, map from label code to class index; -1 for labels not in train)."""
    present = np.unique(np.concatenate(train.codes)) if train.codes else np.array([], np.int32)
    classes = np.array(sorted(train.names[c] for c in present))
    if len(classes) < 2:
        raise HeadstartError(f"training needs at least 2 classes; received {len(classes)}")
    to_class = np.full(len(train.names), -1, np.int64)
    to_class[[train.names.index(c) for c in classes]] = np.arange(len(classes))
    return classes, to_class


def fit_mlp(head, train: Blocks, val: Blocks, hidden: list[int] | None = None,
            standard: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Train an MLPHead over shuffled blocks (hidden None: its own layers; [] a softmax regression). `standard`:
    the train rows' (mean, scale) when already computed."""
    import torch

    from classifiers.mlp import build_net

    head.classes_, to_class = _classes(train)
    head.mean_, head.scale_ = standard or standardise(train)
    device = head._device()
    head.trained_on = str(device)
    p = head.params
    codes = to_class[np.concatenate(train.codes)]
    rows, bs, rng = buffer_rows(train.dim), head._batch_size(train.n), np.random.default_rng(int(p["seed"]))
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(int(p["seed"]))
        layers = list(p["hidden"]) if hidden is None else hidden
        head.net = build_net(train.dim, layers, float(p["dropout"]), len(head.classes_)).to(device)

        def epoch(opt, loss_fn) -> dict:
            head.net.train()
            total, correct, n = 0.0, 0, 0
            for X, y in train.buffers(rows, rng):
                t, c = head._steps(head._tensor(X, device), torch.as_tensor(to_class[y], device=device), bs, opt,
                                   loss_fn)
                total, correct, n = total + t, correct + c, n + len(y)
            return {"train_loss": total / n, "train_acc": correct / n}

        def score(loss_fn) -> dict:
            loss, correct, n = 0.0, 0, 0
            for X, y in val.buffers(rows):
                known = to_class[y] >= 0
                if known.any():
                    part = head._score(head._tensor(X[known], device),
                                       torch.as_tensor(to_class[y][known], device=device), loss_fn)
                    k = int(known.sum())
                    loss, correct, n = loss + part["val_loss"] * k, correct + part["val_acc"] * k, n + k
            return {"val_loss": loss / max(n, 1), "val_acc": correct / max(n, 1)}

        head._train(epoch, score if val.n else None, device, codes)


def fit_logreg(head: LogRegHead, train: Blocks, val: Blocks, device: str | None) -> dict:
    """The same multinomial model as LogRegHead (L2 penalty |w|^2 / 2C beside the summed log-loss), fitted by Adam
    over shuffled blocks: the mlp trainer with no hidden layer. Returns the solver's description.

    C=auto: one streamed fit for each C of LogRegHead.C_GRID (the standardiser computed once), the one with the
    best val accuracy kept (ties: the smaller C), as the in-memory sweep does; the table is read once per fit."""
    if head.params["C"] != "auto":
        return _fit_logreg_at(head, train, val, device)
    if not val.n:
        raise HeadstartError(NO_VAL_FOR_C_AUTO)
    standard, best, head.sweep_ = standardise(train), None, []
    for C in LogRegHead.C_GRID:
        trial = LogRegHead(**{**head.params, "C": C})
        trial.monitor = head.monitor
        solver = _fit_logreg_at(trial, train, val, device, standard)
        proba, labels = predict(trial, val)
        known = np.isin(labels, trial.classes_)  # val labels never seen in train cannot be right: left out
        accuracy = float((trial.classes_[proba[known].argmax(axis=1)] == labels[known]).mean()) if known.any() else 0.0
        head.sweep_.append({"C": C, "val_accuracy": accuracy})
        if best is None or accuracy > best[0]:
            best = (accuracy, trial, solver)
    _, chosen, solver = best
    head.chosen_C_ = float(chosen.params["C"])
    for name in ("classes_", "mean_", "scale_", "coef_", "intercept_", "history", "trained_on"):
        setattr(head, name, getattr(chosen, name))
    return {**solver, "fits": len(LogRegHead.C_GRID)}


def _fit_logreg_at(head: LogRegHead, train: Blocks, val: Blocks, device: str | None,
                   standard: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """One streamed softmax-regression fit at the head's own (numeric) C (see fit_logreg)."""
    from classifiers.mlp import MLPHead

    epochs = min(LOGREG_SOLVER["epochs"], int(head.params["max_iter"]))  # max_iter caps the epochs here
    # hidden=[1] only passes the params check (at least one layer); fit_mlp builds it with none
    solver = MLPHead(device=device or "auto", hidden=[1], class_weight=head.params["class_weight"],
                     weight_decay=min(10.0, 1.0 / (float(head.params["C"]) * train.n)),
                     **{**LOGREG_SOLVER, "epochs": epochs})
    solver.monitor = head.monitor
    fit_mlp(solver, train, val, hidden=[], standard=standard)
    weight = solver.net[0].weight.detach().cpu().numpy().astype(np.float32)
    bias = solver.net[0].bias.detach().cpu().numpy().astype(np.float32)
    head.classes_, head.mean_, head.scale_, head.history = solver.classes_, solver.mean_, solver.scale_, \
        solver.history
    if len(head.classes_) == 2:  # scikit-learn's binary form: one row, the positive class against the other
        weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
    head.coef_, head.intercept_ = weight, bias
    head.trained_on = solver.trained_on
    return {"solver": "adam over shuffled blocks (softmax regression)", "epochs_run": len(solver.history),
            **{k: v for k, v in LOGREG_SOLVER.items() if k != "dropout"},
            "weight_decay": solver.params["weight_decay"]}


def predict(head: Head, blocks: Blocks) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, true label names) of a split's rows, block by block."""
    probas, labels = [], []
    for X, y in blocks.buffers(buffer_rows(blocks.dim)):
        probas.append(head.predict_proba(X))
        labels.append(np.array(blocks.names, dtype=object)[y].astype(str))
    if not probas:
        return np.empty((0, len(head.classes_)), np.float32), np.array([], str)
    return np.concatenate(probas), np.concatenate(labels)
