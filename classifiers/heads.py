"""Head registry and the scikit-learn style protocol; logistic regression and nearest-centroid heads."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from classifiers import params
from extractor.errors import Diverged, HeadstartError, NotFound, Stopped

# scikit-learn's note on labels that look like a regression target printed its source path into `train`'s output;
# training says it in its own words (extractor.summary at extract, classifiers.training's empty-split warning)
warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%", category=UserWarning)


@dataclass
class Monitor:
    """What a caller hears of a fit and how it stops one: `should_stop` is asked between steps (epochs,
    batches); a True answer raises Stopped. `on_epoch(row, epochs)` reports each finished epoch."""

    should_stop: Callable[[], bool] = lambda: False
    on_epoch: Callable[[dict, int], None] = lambda row, epochs: None

    def check(self) -> None:
        if self.should_stop():
            raise Stopped()


class Head:
    """fit(X, y) -> self with classes_; predict_proba; predict; state()/set_state() for safe persistence.

    `Params` (classifiers.params) says what each parameter accepts; it is checked before any training."""

    kind: ClassVar[str]
    Params: ClassVar[type[params.Params]]
    description: ClassVar[str]
    on_device: ClassVar[bool] = False  # takes a `device` (not a parameter: where it runs is no part of the head)

    def __init__(self, **values: Any) -> None:
        self.params = params.check(f"head {self.kind}", self.Params, values).model_dump()
        self.classes_: np.ndarray | None = None
        self.history: list[dict] = []
        self.monitor = Monitor()

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> "Head":
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def check_finite(self, X: np.ndarray) -> None:
        """After a fit: probabilities on a few rows must be numbers, else the fit diverged."""
        if len(X) and not np.isfinite(self.predict_proba(X[:64])).all():
            raise Diverged(f"training {self.kind} diverged (its outputs are not finite numbers) with params "
                           f"{json.dumps(self.params, default=str)}; use smaller values (lr, C, temperature)")

    def _set_classes(self, y: np.ndarray) -> np.ndarray:
        self.classes_ = np.unique(np.asarray(y).astype(str))
        if len(self.classes_) < 2:
            raise HeadstartError(f"training needs at least 2 classes; received {len(self.classes_)} "
                                 f"({', '.join(self.classes_) or 'none'})")
        return np.searchsorted(self.classes_, np.asarray(y).astype(str))


def encode(classes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> class indices, with a mask of the labels that are among `classes` at all."""
    labels = np.asarray(y).astype(str)
    known = np.isin(labels, classes)
    return np.searchsorted(classes, labels[known]), known


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (1 where a feature is constant), as StandardScaler computes them."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


NO_VAL_FOR_C_AUTO = ("C=auto chooses C on the val split, and this dataset has no labeled val images; pass a number "
                     "for C, or give the dataset a val split (extract --split, or a validation folder when the "
                     "folders name the splits)")


class LogRegHead(Head):
    kind = "logreg"
    Params = params.LogRegParams
    description = "standardised multinomial logistic regression (scikit-learn, lbfgs)"

    def fit(self, X, y, X_val=None, y_val=None):

        codes = self._set_classes(y)
        self.mean_, self.scale_ = standardiser(X)
        Xs = (X - self.mean_) / self.scale_
        if self.params["C"] != "auto":
            model = self._fit_one(Xs, codes, float(self.params["C"]))
        else:
            model = self._sweep(Xs, codes, X_val, y_val)
        self.coef_ = model.coef_.astype(np.float32)
        self.intercept_ = model.intercept_.astype(np.float32)
        self.check_finite(X)
        return self

    C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

    def _fit_one(self, Xs: np.ndarray, codes: np.ndarray, C: float, start=None):
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=C, max_iter=int(self.params["max_iter"]), tol=float(self.params["tol"]),
                                   class_weight=self.params["class_weight"], warm_start=start is not None)
        if start is not None:  # continue from the last C's solution: the sweep costs little more than one fit
            model.coef_, model.intercept_ = start.coef_.copy(), start.intercept_.copy()
        self.monitor.check()
        return model.fit(Xs, codes)

    def _sweep(self, Xs, codes, X_val, y_val):
        """C=auto: fit each C of the grid on train, keep the one with the best val accuracy (ties: the smaller C,
        the stronger regularisation). Only train and val are seen; the sweep is kept as `self.sweep_`."""
        if X_val is None or not len(X_val):
            raise HeadstartError(NO_VAL_FOR_C_AUTO)
        val_codes, known = encode(self.classes_, y_val)
        Xv = (np.asarray(X_val, np.float32)[known] - self.mean_) / self.scale_
        best, model, self.sweep_ = None, None, []
        for C in self.C_GRID:
            model = self._fit_one(Xs, codes, C, model)
            acc = float((model.predict(Xv) == val_codes).mean()) if len(Xv) else 0.0
            self.sweep_.append({"C": C, "val_accuracy": acc})
            if best is None or acc > best[0]:
                best = (acc, C, model.coef_.copy(), model.intercept_.copy())
        self.chosen_C_ = best[1]
        model.coef_, model.intercept_ = best[2], best[3]
        return model

    def predict_proba(self, X):
        z = ((np.asarray(X, np.float32) - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        if self.coef_.shape[0] == 1:  # binary: scikit-learn keeps one row for the positive class
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        return softmax(z)

    def state(self):
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}

    def set_state(self, tensors):
        self.mean_, self.scale_ = tensors["mean"], tensors["scale"]
        self.coef_, self.intercept_ = tensors["coef"], tensors["intercept"]
        expected_rows = 1 if len(self.classes_) == 2 else len(self.classes_)
        if self.coef_.shape != (expected_rows, self.mean_.shape[0]) or self.intercept_.shape != (expected_rows,):
            raise HeadstartError(f"logreg tensors have shape {self.coef_.shape}; expected "
                                 f"({expected_rows}, {self.mean_.shape[0]}) for {len(self.classes_)} classes")


class CentroidHead(Head):
    kind = "centroid"
    Params = params.CentroidParams
    description = "cosine nearest class mean, temperature fitted on val (strong with very few labels)"

    def fit(self, X, y, X_val=None, y_val=None):
        codes = self._set_classes(y)
        self.mean_ = X.mean(axis=0).astype(np.float32)
        Z = self._unit(X)
        cents = np.stack([Z[codes == k].mean(axis=0) for k in range(len(self.classes_))])
        self.centroids_ = (cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        self.temperature_ = np.array([self._fit_temperature(X_val, y_val) if X_val is not None and len(X_val)
                                      else self._fit_temperature(X, y)], dtype=np.float32)
        self.check_finite(X)
        return self

    def _unit(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, np.float32) - self.mean_
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def _fit_temperature(self, X: np.ndarray, y: np.ndarray) -> float:
        if self.params["temperature"] is not None:
            return float(self.params["temperature"])
        codes, known = encode(self.classes_, y)
        scores = self._unit(X[known]) @ self.centroids_.T
        losses = {}
        for t in (1, 2, 5, 10, 20, 50, 100, 200):
            p = softmax(scores * t)[np.arange(len(codes)), codes]
            losses[t] = -np.log(np.maximum(p, 1e-12)).mean()
        return float(min(losses, key=losses.get))

    def predict_proba(self, X):
        return softmax((self._unit(X) @ self.centroids_.T) * float(self.temperature_[0]))

    def state(self):
        return {"mean": self.mean_, "centroids": self.centroids_, "temperature": self.temperature_}

    def set_state(self, tensors):
        self.mean_, self.centroids_, self.temperature_ = tensors["mean"], tensors["centroids"], tensors["temperature"]
        if self.centroids_.shape != (len(self.classes_), self.mean_.shape[0]):
            raise HeadstartError(f"centroid tensors have shape {self.centroids_.shape}; expected "
                                 f"({len(self.classes_)}, {self.mean_.shape[0]})")


def registry() -> dict[str, type[Head]]:
    return {kind: get_head_class(kind) for kind in params.HEADS}


def get_head_class(kind: str) -> type[Head]:
    if kind not in params.HEADS:
        raise NotFound(f"unknown head {kind!r}; expected one of: {', '.join(sorted(params.HEADS))}")
    if kind == "mlp":  # imports torch: only when a dense head is asked for
        from classifiers.mlp import MLPHead

        return MLPHead
    return {"logreg": LogRegHead, "centroid": CentroidHead}[kind]


def defaults(cls: type[Head]) -> dict[str, Any]:
    return cls.Params().model_dump()


def device_param(cls: type[Head], device: str | None) -> dict[str, str]:
    """{"device": device} for a head that runs on a device (mlp), else nothing."""
    return {"device": device} if device and cls.on_device else {}


def parse_params(items: list[str], kind: str) -> dict[str, Any]:
    """`key=value` strings -> typed params (numbers, lists, null as JSON; anything else a string); `device` is
    taken too for a head that runs on one."""
    cls = get_head_class(kind)
    fields = cls.Params.model_fields
    known = sorted([*fields, *(["device"] if cls.on_device else [])])
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise HeadstartError(f"--param {item!r}: expected key=value with key one of {', '.join(known)}")
        if key in fields and isinstance(fields[key].default, list) and not text.startswith("["):
            text = "[" + text + "]"
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
