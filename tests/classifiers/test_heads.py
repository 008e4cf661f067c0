"""Every registry head: shapes, probabilities, save/load, binary and 120 classes, real learning vs chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifiers.heads import get_head_class, parse_params, registry
from classifiers.metrics import evaluate
from classifiers.persist import load, save
from extractor.errors import HeadstartError, NotFound

FAST = {"mlp": {"epochs": 8, "hidden": [64, 64], "batch_size": 64, "device": "cpu"}}  # CUDA: tests/test_devices.py


def blobs(n_classes: int, per_class: int, dim: int = 32, spread: float = 0.5, seed: int = 0):
    """Separable Gaussian classes with string labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, dim))
    X = np.concatenate([c + rng.normal(0, spread, (per_class, dim)) for c in centers]).astype(np.float32)
    y = np.repeat([f"class_{k:03d}" for k in range(n_classes)], per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


def make(kind: str, **extra):
    return get_head_class(kind)(**{**FAST.get(kind, {}), **extra})


def test_the_light_table_of_parameters_matches_the_heads():
    """The CLI's help reads params.HEADS and ON_DEVICE instead of importing the heads: they must say the same."""
    from classifiers.params import HEADS, ON_DEVICE

    assert list(HEADS) == list(registry())
    assert all(HEADS[kind] is cls.Params and (kind in ON_DEVICE) == cls.on_device for kind, cls in registry().items())


@pytest.mark.parametrize("kind", sorted(registry()))
@pytest.mark.parametrize("n_classes", [2, 120])
def test_contract_shapes_probabilities_and_round_trip(kind, n_classes, tmp_path):
    X, y = blobs(n_classes, 6 if n_classes > 2 else 40)
    Xv, yv = blobs(n_classes, 2, seed=0)
    head = make(kind).fit(X, y, Xv, yv)
    assert list(head.classes_) == sorted(set(y))
    proba = head.predict_proba(X[:7])
    assert proba.shape == (7, n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(head.predict(X[:7])) <= set(head.classes_)
    info = {"fingerprint": {"id": "fp-1", "spec": {}}, "weights": "random:0", "backbone": "tiny",
            "dataset": "synthetic", "dim": X.shape[1], "metrics": {}}
    save(head, info, tmp_path, "h")
    loaded, manifest = load(tmp_path, "h")
    assert manifest["kind"] == kind and manifest["classes"] == list(head.classes_)
    # the same numbers up to float32 rounding (a head trained on CUDA may predict on the CPU after loading)
    np.testing.assert_allclose(loaded.predict_proba(X[:7]), proba, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", sorted(registry()))
def test_learnable_task_is_learned_and_shuffled_labels_stay_at_chance(kind):
    X, y = blobs(4, 60, spread=1.0)
    Xt, yt = blobs(4, 30, spread=1.0, seed=0)
    Xt = Xt + np.random.default_rng(9).normal(0, 0.3, Xt.shape).astype(np.float32)
    learned = evaluate(yt, make(kind).fit(X, y, Xt[:20], yt[:20]).predict_proba(Xt), np.unique(y))
    assert learned["accuracy"] > 0.9
    rng = np.random.default_rng(1)
    Xn = rng.normal(0, 1, (400, 32)).astype(np.float32)
    yn = rng.choice(["a", "b", "c", "d"], 400)
    Xnt, ynt = rng.normal(0, 1, (400, 32)).astype(np.float32), rng.choice(["a", "b", "c", "d"], 400)
    chance = evaluate(ynt, make(kind).fit(Xn, yn, Xnt[:50], ynt[:50]).predict_proba(Xnt), np.unique(yn))
    assert chance["accuracy"] < 0.36  # 4 classes: chance is 0.25
    assert learned["roc_auc"] > 0.95 and chance["roc_auc"] < 0.6


def test_mlp_is_deterministic_with_a_seed():
    X, y = blobs(3, 30)
    a = make("mlp", seed=3).fit(X, y).predict_proba(X)
    b = make("mlp", seed=3).fit(X, y).predict_proba(X)
    c = make("mlp", seed=4).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mlp_device_param_is_checked_and_a_cuda_head_loads_where_there_is_no_cuda(tmp_path):
    X, y = blobs(3, 20)
    for bad in ("gpu", "cuda:x"):
        with pytest.raises(HeadstartError, match="device"):
            make("mlp", device=bad).fit(X, y)
    head = make("mlp", device="cpu").fit(X, y)
    head.params["device"] = "cuda"  # as if it had been trained on a GPU host
    info = {"fingerprint": {"id": "fp-1", "spec": {}}, "weights": "random:0", "backbone": "tiny",
            "dataset": "synthetic", "dim": X.shape[1], "metrics": {}}
    save(head, info, tmp_path, "h")
    loaded, _ = load(tmp_path, "h")
    assert next(loaded.net.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    np.testing.assert_allclose(loaded.predict_proba(X[:5]), head.predict_proba(X[:5]), atol=1e-5)


def test_mlp_early_stopping_records_history():
    rng = np.random.default_rng(0)  # pure noise: validation loss stops improving early
    X, y = rng.normal(0, 1, (200, 32)).astype(np.float32), rng.choice(["a", "b"], 200)
    Xv, yv = rng.normal(0, 1, (60, 32)).astype(np.float32), rng.choice(["a", "b"], 60)
    head = make("mlp", epochs=50, patience=2).fit(X, y, Xv, yv)
    assert 2 < len(head.history) < 50
    best = min(h["val_loss"] for h in head.history)
    np.testing.assert_allclose(evaluate(yv, head.predict_proba(Xv), head.classes_)["log_loss"], best, rtol=1e-4)
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(head.history[0])


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_class_weight_balanced_raises_minority_recall(kind):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (400, 8)), rng.normal(0.9, 1, (20, 8))]).astype(np.float32)
    y = np.array(["major"] * 400 + ["minor"] * 20)
    Xt = np.concatenate([rng.normal(0, 1, (200, 8)), rng.normal(0.9, 1, (200, 8))]).astype(np.float32)
    yt = np.array(["major"] * 200 + ["minor"] * 200)
    plain = evaluate(yt, make(kind).fit(X, y).predict_proba(Xt), np.unique(y))
    weighted = evaluate(yt, make(kind, class_weight="balanced").fit(X, y).predict_proba(Xt), np.unique(y))
    assert weighted["per_class"]["minor"]["recall"] > plain["per_class"]["minor"]["recall"] + 0.2


def test_params_are_checked_and_parsed():
    with pytest.raises(HeadstartError, match="no parameter 'gamma'"):
        get_head_class("logreg")(gamma=1)
    with pytest.raises(NotFound, match="logreg"):
        get_head_class("svm-rbf")
    assert parse_params(["C=0.5", "class_weight=balanced"], "logreg") == {"C": 0.5, "class_weight": "balanced"}
    assert parse_params(["hidden=256,128"], "mlp") == {"hidden": [256, 128]}
    with pytest.raises(HeadstartError, match="key=value"):
        parse_params(["C"], "logreg")
    refused = [("mlp", "epochs", -1, "an integer from 1"), ("mlp", "epochs", True, "an integer"),
               ("mlp", "hidden", "abc", "layer widths"), ("mlp", "hidden", [0], "layer widths"),
               ("mlp", "hidden", [10**9], "layer widths"), ("mlp", "dropout", 1.0, "up to"),
               ("mlp", "batch_size", "big", "auto or"), ("logreg", "C", 0, "> 0"),
               ("logreg", "class_weight", "auto", "balanced or null"), ("centroid", "temperature", -2, "> 0")]
    for kind, name, value, expected in refused:
        with pytest.raises(HeadstartError, match=f"{kind} parameter {name}=.*expected .*{expected}"):
            get_head_class(kind)(**{name: value})
    assert get_head_class("mlp")(hidden=[64], dropout=0.0, batch_size="auto").params["hidden"] == [64]


def test_one_class_is_refused():
    with pytest.raises(HeadstartError, match="at least 2 classes"):
        make("logreg").fit(np.zeros((4, 3), np.float32), np.array(["a"] * 4))


def test_metrics_values_on_a_known_case():
    classes = np.array(["a", "b"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = evaluate(np.array(["a", "b", "b", "a"]), proba, classes)
    assert m["accuracy"] == 0.5 and m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs are ordered right
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def test_macro_averages_skip_classes_neither_present_nor_predicted():
    classes = np.array(["a", "b", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    m = evaluate(np.array(["a", "a", "b"]), proba, classes)  # no "c" in this split, none predicted
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["precision_macro"] == 1.0
    assert m["per_class"]["c"]["support"] == 0 and len(m["confusion_matrix"]) == 3
    wrong = evaluate(np.array(["a", "a", "b"]), proba[[0, 1, 0]], classes)  # "b" never predicted: it counts
    assert wrong["f1_macro"] == pytest.approx((0.8 + 0.0) / 2)


def test_sure_and_right_scores_a_log_loss_of_plain_zero_and_one_small_class_is_one_class():
    """Before: a head certain and right on every image (a centroid head on separable data) printed log_loss -0.000
    (a negative zero), and the noisy-split warning said `of 1 classes`."""
    from classifiers.metrics import headline, small_split_warning

    classes = np.array(["a", "b"])
    m = evaluate(np.array(["a", "b", "b"]), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), classes)
    assert m["log_loss"] == 0.0 and np.copysign(1.0, m["log_loss"]) == 1.0
    assert "log_loss 0.000" in headline(m)
    assert small_split_warning("test", m).startswith("the test split has fewer than 5 images of 2 classes: a (1), b")
    one = evaluate(np.array(["b", "b"]), np.array([[0.1, 0.9], [0.2, 0.8]]), classes)
    assert small_split_warning("val", one).startswith("the val split has fewer than 5 images of 1 class: b (2);")


def test_more_classes_than_a_matrix_shows_list_their_most_frequent_confusions():
    """Above 15 classes, evaluate printed no confusion at all; now the most frequent confusions, as the page."""
    from classifiers.metrics import confusion_lines

    classes = np.array([f"c{i:02d}" for i in range(20)])
    y = np.repeat(classes, 3)
    picked = np.arange(60) // 3
    picked[[0, 1, 3]] = [5, 5, 7]  # c00 taken for c05 twice, c01 for c07 once
    m = evaluate(y, np.eye(20)[picked] * 0.9 + 0.005, classes)
    assert confusion_lines(m) == ["20 classes, too many for a matrix: the 2 most frequent confusions of 2 (true -> "
                                  "predicted: images; evaluate --json has the matrix):", "  c00 -> c05: 2",
                                  "  c01 -> c07: 1"]
    assert confusion_lines(m, max_classes=20)[0].startswith("confusion matrix (rows: true label")
