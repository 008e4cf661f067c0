"""Predictions for image files: one chunk decoded ahead of the forward, rows in order, the cache used."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from classifiers import predict as predict_module
from classifiers import predict_files as pf
from classifiers.persist import heads_dir
from classifiers.predict import Predictor
from classifiers.training import train_head
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import make_folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_files")
    make_folder(root / "data", {"a": 6, "b": 6})
    store = FeatureStore(root / "home")
    extract(ExtractOptions(root / "data", "d", backbone="tiny", weights="random", workers=0), store)
    train_head(store, "d", "tiny", "logreg", "h")
    new = make_folder(root / "new", {"a": 5, "b": 5}, seed=7)  # not in the cache
    (root / "new" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    known = sorted((root / "data" / "a").iterdir())[0]  # in the cache
    paths = [new[0], known, root / "new" / "broken.jpg", root / "missing.jpg", *new[1:], new[0]]
    return store, Predictor(heads_dir(store), "h", device="cpu"), paths


def test_rows_in_order_with_cache_hits_failures_and_repeats(served):
    store, predictor, paths = served
    chunks = list(pf.predict_files(store, predictor, paths, k=2, batch_size=3, ahead=True))
    assert [len(c) for c in chunks] == [3, 3, 3, 3, 2]
    rows = [r for c in chunks for r in c]
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert rows[1]["cached"] is True and rows[0]["cached"] is False
    assert rows[2]["error"].startswith("corrupt or truncated JPEG image")
    assert rows[3]["error"] == "cannot read file: No such file or directory"
    assert rows[0] == rows[-1]  # the same file twice: the same answer, each in its own row
    alone = [pf.finish(predictor, pf.prepare(store, predictor, [p], 2), 2, 1)[0] for p in paths]
    assert rows == alone
    assert [r for c in pf.predict_files(store, predictor, paths, k=2, batch_size=4) for r in c] == alone  # cpu


def test_the_next_chunk_is_decoded_while_the_current_one_is_in_the_forward(served, monkeypatch):
    """With the forward on a GPU (forced here), each chunk was read and decoded, then went through the forward,
    then the next was read: the GPU waited while the CPU decoded, and the other way round. The overlap is checked
    here on the CPU; its speed on a GPU was never measured (bench/gpu_round.sh tests runs the bench)."""
    store, predictor, paths = served
    events, lock = [], threading.Lock()
    real_prepare, real_finish = pf.prepare, pf.finish

    def prepare(*args, **kw):
        with lock:
            events.append(("prepare", threading.current_thread().name))
        return real_prepare(*args, **kw)

    def finish(*args, **kw):
        with lock:
            events.append(("finish start", None))
        time.sleep(0.2)  # a forward pass long enough for the next chunk's read to start meanwhile
        with lock:
            events.append(("finish end", None))
        return real_finish(*args, **kw)

    monkeypatch.setattr(pf, "prepare", prepare)
    monkeypatch.setattr(pf, "finish", finish)
    assert len(list(pf.predict_files(store, predictor, paths[:6], k=1, batch_size=3, ahead=True))) == 2
    kinds = [e[0] for e in events]
    assert kinds.index("prepare", 1) < kinds.index("finish end"), events  # chunk 2 read during chunk 1's forward
    assert all(name.startswith("predict-read") for kind, name in events if kind == "prepare")


@pytest.mark.parametrize("cores", [{0}, {0, 1, 2}])
def test_decode_threads_follow_the_affinity_mask(served, monkeypatch, cores):
    """A container pinned to fewer cores than the host has decodes on those cores, as extraction's workers do
    (before: os.cpu_count(), the host's count)."""
    _, predictor, paths = served
    started = []

    class Recording(ThreadPoolExecutor):
        def __init__(self, max_workers):
            started.append(max_workers)
            super().__init__(max_workers)

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: cores)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(predict_module, "ThreadPoolExecutor", Recording)
    arrays = predictor.decode_many([path.read_bytes() for path in paths[4:9]])
    assert started == [len(cores)] and len(arrays) == 5
