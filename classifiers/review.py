"""A saved head's scores on the labeled images of a split, kept for the page: its mistakes and its ROC curves, on
its own dataset or on another labeled dataset extracted with its features."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from classifiers.evaluation import check_target, eval_splits
from classifiers.heads import Head
from classifiers.metrics import roc_columns
from classifiers.persist import heads_dir, load
from classifiers.predict import PREDICT_CHUNK
from classifiers.training import NO_LABELS
from extractor.errors import HeadstartError, NotFound
from extractor.store import FeatureStore

MISTAKE_ORDERS = ("confident", "unsure")


def mistakes(store: FeatureStore, name: str, split: str | None = None, true: str | None = None,
             predicted: str | None = None, limit: int = 100, offset: int = 0, order: str = "confident",
             dataset: str | None = None) -> dict:
    """A saved head's misclassified images on one split (default `test`; or `all`) of its dataset's cached features,
    or of another labeled dataset's (default `all`), most confident first (`order` "unsure": least confident first):
    {"total", "rows": [{path, sha256, true, predicted, confidence}]}; `true` / `predicted` filter to one cell of the
    confusion matrix."""
    if order not in MISTAKE_ORDERS:
        raise HeadstartError(f"order {order!r}: expected one of {', '.join(MISTAKE_ORDERS)}")
    head, scored = scored_split(store, name, split, dataset)
    proba = scored.proba
    picked = proba.argmax(axis=1) if len(proba) else np.empty(0, int)
    found = []
    for k, (path, sha, label) in enumerate(scored.members):
        guess = str(head.classes_[picked[k]])
        if guess != label and (true is None or label == true) and (predicted is None or guess == predicted):
            found.append({"path": path, "sha256": sha, "true": label, "predicted": guess,
                          "confidence": float(proba[k, picked[k]])})
    sign = -1.0 if order == "confident" else 1.0
    found.sort(key=lambda r: (sign * r["confidence"], r["path"]))
    return {"head": name, "dataset": scored.dataset, "split": scored.split, "total": len(found),
            "rows": found[offset:offset + limit]}


def roc_points(store: FeatureStore, name: str, split: str | None = None, max_points: int = 101,
               dataset: str | None = None) -> dict:
    """A saved head's ROC curves on one split (or `all`) of its dataset or another: one per class (the positive
    class when binary) that has positives and negatives there, each thinned to at most `max_points` points (ends
    kept), with its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    head, scored = scored_split(store, name, split, dataset)
    if not scored.any_labels:
        raise HeadstartError(NO_LABELS)
    y, proba = np.array([label for *_, label in scored.members], dtype=str), scored.proba
    curves = []
    if len(y):
        classes = head.classes_
        for k, positive in roc_columns(y, classes):
            fpr, tpr, _ = roc_curve(positive, proba[:, k])
            if len(fpr) > max_points:
                keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
                fpr, tpr = fpr[keep], tpr[keep]
            curves.append({"label": str(classes[k]), "auc": float(roc_auc_score(positive, proba[:, k])),
                           "fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]})
    return {"head": name, "dataset": scored.dataset, "split": scored.split, "n": int(len(y)), "curves": curves}


@dataclass(frozen=True)
class Scored:
    """A head's probabilities on the labeled members of one split of `dataset`: members (path, sha256, label)
    sorted by path, `proba` one row per member; `any_labels`: whether the dataset has labels at all."""

    dataset: str
    split: str
    members: list[tuple[str, str, str]]
    proba: np.ndarray
    any_labels: bool


SCORED_KEEP = 8  # (head, dataset, split) triples whose scores are kept
_scored: OrderedDict[tuple, Scored] = OrderedDict()
_scored_lock = threading.Lock()


def scored_split(store: FeatureStore, name: str, split: str | None = None,
                 dataset: str | None = None) -> tuple[Head, Scored]:
    """A saved head and its scores on one split (or `all`) of its dataset or of another labeled dataset, reading
    those vectors only. The scores of the last few (head, dataset, split) triples asked are kept: the mistakes view
    asks page after page, then the ROC curves, of one split. They are scored again when the head (its manifest:
    weights, parameters, classes) or the split's members (paths, content, labels) differ from those scored. The
    split defaults to `test` on the head's own dataset, to `all` on another."""
    head, manifest = load(heads_dir(store), name)
    own, fp_id = manifest["dataset"], manifest["fingerprint"]["id"]
    dataset = dataset or own
    split = split or ("test" if dataset == own else "all")
    splits = eval_splits(split)
    check_target(store, name, manifest, dataset, splits)  # there, with the head's features; else one line
    info = store.catalog.fingerprint(fp_id)
    if info is None:
        raise NotFound(f"no features with fingerprint {fp_id}")
    rows = store.catalog.dataset_rows(dataset, fp_id)
    any_labels = any(r[2] is not None for r in rows)
    rows = [r for r in rows if r[3] in splits and r[2] is not None]
    members = [(r[0], r[1], r[2]) for r in rows]
    digest = hashlib.sha256("\n".join("\t".join(m) for m in members).encode()).hexdigest()
    key = (str(store.home), name, json.dumps(manifest, sort_keys=True), dataset, split, digest)  # the manifest
    # names the head's weights by their hash, its parameters and classes
    with _scored_lock:
        if key in _scored:
            _scored.move_to_end(key)
            return head, _scored[key]
    where = [(r[4], r[5]) for r in rows]  # read and scored a block at a time: only the probabilities are kept
    blocks = [head.predict_proba(store.read_rows(where[i:i + PREDICT_CHUNK], info["dim"], np.float32))
              for i in range(0, len(where), PREDICT_CHUNK)]
    scored = Scored(dataset, split, members, np.concatenate(blocks) if blocks else
                    np.empty((0, len(head.classes_))), any_labels)
    with _scored_lock:
        _scored[key] = scored
        while len(_scored) > SCORED_KEEP:
            _scored.popitem(last=False)
    return head, scored
