"""Train and evaluate heads on cached features by dataset and backbone, using the dataset's recorded split."""

from __future__ import annotations

import json
import time

import numpy as np

from classifiers import streaming
from classifiers.heads import Head, Monitor, device_param, get_head_class
from classifiers.metrics import evaluate
from classifiers.persist import check_name, heads_dir, save
from classifiers.views import pick_recipe, view_arrays
from extractor.augment import check_views
from extractor.errors import HeadstartError
from extractor.store import FeatureStore, FeatureTable

SPLIT_NAMES = ("train", "val", "test")


NO_LABELS = "this dataset has no labels; heads need labeled images (class subfolders or --labels CSV when extracting)"


def require_labels(store: FeatureStore, dataset: str) -> None:
    """Refuse, before any extraction, a dataset whose images have no labels (compare and finetune would extract
    features for minutes and only then find that no head can be trained)."""
    members = store.catalog.members(dataset)
    if members and all(label is None for _, _, label, _ in members):
        raise HeadstartError(f"dataset {dataset!r}: {NO_LABELS}")


def split_arrays(table: FeatureTable) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labeled rows per split: (features, label strings)."""
    labels = np.array([lab if lab is not None else "" for lab in table.labels], dtype=object)
    splits = np.array(table.splits)
    labeled = labels != ""
    if not labeled.any():
        raise HeadstartError(NO_LABELS)
    return {name: (table.features[(splits == name) & labeled], labels[(splits == name) & labeled].astype(str))
            for name in SPLIT_NAMES}


def train_head(store: FeatureStore, dataset: str, backbone: str, kind: str, name: str,
               params: dict | None = None, weights: str | None = None, device: str | None = None,
               monitor: Monitor | None = None, views: int = 0, augment: str | None = None,
               stream: str = "auto") -> dict:
    """Fit on train (val for early stopping / temperature), score val and test, save; returns the manifest.

    `device` is where a head that trains on one (mlp) trains, unless its params name one. `monitor` hears
    each epoch and can stop the fit between steps (Stopped). With `views` K, each train image also brings its
    cached views 0..K-1 (of recipe `augment`, or the dataset's one recipe); val and test stay clean. `stream`
    (auto, always, never): read the table in blocks instead of whole (auto: beyond classifiers.streaming's
    threshold)."""
    check_name(name)
    cls = get_head_class(kind)
    head = cls(**{**device_param(cls, device), **(params or {})})
    head.monitor = monitor or head.monitor
    backbone = store.cached_backbone(dataset, backbone)
    fp_id = store.resolve(dataset, backbone, weights)
    if streaming.should_stream(store, dataset, fp_id, stream):
        if check_views(views):
            raise HeadstartError("--views with a table above the streaming threshold: views train in memory; "
                                 "leave out --views, or pass --stream never on a machine with the memory")
        return _train_streamed(store, dataset, fp_id, head, name, device)
    table = store.table(dataset, fp_id)
    data = split_arrays(table)
    X, y = data["train"]
    if len(X) == 0:
        raise HeadstartError(f"dataset {dataset!r} has no labeled training images with {backbone} features")
    X, y, used = _with_views(store, table, dataset, fp_id, (X, y), views, augment, backbone)
    start = time.perf_counter()
    head.fit(X, y, *data["val"])
    fit_seconds = time.perf_counter() - start
    metrics = {split: evaluate(data[split][1], head.predict_proba(data[split][0]), head.classes_)
               for split in ("val", "test") if len(data[split][0])}
    metrics["fit_seconds"] = fit_seconds
    names, counts = np.unique(data["train"][1], return_counts=True)
    info = {"fingerprint": {"id": fp_id, "spec": table.fingerprint}, "weights": table.source,
            "dataset": dataset, "dim": int(X.shape[1]), "metrics": metrics,
            "split_sizes": {s: int(len(data[s][0])) for s in SPLIT_NAMES}, "views": used,
            "train_counts": {str(c): int(n) for c, n in zip(names, counts, strict=True)}}
    return _save(store, head, name, info, {"streamed": False, "solver": IN_MEMORY_SOLVERS.get(head.kind, head.kind)})


def _with_views(store: FeatureStore, table: FeatureTable, dataset: str, fp_id: str, train: tuple, views: int,
                augment: str | None, backbone: str) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(X, y) of train, with each image's cached views 0..views-1 appended when asked for; and what was used."""
    X, y = train
    if not check_views(views):
        return X, y, None
    recipe = pick_recipe(store, dataset, fp_id, augment, backbone)
    Xv, yv = view_arrays(store, table, dataset, fp_id, recipe, views, backbone)
    used = {"recipe": recipe.name, "canonical": recipe.text, "per_image": views, "rows": int(len(Xv))}
    return np.concatenate([X, Xv]), np.concatenate([y, yv]), used


def _save(store: FeatureStore, head: Head, name: str, info: dict, training: dict) -> dict:
    """Save a trained head with its manifest: `info` plus what both training paths record alike."""
    info = {**info, "backbone": info["fingerprint"]["spec"]["backbone"],
            "trained_on": getattr(head, "trained_on", "cpu"),
            "training": {**training, "threshold_mb": streaming.threshold_bytes() >> 20}}
    if getattr(head, "sweep_", None):  # C=auto: the C chosen on val, and the sweep it came from
        info["chosen"] = {"C": head.chosen_C_, "sweep": head.sweep_}
    info["warnings"] = left_out(store, info["dataset"], info["fingerprint"]["id"], info["backbone"], info["weights"])
    info["warnings"] += imbalanced(info["train_counts"], head) + empty_splits(info["split_sizes"], info["train_counts"])
    return save(head, info, heads_dir(store), name)


IMBALANCE = 10  # the largest class this many times the smallest (in train) or more: a warning


def imbalanced(counts: dict[str, int], head: Head) -> list[str]:
    """A warning when the train split's classes are far apart in size and the head weighs them as they come:
    accuracy then favours the large classes (a head can score 0.95 by never naming a 5% class)."""
    params = getattr(head, "params", {})
    if len(counts) < 2 or "class_weight" not in params or params["class_weight"]:
        return []
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    if counts[big] < IMBALANCE * counts[small]:
        return []
    return [f"the train split is imbalanced: {big} has {counts[big]} images, {small} {counts[small]} "
            f"({counts[big] / counts[small]:.0f}x); accuracy favours the large classes: read f1_macro, or train with "
            f"class_weight=balanced (--param class_weight=balanced; \"params\": {{\"class_weight\": \"balanced\"}} "
            f"in POST /heads)"]


def empty_splits(sizes: dict[str, int], counts: dict[str, int]) -> list[str]:
    """A warning when val or test holds no image: the head then has no figure of that split (and, without val,
    no early stopping or C choice). A class's first image goes to train, so classes of one image leave them empty."""
    empty = [s for s in ("val", "test") if not sizes.get(s)]
    if not empty:
        return []
    single = sum(n == 1 for n in counts.values())
    why = (f"{single} of the {len(counts)} classes have a single train image: a class's first image goes to train, "
           f"and with the default shares it needs 4 images to reach all three splits" if single * 2 > len(counts) else
           "the split gave it no image (--split when extracting sets the shares; a folder named like the split "
           "fills it when the folders name the splits)")
    return [f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty, so the head has no "
            f"{' or '.join(empty)} figures: {why}"]


def left_out(store: FeatureStore, dataset: str, fp_id: str, backbone: str, weights: str | None) -> list[str]:
    """A warning when some usable images of the dataset have no vector of these features (an extract stopped
    early, or features cached by another dataset): a head trained now does not learn from them."""
    usable, covered = store.catalog.coverage_counts(dataset, fp_id)
    if covered == usable:
        return []
    return [f"{usable - covered} of the {usable} images of dataset {dataset!r} have no vectors of these "
            f"features (an extract stopped before the end?) and were left out: run `headstart extract DIR --dataset "
            f"{dataset} --backbone {backbone} --weights {weights or 'imagenet'}` to include them, then train again"]


IN_MEMORY_SOLVERS = {"logreg": "lbfgs (scikit-learn), whole table in memory",
                     "mlp": "adam over the shuffled table in memory", "centroid": "class means in memory"}


def _train_streamed(store: FeatureStore, dataset: str, fp_id: str, head: Head, name: str, device: str | None) -> dict:
    """train_head for a table read in blocks (classifiers.streaming): mlp and logreg."""
    splits = streaming.locate(store, dataset, fp_id)
    train, val = splits["train"], splits["val"]
    if not train.n:
        raise HeadstartError(f"dataset {dataset!r} has no labeled training images with these features")
    start = time.perf_counter()
    if head.kind == "logreg":
        solver = streaming.fit_logreg(head, train, val, device)
    elif head.kind == "mlp":
        streaming.fit_mlp(head, train, val)
        solver = {"solver": "adam over shuffled blocks"}
    else:
        raise HeadstartError(f"head {head.kind} trains in memory only and this table is above the streaming "
                             f"threshold (HEADSTART_STREAM_MB); use --head mlp or logreg, or --stream never")
    metrics: dict = {"fit_seconds": time.perf_counter() - start}
    for split in ("val", "test"):
        proba, y = streaming.predict(head, splits[split])
        if len(y):
            metrics[split] = evaluate(y, proba, head.classes_)
    fp = store.catalog.fingerprint(fp_id)
    counts = np.bincount(np.concatenate(train.codes), minlength=len(train.names)) if train.codes else \
        np.zeros(len(train.names), dtype=int)
    info = {"fingerprint": {"id": fp_id, "spec": json.loads(fp["spec"])}, "weights": fp["source"],
            "dataset": dataset, "dim": int(fp["dim"]), "metrics": metrics,
            "split_sizes": {s: int(splits[s].n) for s in SPLIT_NAMES}, "views": None,
            "train_counts": {str(c): int(n) for c, n in zip(train.names, counts, strict=True) if n}}
    return _save(store, head, name, info, {"streamed": True, "buffer_rows": streaming.buffer_rows(train.dim),
                                           **solver})
