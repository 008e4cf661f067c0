"""A dataset's definition (its folders, CSV and labels) survives reruns; changing it is explicit."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from extractor.errors import HeadstartError
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import make_folder


def labels_csv(folder, out):
    """A CSV naming every image below `folder` with its class folder as label; files moved to one flat folder."""
    flat = out.parent / "flat"
    flat.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(folder.rglob("*.jpg")):
        target = flat / path.name
        target.write_bytes(path.read_bytes())
        rows.append({"path": path.name, "label": path.parent.name})
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return flat


def opts(data, **kw):
    return ExtractOptions(data_dir=data, **{"dataset": "fm", "backbone": "tiny", "weights": "random", "workers": 0,
                                            **kw})


@pytest.mark.parametrize("change", [{"weights": "random:1"}, {"dtype": "float16"}, {"size": 40}])
def test_rerun_with_other_options_keeps_the_csv_labels(tmp_path, change):
    make_folder(tmp_path / "src", {"a": 4, "b": 4})
    flat = labels_csv(tmp_path / "src", tmp_path / "labels.csv")
    store = FeatureStore(tmp_path / "home")
    extract(opts(flat, labels_csv=tmp_path / "labels.csv"), store)
    before = store.catalog.members("fm")
    rerun = opts(flat)
    for key, value in change.items():
        setattr(rerun, key, value)
    extract(rerun, store)  # no --labels: the recorded CSV is used again
    assert store.catalog.members("fm") == before
    assert {m[2] for m in before} == {"a", "b"} and store.catalog.dataset("fm")["kind"] == "csv"


def test_another_folder_is_refused_then_added_or_redefined_on_request(tmp_path):
    make_folder(tmp_path / "one", {"a": 4, "b": 4})
    make_folder(tmp_path / "two", {"a": 2, "c": 2}, seed=5)
    store = FeatureStore(tmp_path / "home")
    extract(opts(tmp_path / "one"), store)
    with pytest.raises(HeadstartError, match="--add .* --redefine"):
        extract(opts(tmp_path / "two"), store)
    assert len(store.catalog.members("fm")) == 8  # untouched
    summary = extract(opts(tmp_path / "two", add=True), store)
    assert summary.extracted == 4
    paths = [m[0] for m in store.catalog.members("fm")]
    assert len(paths) == 12 and "two/c/c_0001.jpg" in paths and "a/a_0000.jpg" in paths
    extract(opts(tmp_path / "one"), store)  # a rerun from either folder keeps both
    extract(opts(tmp_path / "two"), store)
    assert len(store.catalog.members("fm")) == 12
    table = store.table("fm", summary.fingerprint)
    assert len(table.paths) == 12 and sorted(set(table.labels)) == ["a", "b", "c"]
    with pytest.raises(HeadstartError, match="already"):
        extract(opts(tmp_path / "two", add=True), store)
    extract(opts(tmp_path / "two", redefine=True), store)
    assert [m[0] for m in store.catalog.members("fm")] == ["a/a_0000.jpg", "a/a_0001.jpg", "c/c_0000.jpg",
                                                           "c/c_0001.jpg"]


def test_changing_the_labels_needs_redefine(tmp_path):
    make_folder(tmp_path / "src", {"a": 3, "b": 3})
    flat = labels_csv(tmp_path / "src", tmp_path / "labels.csv")
    store = FeatureStore(tmp_path / "home")
    extract(opts(flat, labels_csv=tmp_path / "labels.csv"), store)
    with pytest.raises(HeadstartError, match="--redefine"):
        extract(opts(flat, unlabeled=True), store)
    extract(opts(flat, labels_csv=tmp_path / "labels.csv"), store)  # the same CSV again is no change
    extract(opts(flat, unlabeled=True, redefine=True), store)
    assert {m[2] for m in store.catalog.members("fm")} == {None}


def test_splits_survive_an_added_folder(tmp_path):
    make_folder(tmp_path / "one", {"a": 10, "b": 10})
    make_folder(tmp_path / "two", {"a": 5, "b": 5}, seed=3)
    store = FeatureStore(tmp_path / "home")
    extract(opts(tmp_path / "one"), store)
    before = {m[1]: m[3] for m in store.catalog.members("fm")}
    extract(opts(tmp_path / "two", add=True), store)
    after = {m[1]: m[3] for m in store.catalog.members("fm")}
    assert all(after[sha] == split for sha, split in before.items())


def test_same_bytes_with_two_labels_is_a_reported_conflict(tmp_path):
    make_folder(tmp_path / "d", {"cat": 3, "dog": 3})
    first = sorted((tmp_path / "d" / "cat").iterdir())[0]
    (tmp_path / "d" / "dog" / "copy.jpg").write_bytes(first.read_bytes())
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "d"), store)
    reasons = dict(summary.failures)
    assert "dog/copy.jpg" in reasons and "cat/cat_0000.jpg" in reasons["dog/copy.jpg"]
    assert "dog/copy.jpg" not in [m[0] for m in store.catalog.members("fm")]


def test_a_failed_first_extract_registers_nothing(tmp_path, monkeypatch):
    make_folder(tmp_path / "d", {"a": 2, "b": 2})
    store = FeatureStore(tmp_path / "home")

    def broken(self):
        raise HeadstartError("weights unavailable (test)")

    monkeypatch.setattr("extractor.model.LoadedBackbone.setup", broken)
    with pytest.raises(HeadstartError, match="weights unavailable"):
        extract(opts(tmp_path / "d"), store)
    assert store.catalog.dataset("fm") is None and store.catalog.members("fm") == []
    monkeypatch.undo()
    extract(opts(tmp_path / "d"), store)
    monkeypatch.setattr("extractor.model.LoadedBackbone.setup", broken)
    with pytest.raises(HeadstartError):  # a later failure keeps what the dataset already is
        extract(opts(tmp_path / "d", weights="random:9"), store)
    assert len(store.catalog.members("fm")) == 4


def test_vectors_of_an_added_folder_equal_a_direct_extraction(tmp_path):
    make_folder(tmp_path / "one", {"a": 2, "b": 2})
    make_folder(tmp_path / "two", {"a": 2, "b": 2}, seed=9)
    store = FeatureStore(tmp_path / "home")
    extract(opts(tmp_path / "one"), store)
    fp = extract(opts(tmp_path / "two", add=True), store).fingerprint
    alone = FeatureStore(tmp_path / "home2")
    extract(opts(tmp_path / "two", dataset="two"), alone)
    both, single = store.table("fm", fp), alone.table("two", fp)
    rows = {s: v for s, v in zip(both.sha256, both.features, strict=True)}
    assert all(np.array_equal(rows[s], v) for s, v in zip(single.sha256, single.features, strict=True))


def test_a_moved_folder_is_named_as_gone_and_redefine_computes_nothing_again(tmp_path):
    """Before: a dataset whose folder was moved answered as if another folder were added by mistake; the recorded
    folder being gone is now said, with --redefine as the way on (the vectors are kept: content-addressed)."""
    make_folder(tmp_path / "old", {"a": 3, "b": 3})
    store = FeatureStore(tmp_path / "home")
    extract(opts(tmp_path / "old"), store)
    (tmp_path / "old").rename(tmp_path / "new")
    with pytest.raises(HeadstartError, match=f"{tmp_path / 'old'} .*is no longer there; if it moved to "
                                             f"{tmp_path / 'new'}, pass --redefine"):
        extract(opts(tmp_path / "new"), store)
    assert extract(opts(tmp_path / "new", redefine=True), store).extracted == 0
