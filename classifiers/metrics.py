"""Evaluation metrics: accuracy, precision/recall/F1 (macro, weighted), per class, confusion matrix, ROC AUC."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn import metrics as skm


def roc_columns(y_true: np.ndarray, classes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(probability column, positives) of each class whose ROC these labels define: the positive class when
    binary, else every class with positives and negatives here."""
    y = np.asarray(y_true).astype(str)
    for k in [1] if len(classes) == 2 else range(len(classes)):
        positive = y == str(classes[k])
        if positive.any() and (~positive).any():
            yield k, positive


def roc_auc(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float | None:
    """Binary AUC, or the macro one-vs-rest AUC over classes that have positives and negatives."""
    scores = [skm.roc_auc_score(positive, proba[:, k]) for k, positive in roc_columns(y_true, classes)]
    return float(np.mean(scores)) if scores else None


def evaluate(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict:
    """All metrics for one split; labels absent from training count as errors."""
    y_true = np.asarray(y_true).astype(str)
    classes = np.asarray(classes).astype(str)
    if len(y_true) == 0:
        return {"n": 0}
    y_pred = classes[np.argmax(proba, axis=1)]
    labels = sorted(set(classes) | set(y_true))
    out = {"n": int(len(y_true)), "accuracy": float(skm.accuracy_score(y_true, y_pred))}
    present = sorted(set(y_true) | set(y_pred))  # a class with no image here and none predicted is not averaged
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=present, average=avg,
                                                         zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # a class with no image in this split has no recall or F1 (null), not 0.0
    out["per_class"] = {lab: {"precision": float(p[i]), "recall": float(r[i]) if s[i] else None,
                              "f1": float(f[i]) if s[i] else None, "support": int(s[i])}
                        for i, lab in enumerate(labels)}
    out["labels"] = labels
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["roc_auc"] = roc_auc(y_true, proba, classes)
    known = np.isin(y_true, classes)
    if known.any():
        codes = np.searchsorted(classes, y_true[known])
        picked = np.clip(proba[known][np.arange(known.sum()), codes], 1e-12, 1.0)
        out["log_loss"] = float(-np.log(picked).mean()) + 0.0  # + 0.0: never -0.0 (printed -0.000) when all are 1
    return out


SMALL_CLASS = 5  # fewer images of a class in a val/test split than this makes its figures noisy


def headline(m: dict) -> str:
    """One line: accuracy, macro F1, AUC, log loss."""
    if not m.get("n"):
        return "no images in this split"
    auc = f"{m['roc_auc']:.3f}" if m.get("roc_auc") is not None else "n/a"
    loss = f"  log_loss {m['log_loss']:.3f}" if m.get("log_loss") is not None else ""
    return f"accuracy {m['accuracy']:.3f}  f1_macro {m['f1_macro']:.3f}  roc_auc {auc}{loss}  (n={m['n']})"


def small_classes(m: dict) -> dict[str, int]:
    """Classes present in the split with fewer than SMALL_CLASS images."""
    return {lab: v["support"] for lab, v in m.get("per_class", {}).items() if 0 < v["support"] < SMALL_CLASS}


def small_split_warning(split: str, m: dict, sampled: bool = False) -> str | None:
    """A warning when the split holds classes with too few images to judge by; `sampled`: it is a --sample."""
    small = small_classes(m)
    if not small:
        return None
    listed = ", ".join(f"{lab} ({n})" for lab, n in list(small.items())[:8]) + (" ..." if len(small) > 8 else "")
    classes = f"{len(small)} class{'es' if len(small) > 1 else ''}"
    if split == "all":  # every labeled image of a dataset (evaluate --split all): no share to enlarge
        return f"fewer than {SMALL_CLASS} images of {classes}: {listed}; their figures are noisy " \
               f"(add images)"
    more = "use a larger --sample, add images," if sampled else "add images,"
    return (f"the {split} split has fewer than {SMALL_CLASS} images of {classes}: {listed}; its figures "
            f"are noisy ({more} or give {split} a larger share: --split when extracting, or more images in its "
            f"folder when the folders name the splits)")


PAIRS_SHOWN = 10


def _confused_pairs(labels: list[str], matrix: list[list[int]]) -> list[str]:
    pairs = sorted(((c, i, j) for i, row in enumerate(matrix) for j, c in enumerate(row) if i != j and c),
                   key=lambda p: (-p[0], p[1], p[2]))
    if not pairs:
        return [f"no confusions among the {len(labels)} classes"]
    lines = [f"{len(labels)} classes, too many for a matrix: the {min(PAIRS_SHOWN, len(pairs))} most frequent "
             f"confusions of {len(pairs)} (true -> predicted: images; evaluate --json has the matrix):"]
    return lines + [f"  {labels[i]} -> {labels[j]}: {c}" for c, i, j in pairs[:PAIRS_SHOWN]]


def confusion_lines(m: dict, max_classes: int = 15) -> list[str]:
    """A compact confusion matrix (rows true, columns predicted by index), for up to `max_classes` classes; above,
    the most frequent confusions (as the page shows them)."""
    labels, matrix = m.get("labels", []), m.get("confusion_matrix", [])
    if not labels:
        return []
    if len(labels) > max_classes:
        return _confused_pairs(labels, matrix)
    width = max(3, len(str(max(max(row) for row in matrix))) + 1)
    name = max(len(lab[:16]) for lab in labels)
    lines = ["confusion matrix (rows: true label, columns: predicted, by number):",
             " " * (name + 4) + "".join(f"{j:>{width}}" for j in range(len(labels)))]
    for i, (lab, row) in enumerate(zip(labels, matrix, strict=True)):
        lines.append(f"{i:>2} {lab[:16]:<{name}} " + "".join(f"{c:>{width}}" for c in row))
    return lines
