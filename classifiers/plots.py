"""PNG plots a person can open: confusion matrix, ROC curves, training curves (mlp)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from classifiers.metrics import roc_columns  # noqa: E402

LABELED_CLASSES = 60  # above this many classes, 30 of them are named on the axes (the others cannot be read)


def confusion(metrics: dict, path: Path, title: str) -> Path:
    matrix = np.array(metrics["confusion_matrix"])
    labels = metrics["labels"]
    n = len(labels)
    side = min(4 + 0.35 * n, 24)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = np.arange(n) if n <= LABELED_CLASSES else np.unique(np.linspace(0, n - 1, 30).round().astype(int))
    if n > LABELED_CLASSES:  # 1,000 classes: 7.8 s and a 19 MB PNG with every one named, unreadable
        title += f" ({n} classes, {len(ticks)} named)"
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=8 if n > 20 else 10)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=8 if n > 20 else 10)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, matrix[i, j], ha="center", va="center",
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


STYLES = ("-", "--", "-.", ":")
MAX_CURVES = 10


def roc(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, path: Path, title: str) -> Path:
    """One curve per class (the positive class when binary) with its AUC in the legend; line styles and
    widths differ, so that curves lying on each other stay visible."""
    fig, ax = plt.subplots(figsize=(6, 6))
    drawn = 0
    for k, positive in roc_columns(y_true, classes):
        if drawn == MAX_CURVES:
            break
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        area = roc_auc_score(positive, proba[:, k])
        ax.plot(fpr, tpr, STYLES[drawn % len(STYLES)], linewidth=2.6 - 0.18 * drawn, alpha=0.85,
                label=f"{classes[k]} (AUC {area:.3f})")
        drawn += 1
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title + ("" if len(classes) <= 10 else " (first 10 classes)"))
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch whose weights the mlp restored: the lowest val loss (train loss without val), first of ties."""
    key = "val_loss" if history and "val_loss" in history[0] else "train_loss"
    best, best_loss = None, float("inf")
    for h in history:
        if h[key] < best_loss - 1e-6:
            best, best_loss = h["epoch"], h[key]
    return best


def training(history: list[dict], path: Path, title: str) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    best = best_epoch(history)
    for key, ax in (("loss", left), ("acc", right)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [h[f"val_{key}"] for h in history], label="val")
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"restored (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
