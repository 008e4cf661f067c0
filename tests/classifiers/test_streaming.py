"""Heads on tables larger than memory: streamed training and evaluation agree with the in-memory solvers on
the same table, memory stays bounded by the block size, and the solver and threshold are in the manifest."""

from __future__ import annotations

import tracemalloc

import pytest

from bench.synthetic import synthetic_table
from classifiers import streaming
from classifiers.evaluation import evaluate_head
from classifiers.training import train_head
from extractor.errors import HeadstartError

TOLERANCE = 0.05  # test accuracy of the streamed head within 5 points of the in-memory one


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    store, fp_id = synthetic_table(tmp_path_factory.mktemp("stream"), 3000, 64, classes=4, shard_rows=128)
    return store


@pytest.mark.parametrize("kind, params", [("logreg", {"C": 1.0}), ("mlp", {"epochs": 15, "hidden": [64]})])
def test_a_streamed_head_agrees_with_the_in_memory_one(table, kind, params):
    whole = train_head(table, "synthetic", "tiny", kind, f"{kind}-whole", params, stream="never")
    streamed = train_head(table, "synthetic", "tiny", kind, f"{kind}-streamed", params, stream="always")
    assert whole["training"]["streamed"] is False and streamed["training"]["streamed"] is True
    assert "blocks" in streamed["training"]["solver"] and streamed["training"]["threshold_mb"] == 1024
    assert streamed["classes"] == whole["classes"] and streamed["split_sizes"] == whole["split_sizes"]
    a, b = whole["metrics"]["test"]["accuracy"], streamed["metrics"]["test"]["accuracy"]
    assert a > 0.6 and abs(a - b) <= TOLERANCE, (a, b)
    # the same head scored streamed and in memory: the same numbers
    in_memory = evaluate_head(table, f"{kind}-streamed", "test", stream="never")["metrics"]
    by_blocks = evaluate_head(table, f"{kind}-streamed", "test", stream="always")["metrics"]
    assert by_blocks["accuracy"] == in_memory["accuracy"] == b
    assert by_blocks["confusion_matrix"] == in_memory["confusion_matrix"]
    every = [evaluate_head(table, f"{kind}-streamed", "all", stream=s)["metrics"] for s in ("never", "always")]
    assert every[0]["n"] == every[1]["n"] == 3000 and every[0]["confusion_matrix"] == every[1]["confusion_matrix"]


def test_auto_streams_beyond_the_threshold(table, monkeypatch):
    monkeypatch.setenv("HEADSTART_STREAM_MB", "0.5")  # the table is 3000 x 64 x 4 = 0.73 MB as float32
    assert train_head(table, "synthetic", "tiny", "logreg", "auto", stream="auto")["training"]["streamed"]
    monkeypatch.setenv("HEADSTART_STREAM_MB", "1")
    assert not train_head(table, "synthetic", "tiny", "logreg", "auto", stream="auto")["training"]["streamed"]
    monkeypatch.setenv("HEADSTART_STREAM_MB", "lots")
    with pytest.raises(HeadstartError, match="expected a number of megabytes"):
        train_head(table, "synthetic", "tiny", "logreg", "auto")


def test_c_auto_streams_one_fit_per_c_and_keeps_the_best_on_val(table):
    whole = train_head(table, "synthetic", "tiny", "logreg", "auto-whole", {"C": "auto"}, stream="never")
    streamed = train_head(table, "synthetic", "tiny", "logreg", "auto-streamed", {"C": "auto"}, stream="always")
    assert streamed["training"]["streamed"] and streamed["training"]["fits"] == 6
    sweep = streamed["chosen"]["sweep"]
    assert [s["C"] for s in sweep] == [s["C"] for s in whole["chosen"]["sweep"]] == [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    best = max(s["val_accuracy"] for s in sweep)
    assert streamed["chosen"]["C"] == next(s["C"] for s in sweep if s["val_accuracy"] == best)  # ties: smaller C
    assert streamed["metrics"]["val"]["accuracy"] == pytest.approx(best)  # the head kept is the chosen fit
    a, b = whole["metrics"]["test"]["accuracy"], streamed["metrics"]["test"]["accuracy"]
    assert a > 0.6 and abs(a - b) <= TOLERANCE, (a, b)


def test_what_does_not_stream_is_one_line(table, tmp_path):
    store, _ = synthetic_table(tmp_path, 200, 8, classes=2, shard_rows=64, fractions=(0.8, 0.0, 0.2))
    with pytest.raises(HeadstartError, match="C=auto chooses C on the val split"):
        train_head(store, "synthetic", "tiny", "logreg", "x", {"C": "auto"}, stream="always")
    with pytest.raises(HeadstartError, match="head centroid trains in memory only"):
        train_head(table, "synthetic", "tiny", "centroid", "x", stream="always")


def test_streamed_training_memory_is_bounded_by_the_block_size(tmp_path, monkeypatch):
    store, _ = synthetic_table(tmp_path, 20_000, 256, classes=4, shard_rows=500)  # 20.5 MB as float32
    monkeypatch.setattr(streaming, "BUFFER_BYTES", 1 << 20)  # buffers of 1024 rows (1 MB)
    table_mb = 20_000 * 256 * 4 / 2**20

    def peak(stream: str, kind: str) -> float:
        tracemalloc.start()
        try:
            train_head(store, "synthetic", "tiny", kind, f"{kind}-{stream}", {"epochs": 2} if kind == "mlp" else {},
                       stream=stream)
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()

    for kind in ("mlp", "logreg"):
        assert peak("always", kind) < table_mb / 3, kind
    assert peak("never", "logreg") > table_mb  # (the in-memory solver holds the whole table, and more)
