"""Evaluation metrics: accuracy, precision/recall/F1 (macro, weighted), per class, confusion matrix, ROC AUC."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def roc_auc(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float | None:
    """Binary AUC, or the macro one-vs-rest AUC over classes that have positives and negatives."""
    scores = []
    columns = [1] if len(classes) == 2 else range(len(classes))
    for k in columns:
        positive = y_true == classes[k]
        if positive.any() and (~positive).any():
            scores.append(skm.roc_auc_score(positive, proba[:, k]))
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
    out["per_class"] = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                              "support": int(s[i])} for i, lab in enumerate(labels)}
    out["labels"] = labels
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["roc_auc"] = roc_auc(y_true, proba, classes)
    known = np.isin(y_true, classes)
    if known.any():
        codes = np.searchsorted(classes, y_true[known])
        picked = np.clip(proba[known][np.arange(known.sum()), codes], 1e-12, 1.0)
        out["log_loss"] = float(-np.log(picked).mean())
    return out


def headline(m: dict) -> str:
    """One line: accuracy, macro F1, AUC."""
    if not m.get("n"):
        return "no images in this split"
    auc = f"{m['roc_auc']:.3f}" if m.get("roc_auc") is not None else "n/a"
    return f"accuracy {m['accuracy']:.3f}  f1_macro {m['f1_macro']:.3f}  roc_auc {auc}  (n={m['n']})"
