"""Prediction: image bytes -> safe decode -> the head's own backbone and preprocessing -> top-k labels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from classifiers.heads import Head
from classifiers.persist import head_dir, load, read_manifest
from extractor.backbones import PREPROCESS_METHOD
from extractor.decode import DecodeError, Limits, preprocess
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, Resolved, resolve  # resolving imports no torch; loading does
from extractor.store import FeatureStore
from extractor.workers import usable_cores


def backbone_for(manifest: dict, version_dir: Path | None = None) -> Resolved:
    """The backbone configuration a head was trained on; refuses one whose fingerprint differs now. A fine-tuned
    head brings its own trunk weights (`trunk` in its version folder)."""
    spec = manifest["fingerprint"]["spec"]
    weights = str(Path(version_dir) / manifest["trunk"]) if manifest.get("trunk") and version_dir else \
        manifest["weights"]
    resolved = resolve(manifest["backbone"], weights, spec.get("input_size"),
                       spec.get("preprocess", {}).get("method", PREPROCESS_METHOD))
    if resolved.fingerprint.id != manifest["fingerprint"]["id"]:
        raise HeadstartError(
            f"head {manifest['name']!r} needs features {manifest['fingerprint']['id']} but backbone "
            f"{manifest['backbone']} with weights {manifest['weights']} now gives {resolved.fingerprint.id} "
            f"(weights file or torchvision changed); restore them or retrain the head")
    return resolved


def extract_first(dataset: str, backbone: str, weights: str) -> dict[str, str]:
    """The "what to do" of a refusal for vectors missing from a dataset, in each front door's words (the API never
    shows a server path: a weights file is named as such)."""
    shown = "<the weights file>" if Path(weights).is_absolute() else weights
    return {"cli": f"run `headstart extract DIR --dataset {dataset} --backbone {backbone} --weights {weights}` first",
            "api": f'POST /extract with "dataset": "{dataset}", "backbone": "{backbone}", "weights": "{shown}" first'}


PREDICT_CHUNK = 4096  # vectors read and scored at a time: memory stays flat however large the dataset


def cached_predictions(store: FeatureStore, head: Head, manifest: dict, dataset: str, split: str | None, k: int,
                       offset: int = 0, limit: int | None = None, score: bool = True) -> tuple[int, list[dict]]:
    """A dataset's images (one split, or all), by path, predicted from their vectors of the head's features (no
    forward pass): how many there are, and the rows offset..offset+limit, each with its path, content hash, split,
    true label and top-k. All or nothing: while some usable image has no vector, one line says how many and what to
    extract (a listing of some of the images would pass for the whole). `score=False`: the rows without their
    top-k (`top` None), for a caller that scores them otherwise (test-time views)."""
    fp_id, backbone = manifest["fingerprint"]["id"], manifest["backbone"]
    if store.catalog.dataset(dataset) is None:
        store.resolve(dataset, backbone)  # NotFound with the known names
    where = f" in its {split} split" if split else ""
    usable, covered = store.catalog.coverage_counts(dataset, fp_id, split)
    if not usable:
        raise HeadstartError(f"dataset {dataset!r} has no images{where}", cli="choose another --split",
                             api="choose another split")
    if covered < usable:
        raise HeadstartError(f"{usable - covered} of the {usable} images of dataset {dataset!r}{where} have no "
                             f"vectors of the features head {manifest['name']!r} was trained on ({backbone}, "
                             f"fingerprint {fp_id})",
                             **extract_first(dataset, backbone, manifest["weights"]))
    page = store.catalog.usable_rows(dataset, fp_id, split, offset, limit)
    dim, out = int(store.catalog.fingerprint(fp_id)["dim"]), []
    if not score:
        return usable, [{"image": r[0], "sha256": r[1], "true_label": r[2], "split": r[3], "top": None} for r in page]
    for start in range(0, len(page), PREDICT_CHUNK):
        chunk = page[start:start + PREDICT_CHUNK]
        proba = head.predict_proba(store.read_rows([(r[4], r[5]) for r in chunk], dim, np.float32))
        out += [{"image": r[0], "sha256": r[1], "true_label": r[2], "split": r[3], "top": top}
                for r, top in zip(chunk, top_k_rows(proba, head.classes_, k), strict=True)]
    return usable, out


def top_k(proba: np.ndarray, classes: np.ndarray, k: int) -> list[dict]:
    return top_k_rows(proba[None], classes, k)[0]


def top_k_rows(proba: np.ndarray, classes: np.ndarray, k: int) -> list[list[dict]]:
    """The k most probable labels of each row, probabilities to 6 decimals, ranked and rounded for all rows at
    once (rounding value by value in Python took half of a 100,000-image prediction from the cache)."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    values = np.round(np.take_along_axis(proba, order, axis=1).astype(np.float64), 6).tolist()
    labels = [str(c) for c in classes]
    return [[{"label": labels[i], "probability": v} for i, v in zip(row, vs, strict=True)]
            for row, vs in zip(order.tolist(), values, strict=True)]


class Predictor:
    """A head with its backbone; the backbone loads on first use (vectors from the cache need none), once.
    `predict_bytes` answers per image, errors included."""

    def __init__(self, heads_dir: Path, name: str, device: str = "auto", limits: Limits | None = None,
                 backbone: LoadedBackbone | None = None) -> None:
        version = head_dir(heads_dir, name)
        manifest = read_manifest(version)
        self.resolved = backbone_for(manifest, version)
        self.head, self.manifest = load(heads_dir, name, fingerprint=self.resolved.fingerprint.id, device=device)
        self.device, self._backbone = device, backbone
        self.limits = limits or Limits()

    @property
    def fingerprint(self) -> str:
        return self.resolved.fingerprint.id

    @property
    def backbone(self) -> LoadedBackbone:
        if self._backbone is None:
            self._backbone = LoadedBackbone(self.resolved, self.device).setup()
        return self._backbone

    def prepare(self, data: bytes) -> np.ndarray:
        """Bytes -> the backbone's uint8 input (raises DecodeError with the reason), decoded the way the head's
        features were (Pillow, or the device-decode path)."""
        if self.resolved.device_decode:
            from extractor.devicedecode import preprocess_on

            return preprocess_on(data, self.resolved.size, self.limits, self.resolved.preprocess.method)
        return preprocess(data, self.resolved.size, self.limits)

    def predict_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[dict]]:
        """Cached feature vectors -> top-k labels (no backbone needed)."""
        return top_k_rows(self.head.predict_proba(vectors), self.head.classes_, k)

    def predict_arrays(self, arrays: list[np.ndarray], k: int = 5, batch_size: int = 32,
                       tta: int = 0) -> list[list[dict]]:
        """Forward in batches of `batch_size`, so that memory does not grow with the number of images; with `tta`
        N, each image's probabilities are the mean over its N test-time views."""
        from classifiers.tta import image_proba

        out = []
        step = max(1, batch_size // max(tta, 1))
        for start in range(0, len(arrays), step):
            chunk = arrays[start:start + step]
            proba = image_proba(self.head, self.backbone, chunk, tta) if tta else \
                self.head.predict_proba(self.backbone.embed_arrays(chunk))
            out += top_k_rows(proba, self.head.classes_, k)
        return out

    def _prepare_or_error(self, data: bytes) -> np.ndarray | DecodeError:
        try:
            return self.prepare(data)
        except DecodeError as exc:
            return exc

    def decode_many(self, items: list[bytes]) -> list[np.ndarray | DecodeError]:
        """Each item's input for the backbone, or its DecodeError; decoded on a few threads (at most 8, and no more
        than the cores this process may use: a pinned container's, not the host's)."""
        if not items:
            return []
        with ThreadPoolExecutor(min(8, usable_cores(), len(items))) as pool:
            return list(pool.map(self._prepare_or_error, items))

    def predict_bytes(self, items: list[bytes], k: int = 5, batch_size: int = 32, tta: int = 0) -> list[dict]:
        """Per item the top-k labels or that item's decode error; decoding runs on a few threads."""
        if k < 1:
            raise HeadstartError(f"top-k {k}: expected an integer >= 1")
        if batch_size < 1:
            raise HeadstartError(f"batch size {batch_size}: expected an integer >= 1")
        results: list[dict] = [{} for _ in items]
        good, arrays = [], []
        for i, array in enumerate(self.decode_many(items)):
            if isinstance(array, DecodeError):
                results[i] = {"error": str(array)}
            else:
                arrays.append(array)
                good.append(i)
        if arrays:
            for i, top in zip(good, self.predict_arrays(arrays, k, batch_size, tta), strict=True):
                results[i] = {"top": top}
        return results
