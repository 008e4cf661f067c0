"""Score a saved head on a split of its dataset, or on another labeled dataset (a holdout set), with plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifiers import streaming
from classifiers.heads import Head
from classifiers.metrics import evaluate, small_split_warning
from classifiers.persist import head_dir, heads_dir, load
from classifiers.predict import extract_first
from classifiers.training import SPLIT_NAMES, split_arrays
from extractor.durable import cannot_write, output_folder
from extractor.errors import HeadstartError, NotFound
from extractor.store import FeatureStore


def eval_splits(split: str) -> tuple[str, ...]:
    """`train`, `val`, `test` or `all` (every labeled image) -> the splits scored."""
    if split == "all":
        return SPLIT_NAMES
    if split not in SPLIT_NAMES:
        raise HeadstartError(f"split {split!r}: expected one of {', '.join(SPLIT_NAMES)} or all")
    return (split,)


def evaluate_head(store: FeatureStore, name: str, split: str | None = None, plots_dir: Path | None = None,
                  tta: int = 0, device: str = "auto", stream: str = "auto", dataset: str | None = None) -> dict:
    """Score a saved head on one split (or `all`) of a dataset's cached features: its own dataset by default (split
    `test`), or another labeled dataset extracted with the head's backbone and weights (split `all`). Optionally
    write PNG plots. With `tta` N, also score it on probabilities averaged over N test-time views (reported beside,
    under "tta"). The vectors of the scored splits are read block by block, whatever the table's size
    (classifiers.streaming; 1.9-8.6x faster than reading the whole table for the test split of 100,000 x 2048 rows,
    1-4.4x for all of it): `stream` "never" reads them whole, as `tta` does."""
    head, manifest = load(heads_dir(store), name)
    own, fp_id = manifest["dataset"], manifest["fingerprint"]["id"]
    dataset = dataset or own
    split = split or ("test" if dataset == own else "all")
    splits = eval_splits(split)
    if plots_dir is not None:  # before the scoring: a bad folder is said at once
        plots_dir = output_folder(plots_dir, "--plots")
    scored = check_target(store, name, manifest, dataset, splits)
    notes = overlap_warning(store, name, manifest, scored) if dataset != own else []
    streaming.check_stream(stream)
    proba, y, table = _scores(store, head, dataset, fp_id, splits, stream if not tta else "never")
    if len(y) == 0:
        raise HeadstartError(f"the {split} split of {dataset!r} has no labeled images", cli="choose another --split",
                             api="choose another split")
    unknown = sorted(set(y) - set(np.asarray(head.classes_).astype(str)))
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        notes.append(f"{int(np.isin(y, unknown).sum())} images have labels head {name!r} was not trained on "
                     f"({shown}); they count as errors")
    metrics = evaluate(y, proba, head.classes_)
    notes += [w for w in [small_split_warning(split, metrics)] if w]
    result = {"head": name, "dataset": dataset, "split": split, "metrics": metrics, "plots": [], "warnings": notes}
    if tta:
        result["tta"] = {"views": tta, "metrics": evaluate(y, _tta_proba(store, head, manifest, name, dataset, table,
                                                                           splits, tta, device), head.classes_)}
    if plots_dir is not None:
        result["plots"] = _plots(head, name, result, y, proba, plots_dir)
    return result


def _scores(store: FeatureStore, head: Head, dataset: str, fp_id: str, splits: tuple[str, ...], stream: str):
    """(probabilities, labels, the table read whole or None) of the labeled images of `splits`: block by block
    unless `stream` is never."""
    if stream != "never":
        located = streaming.locate(store, dataset, fp_id)
        parts = [streaming.predict(head, located[s]) for s in splits]
        return np.concatenate([p for p, _ in parts]), np.concatenate([lab for _, lab in parts]), None
    table = store.table(dataset, fp_id)
    arrays = split_arrays(table)
    X = np.concatenate([arrays[s][0] for s in splits])
    y = np.concatenate([arrays[s][1] for s in splits])
    return (head.predict_proba(X) if len(X) else None), y, table


def check_target(store: FeatureStore, name: str, manifest: dict, dataset: str, splits: tuple[str, ...]) -> list[str]:
    """The dataset a head is scored on (evaluate, the mistakes and ROC views): its own (check_own) or another
    (check_other, whose scored content hashes are returned; none for its own)."""
    if dataset == manifest["dataset"]:
        check_own(store, name, manifest)
        return []
    return check_other(store, name, manifest, dataset, splits)


def check_own(store: FeatureStore, name: str, manifest: dict) -> None:
    """The head's own dataset is still there, with the head's features: one line saying how to get them back (a
    removed or pruned dataset, or one extracted again with other weights), rather than "the split is empty"."""
    dataset, backbone, fp_id = manifest["dataset"], manifest["backbone"], manifest["fingerprint"]["id"]
    if store.catalog.dataset(dataset) is None:
        raise NotFound(f"head {name!r} was trained on dataset {dataset!r}, which this home does not hold (removed "
                       f"with `datasets rm`, or extracted in another home)",
                       cli=f"extract it again (`headstart extract DIR --dataset {dataset} --backbone {backbone}`), "
                           f"or score the head on another labeled dataset with --dataset NAME",
                       api="extract it again (POST /extract), or score the head on another labeled dataset")
    if not store.catalog.coverage_counts(dataset, fp_id)[1]:  # (a count: no row per image)
        weights = (store.catalog.fingerprint(fp_id) or {}).get("source") or "imagenet"
        raise HeadstartError(f"dataset {dataset!r} has no vectors of the features head {name!r} was trained on "
                             f"({backbone}, weights {weights})", **extract_first(dataset, backbone, weights))


def check_other(store: FeatureStore, name: str, manifest: dict, dataset: str, splits: tuple[str, ...]) -> list[str]:
    """Another dataset: it has labels, and every labeled image of the splits has a vector of the head's features
    (else one line saying what to do). Returns those images' content hashes."""
    if store.catalog.dataset(dataset) is None:
        raise NotFound(f"no dataset {dataset!r}", cli="run `headstart extract` first", api="POST /extract first")
    fp_id = manifest["fingerprint"]["id"]
    covered = store.catalog.coverage(dataset, fp_id)
    if covered and all(label is None for _, label, _, _ in covered):  # an unlabeled folder: predictions, not scores
        raise HeadstartError(
            f"dataset {dataset!r} has no labels: a head is scored on labeled images (class subfolders or a --labels "
            f"CSV when extracting)", cli=f"`headstart predict {name} --dataset {dataset}` gives its predictions",
            api=f"GET /heads/{name}/predictions?dataset={dataset} gives its predictions")
    members = [(sha, has) for sha, label, split, has in covered if label is not None and split in splits]
    missing = sum(not has for _, has in members)
    if missing:
        weights = (store.catalog.fingerprint(fp_id) or {}).get("source") or "imagenet"
        raise HeadstartError(
            f"{missing} of the {len(members)} labeled images of dataset {dataset!r} ({'/'.join(splits)}) have no "
            f"vectors of the features head {name!r} was trained on ({manifest['backbone']}, weights {weights})",
            **extract_first(dataset, manifest["backbone"], weights))
    return [sha for sha, _ in members]


def overlap_warning(store: FeatureStore, name: str, manifest: dict, shas: list[str]) -> list[str]:
    """The warning when some of the scored images are in the train or val split of the head's own dataset."""
    seen = {sha for _, sha, _, split in store.catalog.members(manifest["dataset"]) if split in ("train", "val")}
    overlap = sum(sha in seen for sha in shas)
    return [f"{overlap} of these {len(shas)} images are also in the train or val split of {manifest['dataset']!r}"
            f" (the same content), which head {name!r} learned from: the figures are optimistic"] if overlap else []


def _tta_proba(store: FeatureStore, head: Head, manifest: dict, name: str, dataset: str, table,
               splits: tuple[str, ...], tta: int, device: str) -> np.ndarray:
    """Probabilities averaged over `tta` test-time views, in the order `split_arrays` gives the rows."""
    from classifiers.predict import backbone_for
    from classifiers.tta import dataset_proba

    resolved = backbone_for(manifest, head_dir(heads_dir(store), name))
    parts = []
    for split in splits:
        shas = [s for s, lab, sp in zip(table.sha256, table.labels, table.splits, strict=True)
                if sp == split and lab is not None]
        if shas:
            parts.append(dataset_proba(store, head, resolved, dataset, split, shas, tta, device))
    return np.concatenate(parts)


def _plots(head: Head, name: str, result: dict, y: np.ndarray, proba: np.ndarray, plots_dir: Path) -> list[str]:
    from classifiers import plots  # matplotlib: only when plots are asked for

    title = f"{name} on {result['dataset']} ({result['split']})"
    try:
        written = [plots.confusion(result["metrics"], plots_dir / f"{name}-confusion.png", title),
                   plots.roc(y, proba, head.classes_, plots_dir / f"{name}-roc.png", title)]
        if head.history:
            written.append(plots.training(head.history, plots_dir / f"{name}-training.png", name))
    except OSError as exc:
        raise cannot_write(plots_dir, "--plots", exc) from None
    return [str(p) for p in written]
