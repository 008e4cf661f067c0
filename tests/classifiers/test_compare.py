"""Backbones ranked by a linear probe (`headstart compare`), and logreg's C=auto (chosen on val only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import classifiers.training as training
from classifiers.heads import LogRegHead
from classifiers.training import train_head
from extractor.errors import HeadstartError
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import assert_one_line_error, make_folder, run_main


@pytest.fixture
def home(tmp_path):
    make_folder(tmp_path / "data", {"a": 10, "b": 10, "c": 10})
    extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone="tiny", weights="random", workers=0,
                           device="cpu"), FeatureStore(tmp_path / "home"))
    return tmp_path / "home"


def test_compare_ranks_backbones_and_a_rerun_extracts_nothing(home, capsys):
    args = ("compare", "--dataset", "d", "--backbones", "tiny,vgg16", "--weights", "random", "--home", str(home))
    code, out, _ = run_main(capsys, *args, "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["rank"] for r in rows] == [1, 2] and {r["backbone"] for r in rows} == {"tiny", "vgg16"}
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    by = {r["backbone"]: r for r in rows}
    assert by["vgg16"]["extracted_now"] == 30 and by["tiny"]["extracted_now"] == 0  # tiny was cached already
    assert by["vgg16"]["dim"] == 8192 and by["tiny"]["dim"] == 64 and by["vgg16"]["extract_img_s"] > 0
    assert by["tiny"]["extract_img_s"] > 0  # measured by the plain extract that computed them
    assert by["vgg16"]["C"] in LogRegHead.C_GRID and by["vgg16"]["images"] == {"train": 18, "val": 6, "test": 6}
    assert by["vgg16"]["cache_mb"] == pytest.approx(30 * 8192 * 4 / 2**20, rel=0.01)
    code, out, _ = run_main(capsys, *args, "--json")
    again = {r["backbone"]: r for r in json.loads(out)["rows"]}
    assert all(r["extracted_now"] == 0 for r in again.values())  # cached: nothing extracted
    assert again["vgg16"]["extract_img_s"] == by["vgg16"]["extract_img_s"]  # the rate measured once is kept
    assert [again[b]["val_accuracy"] for b in by] == [by[b]["val_accuracy"] for b in by]
    code, out, _ = run_main(capsys, *args)
    assert code == 0 and "val acc" in out and out.index("vgg16") > 0 and "tiny" in out


def test_compare_on_a_sample_extracts_only_the_sample(home, capsys):
    code, out, _ = run_main(capsys, "compare", "--dataset", "d", "--backbones", "vgg16", "--weights", "random",
                            "--sample", "15", "--home", str(home), "--json")
    row = json.loads(out)["rows"][0]
    assert code == 0 and row["extracted_now"] == sum(row["images"].values()) < 30
    assert min(row["images"].values()) >= 1



def test_a_sample_too_small_to_rank_on_is_said_with_the_images_used(home, capsys):
    """Before: --sample 5 on 3 classes printed val acc 1.000 and test acc 0.000 from 1 image each, no word of it."""
    code, out, err = run_main(capsys, "compare", "--dataset", "d", "--backbones", "tiny", "--weights", "random",
                              "--sample", "5", "--home", str(home))
    assert code == 0
    header = out.splitlines()[0]
    assert "3/1/1 images train/val/test" in header, out
    warnings = [line for line in err.splitlines() if line.startswith("headstart: warning: ")]
    assert any("the val split has fewer than 5 images" in w and "a larger --sample" in w for w in warnings), err
    code, out, _ = run_main(capsys, "compare", "--dataset", "d", "--backbones", "tiny", "--weights", "random",
                            "--sample", "5", "--home", str(home), "--json")
    row = json.loads(out)["rows"][0]
    assert any("the test split has fewer than 5 images" in w for w in row["warnings"])

@pytest.mark.parametrize("args, expected", [
    (("--backbones", "tiny,vgg61"), "vgg16"), (("--backbones", ","), "comma-separated"),
    (("--backbones", "tiny", "--sample", "0"), "at least 1"),
])
def test_compare_errors_are_one_line(home, capsys, args, expected):
    code, _, err = run_main(capsys, "compare", "--dataset", "d", "--weights", "random", "--home", str(home), *args)
    assert_one_line_error(code, err, expected)


def separable(rng, n, shift):
    X = rng.normal(size=(n, 20)).astype(np.float32)
    y = (X[:, 0] + shift * X[:, 1] > 0).astype(int).astype(str)
    return X, y


def test_c_auto_picks_the_best_val_accuracy_of_the_sweep():
    rng = np.random.default_rng(0)
    X, y = separable(rng, 60, 0.5)
    Xv, yv = separable(rng, 40, 0.5)
    head = LogRegHead(C="auto").fit(X, y, Xv, yv)
    accs = {}
    for C in LogRegHead.C_GRID:
        one = LogRegHead(C=C).fit(X, y)
        accs[C] = float((one.predict(Xv) == yv).mean())
    best = max(accs.values())
    assert head.chosen_C_ == min(C for C, a in accs.items() if a == best)  # ties: the stronger regularisation
    assert [row["val_accuracy"] for row in head.sweep_] == pytest.approx([accs[C] for C in LogRegHead.C_GRID])
    assert float((head.predict(Xv) == yv).mean()) == pytest.approx(best)


def test_c_auto_never_sees_test_data(home, monkeypatch):
    store = FeatureStore(home)
    first = train_head(store, "d", "tiny", "logreg", "probe", params={"C": "auto"})
    real = training.split_arrays

    def other_test(table):  # the same train and val; test replaced by noise with shuffled labels
        data = real(table)
        X, y = data["test"]
        rng = np.random.default_rng(1)
        data["test"] = (rng.normal(size=X.shape).astype(np.float32) * 50, rng.permutation(y))
        return data

    monkeypatch.setattr(training, "split_arrays", other_test)
    second = train_head(store, "d", "tiny", "logreg", "probe2", params={"C": "auto"})
    assert second["chosen"] == first["chosen"]  # the choice and the sweep it came from
    assert second["metrics"]["test"] != first["metrics"]["test"]  # the test data did change

    def other_val(table):  # and the val split does drive it
        data = real(table)
        X, y = data["val"]
        data["val"] = (X, np.roll(y, 1))
        return data

    monkeypatch.setattr(training, "split_arrays", other_val)
    third = train_head(store, "d", "tiny", "logreg", "probe3", params={"C": "auto"})
    assert [r["val_accuracy"] for r in third["chosen"]["sweep"]] != [r["val_accuracy"] for r in
                                                                      first["chosen"]["sweep"]]


def test_c_auto_without_val_and_bad_c_are_one_line_errors(capsys, home):
    rng = np.random.default_rng(0)
    X, y = separable(rng, 30, 0.5)
    with pytest.raises(HeadstartError, match="C=auto chooses C on the val split"):
        LogRegHead(C="auto").fit(X, y)
    code, _, err = run_main(capsys, "train", "--dataset", "d", "--backbone", "tiny", "--head", "logreg",
                            "--name", "x", "--param", "C=often", "--home", str(home))
    assert_one_line_error(code, err, "or auto")


def test_train_with_c_auto_says_which_c_it_chose(capsys, home):
    args = ["train", "--dataset", "d", "--backbone", "tiny", "--name", "auto", "--param", "C=auto", "--home", str(home)]
    code, out, err = run_main(capsys, *args, "--json")
    assert code == 0, err
    chosen = json.loads(out)["chosen"]
    best = max(r["val_accuracy"] for r in chosen["sweep"])
    assert chosen["C"] in {r["C"] for r in chosen["sweep"] if r["val_accuracy"] == best}
    code, out, _ = run_main(capsys, *args)
    sweep = chosen["sweep"]
    assert code == 0 and f", C={chosen['C']:g} chosen on val (of {len(sweep)} from {sweep[0]['C']:g} to " \
                         f"{sweep[-1]['C']:g})" in out.splitlines()[0], out


def test_compare_and_finetune_refuse_an_unlabeled_dataset_before_extracting(tmp_path, capsys):
    """Before: each extracted the first backbone's features (minutes on real data) and only then said 'no labels'."""
    make_folder(tmp_path / "data", {"a": 3})
    home = str(tmp_path / "home")
    assert run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "u", "--unlabeled", "--backbone", "tiny",
                    "--weights", "random", "--home", home)[0] == 0
    for args in (["compare", "--dataset", "u", "--backbones", "resnet18,tiny", "--weights", "random"],
                 ["finetune", "--dataset", "u", "--backbone", "resnet18", "--weights", "random", "--name", "f"]):
        code, _, err = run_main(capsys, *args, "--home", home)
        assert_one_line_error(code, err, "dataset 'u': this dataset has no labels; heads need labeled images")
    fingerprints = FeatureStore(tmp_path / "home").catalog.dataset_summary("u")["fingerprints"]
    assert [f[1] for f in fingerprints] == ["tiny"]
