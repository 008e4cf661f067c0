"""Head benchmark: fit times on a 3000 x 8192 float32 matrix (2 classes), parity with scikit-learn, predict cost.

    python bench/bench_heads.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifiers.heads import LogRegHead  # noqa: E402
from classifiers.mlp import MLPHead  # noqa: E402
from extractor.model import LoadedBackbone, resolve  # noqa: E402


def features(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like sparse non-negative features, two overlapping classes (bottleneck-shaped data)."""
    shared = np.random.default_rng(12345)  # the class difference is the same for train, val and test
    direction = shared.normal(0, 1, dim) * (shared.random(dim) < 0.02)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = np.maximum(rng.normal(0, 1, (n, dim)) + np.outer(y - 0.5, direction) * 0.35, 0).astype(np.float32)
    return X, np.where(y == 1, "dog", "cat")


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = features(3000, 8192, 0)
    Xt, yt = features(1000, 8192, 1)
    Xv, yv = features(600, 8192, 2)
    start = time.perf_counter()
    ours = LogRegHead(C=1.0, max_iter=1000).fit(X, y)
    logreg_s = time.perf_counter() - start
    start = time.perf_counter()
    direct = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y)
    sklearn_s = time.perf_counter() - start
    acc_ours = float((ours.predict(Xt) == yt).mean())
    acc_direct = float((direct.predict(Xt) == yt).mean())
    start = time.perf_counter()
    mlp = MLPHead(epochs=30, patience=10**6).fit(X, y, Xv, yv)
    mlp_s = time.perf_counter() - start
    epochs = len(mlp.history)
    backbone = LoadedBackbone(resolve("vgg16", "random"), "cpu").setup()
    image = [np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)]
    backbone.embed_arrays(image)
    start = time.perf_counter()
    for _ in range(5):
        vec = backbone.embed_arrays(image)
    forward_s = (time.perf_counter() - start) / 5
    timings = {}
    for name, head in (("logreg", ours), ("mlp", mlp)):
        head.predict_proba(vec)
        start = time.perf_counter()
        for _ in range(50):
            head.predict_proba(vec)
        timings[name] = (time.perf_counter() - start) / 50
    print(json.dumps({
        "torch_threads": torch.get_num_threads(),
        "logreg_fit_s": round(logreg_s, 3), "sklearn_direct_fit_s": round(sklearn_s, 3),
        "logreg_test_acc": acc_ours, "sklearn_direct_test_acc": acc_direct,
        "accuracy_gap_pp": round(100 * abs(acc_ours - acc_direct), 3),
        "mlp_fit_s": round(mlp_s, 3), "mlp_epochs": epochs, "mlp_s_per_epoch": round(mlp_s / epochs, 3),
        "mlp_test_acc": float((mlp.predict(Xt) == yt).mean()),
        "vgg16_single_image_forward_ms": round(forward_s * 1000, 2),
        "head_predict_ms": {k: round(v * 1000, 3) for k, v in timings.items()},
        "head_over_forward": {k: round(v / forward_s, 5) for k, v in timings.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
