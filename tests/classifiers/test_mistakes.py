"""A head's misclassified images (the page's Mistakes view): ranked by confidence, filtered to a cell."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from fastapi.testclient import TestClient

from classifiers.review import mistakes, roc_points
from classifiers.training import train_head
from extractor.errors import HeadstartError
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from service.app import create_app
from service.settings import load_settings
from tests.conftest import make_folder


@pytest.fixture
def mislabeled(tmp_path):
    """Classes a and b with 5 of a's images filed under b: a centroid head cannot learn them as b."""
    make_folder(tmp_path / "data" / "set", {"a": 15, "b": 10})
    moved = set()
    for path in sorted((tmp_path / "data" / "set" / "a").iterdir())[:5]:
        shutil.move(path, tmp_path / "data" / "set" / "b" / f"moved_{path.name}")
        moved.add(f"b/moved_{path.name}")
    store = FeatureStore(tmp_path / "home")
    extract(ExtractOptions(data_dir=tmp_path / "data" / "set", dataset="d", backbone="tiny", weights="random",
                           workers=0, device="cpu"), store)
    train_head(store, "d", "tiny", "centroid", "h")
    return tmp_path, store, moved


def test_mistakes_are_ranked_by_confidence_and_filter_to_a_cell(mislabeled):
    _, store, moved = mislabeled
    found = {}
    for split in ("train", "val", "test"):
        result = mistakes(store, "h", split)
        assert result["total"] == len(result["rows"])
        assert all(r["true"] != r["predicted"] for r in result["rows"])
        confidences = [r["confidence"] for r in result["rows"]]
        assert confidences == sorted(confidences, reverse=True) and all(0 < c <= 1 for c in confidences)
        found.update({r["path"]: r for r in result["rows"]})
    assert moved <= set(found)  # every mislabeled image is a mistake, true b, predicted a
    assert all(found[p]["true"] == "b" and found[p]["predicted"] == "a" for p in moved)
    train = mistakes(store, "h", "train")
    cell = mistakes(store, "h", "train", true="b", predicted="a")
    assert cell["rows"] == [r for r in train["rows"] if r["true"] == "b" and r["predicted"] == "a"]
    assert mistakes(store, "h", "train", true="a", predicted="a")["total"] == 0
    assert mistakes(store, "h", "train", limit=1, offset=1)["rows"] == train["rows"][1:2]
    with pytest.raises(HeadstartError, match="expected one of train, val, test"):
        mistakes(store, "h", "holdout")


def test_mistakes_and_their_thumbnails_over_the_api(mislabeled):
    tmp_path, _, moved = mislabeled
    app = create_app(load_settings(home=tmp_path / "home", data_root=tmp_path / "data", device="cpu"))
    with TestClient(app) as client:
        rows = []
        for split in ("train", "val", "test"):
            answer = client.get("/heads/h/mistakes", params={"split": split})
            assert answer.status_code == 200, answer.text
            rows += answer.json()["rows"]
        row = next(r for r in rows if r["path"] in moved)
        file = tmp_path / "data" / "set" / row["path"]
        assert row["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        thumb = client.get(f"/datasets/d/images/{row['sha256']}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert client.get("/heads/h/mistakes", params={"split": "nope"}).status_code == 422
        assert client.get("/heads/missing/mistakes").status_code == 404


def test_a_split_is_scored_once_from_its_own_vectors_and_again_when_the_head_or_its_members_change(mislabeled,
                                                                                                   monkeypatch):
    tmp_path, store, moved = mislabeled
    fp_id = store.catalog.dataset_summary("d")["fingerprints"][0][0]
    rows = store.catalog.dataset_rows("d", fp_id)
    reads = []
    real = FeatureStore.read_rows
    monkeypatch.setattr(FeatureStore, "read_rows", lambda self, where, *a: reads.append(len(where)) or
                        real(self, where, *a))
    first = mistakes(store, "h", "train")
    assert mistakes(store, "h", "train", limit=1, offset=1)["rows"] == first["rows"][1:2]
    assert roc_points(store, "h", "train")["n"] == sum(r[3] == "train" for r in rows)
    assert reads == [sum(r[3] == "train" for r in rows)] < [len(rows)]  # that split's vectors, read once
    n_train = reads[0]
    train_head(store, "d", "tiny", "logreg", "h", params={"C": 1e-6})  # another head under the name
    reads.clear()
    assert mistakes(store, "h", "train") != first and reads == [n_train]  # scored again
    # the members change: a mislabeled image is filed under its real class and the dataset extracted again
    path = sorted(moved)[0]
    (tmp_path / "data" / "set" / path).rename(tmp_path / "data" / "set" / "a" / path.split("/")[1])
    extract(ExtractOptions(data_dir=tmp_path / "data" / "set", dataset="d", backbone="tiny", weights="random",
                           workers=0, device="cpu"), store)
    reads.clear()
    again = mistakes(store, "h", "train")
    assert reads == [n_train] and path not in {r["path"] for r in again["rows"]}
