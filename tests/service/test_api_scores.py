"""GET /heads/{name}/evaluation: a head's metrics on a split of its own dataset or on another labeled dataset, with
the command line's checks and warnings in the API's words."""

from __future__ import annotations

from fastapi.testclient import TestClient

from classifiers.training import train_head
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from service.app import create_app
from service.settings import load_settings
from tests.conftest import make_folder


def test_evaluation_on_its_own_and_on_another_dataset(tmp_path):
    data, home = tmp_path / "data", tmp_path / "home"
    written = make_folder(data / "colors", {"red": 10, "green": 10, "blue": 10})
    store = FeatureStore(home)

    def extract_as(folder: str, weights: str) -> None:
        extract(ExtractOptions(data_dir=data / folder, dataset=folder, backbone="tiny", weights=weights, workers=0,
                               device="cpu"), store)

    extract_as("colors", "random")
    train_head(store, "colors", "tiny", "logreg", "lr")
    make_folder(data / "holdout", {"red": 4, "green": 4, "blue": 4, "purple": 2}, seed=5)
    for path in written[:10]:  # the red images the head learned from (most in its train split)
        (data / "holdout" / "red" / f"copy-{path.name}").write_bytes(path.read_bytes())
    settings = load_settings(home=home, data_root=data, device="cpu")
    with TestClient(create_app(settings)) as client:
        own = client.get("/heads/lr/evaluation")
        assert own.status_code == 200, own.text
        body = own.json()
        assert (body["head"], body["dataset"], body["split"]) == ("lr", "colors", "test") and "plots" not in body
        assert body["metrics"]["n"] == sum(n for n in body["metrics"]["confusion_matrix"] for n in n) == 6
        assert any("the test split has fewer than 5 images" in w for w in body["warnings"])
        every = client.get("/heads/lr/evaluation", params={"split": "all"}).json()
        assert every["metrics"]["n"] == 30 and every["metrics"]["accuracy"] >= body["metrics"]["accuracy"] - 0.5

        missing = client.get("/heads/lr/evaluation", params={"dataset": "holdout"})
        assert missing.status_code == 404 and missing.json()["detail"] == "no dataset 'holdout'; POST /extract first"
        extract_as("holdout", "random:7")  # other weights: not the head's features
        other = client.get("/heads/lr/evaluation", params={"dataset": "holdout"})
        assert other.status_code == 400, other.text
        assert other.json()["detail"] == (
            "14 of the 24 labeled images of dataset 'holdout' (train/val/test) have no vectors of the features head "
            "'lr' was trained on (tiny, weights random:0); POST /extract with \"dataset\": \"holdout\", "
            "\"backbone\": \"tiny\", \"weights\": \"random:0\" first")
        extract_as("holdout", "random")
        scored = client.get("/heads/lr/evaluation", params={"dataset": "holdout"})
        assert scored.status_code == 200, scored.text
        result = scored.json()
        assert result["split"] == "all" and result["metrics"]["n"] == 24
        assert result["metrics"]["per_class"]["purple"]["recall"] == 0.0
        warned = " | ".join(result["warnings"])
        assert "2 images have labels head 'lr' was not trained on (purple)" in warned
        assert "of these 24 images are also in the train or val split of 'colors'" in warned
        assert str(tmp_path) not in scored.text
        test_only = client.get("/heads/lr/evaluation", params={"dataset": "holdout", "split": "test"}).json()
        assert test_only["split"] == "test" and 0 < test_only["metrics"]["n"] < 24

        wrong = client.get("/heads/lr/mistakes", params={"dataset": "holdout", "limit": 1000}).json()
        assert wrong["dataset"] == "holdout" and wrong["split"] == "all"
        cm = result["metrics"]["confusion_matrix"]
        assert wrong["total"] == sum(map(sum, cm)) - sum(cm[i][i] for i in range(len(cm)))
        purple = [r for r in wrong["rows"] if r["true"] == "purple"]
        assert len(purple) == 2 and all(r["path"].startswith("purple/") for r in purple)
        thumb = client.get(f"/datasets/holdout/images/{purple[0]['sha256']}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        own_wrong = client.get("/heads/lr/mistakes", params={"split": "all"}).json()
        assert own_wrong["dataset"] == "colors" and not any(r["true"] == "purple" for r in own_wrong["rows"])
        roc = client.get("/heads/lr/roc", params={"dataset": "holdout"}).json()
        assert roc["dataset"] == "holdout" and roc["n"] == 24 and {c["label"] for c in roc["curves"]} == {
            "red", "green", "blue"}  # one curve per class of the head
        assert client.get("/heads/lr/roc", params={"dataset": "nothing"}).status_code == 404

        assert client.get("/heads/lr/evaluation", params={"split": "every"}).status_code == 422
        assert client.get("/heads/lr/evaluation", params={"dataset": "../colors"}).status_code == 422
        unknown = client.get("/heads/nope/evaluation")
        assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no head 'nope'")


def test_predictions_for_an_extracted_folder_page_by_page(tmp_path):
    """An unlabeled folder extracted with the head's features: its predictions from the cache, by path, a page at a
    time; refused in the API's words while some images lack vectors."""
    data, home = tmp_path / "data", tmp_path / "home"
    make_folder(data / "colors", {"red": 8, "green": 8, "blue": 8})
    make_folder(tmp_path / "inbox-source", {"red": 5, "green": 5, "blue": 5}, seed=11)
    (data / "inbox").mkdir()
    for path in sorted((tmp_path / "inbox-source").rglob("*.jpg")):  # a flat folder, no labels
        (data / "inbox" / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (data / "inbox" / "broken.jpg").write_bytes(b"\xff\xd8 cut")  # a recorded failure: neither predicted nor missing
    store = FeatureStore(home)

    def extract_as(folder: str, weights: str) -> None:
        extract(ExtractOptions(data_dir=data / folder, dataset=folder, backbone="tiny", weights=weights, workers=0,
                               device="cpu", unlabeled=folder == "inbox"), store)

    extract_as("colors", "random")
    train_head(store, "colors", "tiny", "logreg", "lr")
    extract_as("inbox", "random:5")
    with TestClient(create_app(load_settings(home=home, data_root=data, device="cpu"))) as client:
        refused = client.get("/heads/lr/predictions", params={"dataset": "inbox"})
        assert refused.status_code == 400 and refused.json()["detail"].startswith(
            "15 of the 15 images of dataset 'inbox' have no vectors of the features head 'lr' was trained on (tiny, ")
        assert refused.json()["detail"].endswith(
            'POST /extract with "dataset": "inbox", "backbone": "tiny", "weights": "random:0" first')
        extract_as("inbox", "random")
        first = client.get("/heads/lr/predictions", params={"dataset": "inbox", "limit": 10, "top_k": 2})
        assert first.status_code == 200, first.text
        body = first.json()
        assert (body["dataset"], body["split"], body["total"], len(body["rows"])) == ("inbox", "all", 15, 10)
        rest = client.get("/heads/lr/predictions", params={"dataset": "inbox", "limit": 10, "offset": 10}).json()
        rows = body["rows"] + rest["rows"]
        assert [r["path"] for r in rows] == sorted(r["path"] for r in rows) and len(rows) == 15
        assert all(r["true"] is None and r["split"] in ("train", "val", "test") for r in rows)
        assert all(len(r["top"]) == 2 for r in body["rows"]) and all(len(r["top"]) == 3 for r in rest["rows"])
        right = sum(r["top"][0]["label"] == r["path"].split("-")[0] for r in rows)  # the file names tell the truth
        assert right >= 12, rows
        test = client.get("/heads/lr/predictions", params={"dataset": "colors", "split": "test"}).json()
        n_test = next(d for d in client.get("/datasets").json() if d["name"] == "colors")["splits"]["test"]
        assert test["total"] == len(test["rows"]) == n_test > 0 and {r["split"] for r in test["rows"]} == {"test"}
        assert all(r["true"] in ("red", "green", "blue") for r in test["rows"])
        for route in ("evaluation", "mistakes", "roc"):  # an unlabeled folder is predicted, never scored
            unlabeled = client.get(f"/heads/lr/{route}", params={"dataset": "inbox"})
            assert unlabeled.status_code == 400 and unlabeled.json()["detail"] == (
                "dataset 'inbox' has no labels: a head is scored on labeled images (class subfolders or a --labels CSV "
                "when extracting); GET /heads/lr/predictions?dataset=inbox gives its predictions"), route
        missing = client.get("/heads/lr/predictions", params={"dataset": "nothing"})
        assert missing.status_code == 404 and "POST /extract first" in missing.json()["detail"]
        assert client.get("/heads/lr/predictions").status_code == 422  # which dataset: required
        assert client.get("/heads/lr/predictions", params={"dataset": "inbox", "limit": 5000}).status_code == 422
