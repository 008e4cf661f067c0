"""Prediction: image bytes -> safe decode -> the head's own backbone and preprocessing -> top-k labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifiers.persist import head_dir, load, read_manifest
from extractor.decode import DecodeError, Limits, preprocess
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, Resolved, resolve


def backbone_for(manifest: dict) -> Resolved:
    """The backbone configuration a head was trained on; refuses one whose fingerprint differs now."""
    spec = manifest["fingerprint"]["spec"]
    resolved = resolve(manifest["backbone"], manifest["weights"], spec.get("input_size"))
    if resolved.fingerprint.id != manifest["fingerprint"]["id"]:
        raise HeadstartError(
            f"head {manifest['name']!r} needs features {manifest['fingerprint']['id']} but backbone "
            f"{manifest['backbone']} with weights {manifest['weights']} now gives {resolved.fingerprint.id} "
            f"(weights file or torchvision changed); restore them or retrain the head")
    return resolved


def top_k(proba: np.ndarray, classes: np.ndarray, k: int) -> list[dict]:
    order = np.argsort(-proba)[:k]
    return [{"label": str(classes[i]), "probability": round(float(proba[i]), 6)} for i in order]


class Predictor:
    """A head with its backbone, both loaded once; `predict_bytes` answers per image, errors included."""

    def __init__(self, heads_dir: Path, name: str, device: str = "auto", limits: Limits | None = None,
                 backbone: LoadedBackbone | None = None) -> None:
        manifest = read_manifest(head_dir(heads_dir, name))
        resolved = backbone_for(manifest)
        self.head, self.manifest = load(heads_dir, name, fingerprint=resolved.fingerprint.id, device=device)
        self.backbone = backbone or LoadedBackbone(resolved, device).setup()
        self.limits = limits or Limits()

    def prepare(self, data: bytes) -> np.ndarray:
        """Bytes -> the backbone's uint8 input (raises DecodeError with the reason)."""
        return preprocess(data, self.backbone.resolved.size, self.limits)

    def predict_arrays(self, arrays: list[np.ndarray], k: int = 5) -> list[list[dict]]:
        features = self.backbone.embed_arrays(arrays)
        proba = self.head.predict_proba(features)
        return [top_k(row, self.head.classes_, k) for row in proba]

    def predict_bytes(self, items: list[bytes], k: int = 5) -> list[dict]:
        if k < 1:
            raise HeadstartError(f"top-k {k}: expected an integer >= 1")
        results: list[dict] = [{} for _ in items]
        good, arrays = [], []
        for i, data in enumerate(items):
            try:
                arrays.append(self.prepare(data))
                good.append(i)
            except DecodeError as exc:
                results[i] = {"error": str(exc)}
        if arrays:
            for i, top in zip(good, self.predict_arrays(arrays, k), strict=True):
                results[i] = {"top": top}
        return results
