"""What a new user hit on the command line (issue 9, items 5-12), each pinned by a test."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from extractor.catalog import Catalog
from tests.conftest import REPO, assert_one_line_error, make_folder, run_cli, run_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three classes extracted with the tiny backbone and a logreg head on them."""
    root = tmp_path_factory.mktemp("findings")
    make_folder(root / "data", {"red": 12, "green": 12, "blue": 12})
    home = str(root / "home")
    for args in (["extract", str(root / "data"), "--dataset", "colors", "--backbone", "tiny", "--weights", "random"],
                 ["train", "--dataset", "colors", "--backbone", "tiny", "--name", "lr"]):
        result = run_cli(*args, "--home", home)
        assert result.returncode == 0, result.stderr
    return root, home


def n_split(capsys, home: str) -> int:
    return json.loads(run_main(capsys, "datasets", "--json", "--home", home)[1])[0]["splits"]["test"]


def no_backbone(monkeypatch):
    """Any forward pass fails the test: the answer must come from the cache (or from checks before it)."""
    def refuse(self):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr("extractor.model.LoadedBackbone.setup", refuse)


def test_a_closed_pipe_ends_quietly(trained):
    root, home = trained
    for args in (["predict", "lr", "--dataset", "colors"], ["datasets", "--json"], ["backbones"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written: `| head -0`
        proc = subprocess.run([sys.executable, "-m", "service", *args, "--home", home], cwd=REPO, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        os.close(write)
        assert proc.returncode == 141 and proc.stderr == "", (args, proc.stderr)


def test_predict_checks_paths_before_loading_anything(trained, capsys, monkeypatch):
    root, home = trained
    no_backbone(monkeypatch)
    code, out, err = run_main(capsys, "predict", "lr", str(root / "nope.jpg"), "--home", home)
    assert code == 1 and out == "" and err == f"headstart: error: {root / 'nope.jpg'}: no such file or folder\n"
    code, out, err = run_main(capsys, "predict", "lr", str(root / "nope.jpg"), "--json", "--home", home)
    assert code == 1 and json.loads(out) == [{"image": str(root / "nope.jpg"), "error": "no such file or folder"}]
    (root / "phone").mkdir(exist_ok=True)
    (root / "phone" / "IMG_1.DNG").write_bytes(b"x")  # before: "holds no image files" about a folder of photos
    code, out, err = run_main(capsys, "predict", "lr", str(root / "phone"), "--home", home)
    assert code == 1 and "holds no image files headstart reads; 1 photos in formats headstart does not read " \
                         "(.dng 1): convert them to JPEG or PNG" in err, err


def test_predict_a_dataset_with_test_time_views_and_in_chunks(trained, capsys, monkeypatch):
    """--tta N on --dataset: each row's top-k from the probabilities averaged over its N cached test-time views (the
    same as evaluate --tta scores), computed once; rows come in path order whatever the chunk size."""
    from classifiers import predict as predict_module
    from classifiers.persist import heads_dir
    from classifiers.predict import Predictor
    from classifiers.tta import dataset_proba
    from extractor.store import FeatureStore

    root, home = trained
    code, out, err = run_main(capsys, "predict", "lr", "--dataset", "colors", "--split", "val", "--tta", "2",
                              "--top-k", "3", "--json", "--home", home)
    assert code == 0, err
    rows = json.loads(out)
    store = FeatureStore(home)
    predictor = Predictor(heads_dir(store), "lr", device="cpu")
    averaged = dataset_proba(store, predictor.head, predictor.resolved, "colors", "val",
                             [r["sha256"] for r in predict_module.cached_predictions(
                                 store, predictor.head, predictor.manifest, "colors", "val", 3)[1]], 2, "cpu")
    expected = [predict_module.top_k(p, predictor.head.classes_, 3) for p in averaged]
    assert [r["top"] for r in rows] == expected
    plain = [r["top"] for r in predict_module.cached_predictions(store, predictor.head, predictor.manifest, "colors",
                                                                 "val", 3)[1]]
    assert plain != expected  # the views changed the probabilities: not the plain rows under another name
    no_backbone(monkeypatch)  # the views are cached now
    assert json.loads(run_main(capsys, "predict", "lr", "--dataset", "colors", "--split", "val", "--tta", "2",
                               "--top-k", "3", "--json", "--home", home)[1]) == rows
    whole = predict_module.cached_predictions(store, predictor.head, predictor.manifest, "colors", None, 2)
    monkeypatch.setattr(predict_module, "PREDICT_CHUNK", 5)
    assert predict_module.cached_predictions(store, predictor.head, predictor.manifest, "colors", None, 2) == whole
    total, page = predict_module.cached_predictions(store, predictor.head, predictor.manifest, "colors", None, 2,
                                                    offset=7, limit=9)
    assert total == whole[0] == 36 and page == whole[1][7:16]
    assert [r["image"] for r in whole[1]] == sorted(r["image"] for r in whole[1])
    unscored = predict_module.cached_predictions(store, predictor.head, predictor.manifest, "colors", None, 2,
                                                 score=False)  # what --tta lists before its views score the rows
    assert unscored[0] == 36 and [(r["image"], r["sha256"], r["top"]) for r in unscored[1]] == \
        [(r["image"], r["sha256"], None) for r in whole[1]]


def test_predict_a_dataset_split_from_the_cache_with_a_csv(trained, capsys, monkeypatch):
    root, home = trained
    no_backbone(monkeypatch)
    out_csv = root / "out" / "test.csv"
    code, out, err = run_main(capsys, "predict", "lr", "--dataset", "colors", "--split", "test", "--csv", str(out_csv),
                              "--top-k", "2", "--home", home)
    assert code == 0, err
    lines = out.splitlines()
    rows = list(csv.DictReader(open(out_csv)))
    n_test = n_split(capsys, home)
    assert len(rows) == len(lines) == n_test and all(r["split"] == "test" and r["cached"] == "True" for r in rows)
    assert sum(r["prediction"] == r["true_label"] for r in rows) >= n_test - 1
    assert all(len(r["top_k"].split("|")) == 2 for r in rows) and "(true: " in lines[0]


def test_a_dataset_partly_without_vectors_is_said_by_predict_and_train(tmp_path, capsys):
    """Before: the images with vectors were predicted (or trained on) and the others left out, silently: a CSV of
    part of the dataset passed for the whole."""
    written = make_folder(tmp_path / "data", {"a": 6, "b": 6})
    home = ["--home", str(tmp_path / "home")]
    assert run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights",
                    "random", *home)[0] == 0
    assert run_main(capsys, "train", "--dataset", "d", "--backbone", "tiny", "--name", "h", *home)[0] == 0
    make_folder(tmp_path / "more" / "x", {"a": 2, "b": 2}, seed=3)  # 4 new images beside 2 known ones
    for path in (written[0], written[-1]):  # one known image of each class
        (tmp_path / "more" / "x" / path.parent.name / f"k-{path.name}").write_bytes(path.read_bytes())
    (tmp_path / "more" / "x" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 cut")  # a recorded failure, not missing
    assert run_main(capsys, "extract", str(tmp_path / "more" / "x"), "--dataset", "m", "--backbone", "tiny",
                    "--weights", "random:3", *home)[0] == 0  # other weights: the 4 new images have no vectors of h
    code, out, err = run_main(capsys, "predict", "h", "--dataset", "m", "--csv", str(tmp_path / "m.csv"), *home)
    assert_one_line_error(code, err, "4 of the 6 images of dataset 'm' have no vectors of the features "
                                     "head 'h' was trained on (tiny, fingerprint ")
    assert out == "" and not (tmp_path / "m.csv").exists() and "--weights random:0` first" in err
    code, out, err = run_main(capsys, "train", "--dataset", "m", "--backbone", "tiny", "--weights", "random",
                              "--name", "hm", "--json", *home)
    said = json.loads(out)["warnings"]
    assert code == 0 and said[0] == (
        "4 of the 6 images of dataset 'm' have no vectors of these features (an extract stopped before the end?) and "
        "were left out: run `headstart extract DIR --dataset m --backbone tiny --weights random:0` to include them, "
        "then train again"), err
    assert said[1:] == ["the val and test splits are empty, so the head has no val or test figures: 2 of the 2 "
                        "classes have a single train image: a class's first image goes to train, and with the "
                        "default shares it needs 4 images to reach all three splits"]  # the 2 images left
    assert run_main(capsys, "extract", str(tmp_path / "more" / "x"), "--dataset", "m", "--backbone", "tiny",
                    "--weights", "random", *home)[0] == 0
    code, out, err = run_main(capsys, "predict", "h", "--dataset", "m", *home)
    assert code == 0 and len(out.splitlines()) == 6, err


def test_predict_uses_cached_vectors_for_known_files(trained, capsys, monkeypatch):
    root, home = trained
    known = sorted((root / "data" / "green").iterdir())[:2]
    no_backbone(monkeypatch)
    code, out, err = run_main(capsys, "predict", "lr", *map(str, known), "--json", "--home", home)
    assert code == 0, err
    assert [r["cached"] for r in json.loads(out)] == [True, True]
    assert all(r["top"][0]["label"] == "green" for r in json.loads(out))
    monkeypatch.undo()
    make_folder(root / "new", {"blue": 0, "green": 0, "red": 1}, seed=77)
    fresh = next((root / "new" / "red").iterdir())
    code, out, _ = run_main(capsys, "predict", "lr", str(fresh), str(known[0]), "--json", "--home", home)
    assert code == 0 and [r["cached"] for r in json.loads(out)] == [False, True]


def test_version_json_errors_and_option_sizes(trained, capsys):
    root, home = trained
    with pytest.raises(SystemExit) as stop:
        run_main(capsys, "--version")
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("headstart ")
    code, out, err = run_main(capsys, "train", "--dataset", "nope", "--backbone", "tiny", "--name", "x", "--json",
                              "--home", home)
    assert code == 1 and out == "" and "no dataset 'nope'" in json.loads(err)["error"]
    code, out, err = run_main(capsys, "extract", str(root / "data"), "--dataset", "colors", "--backbone", "tiny",
                              "--weights", "random", "--max-pixels", "100M", "--max-bytes", "8M", "--home", home)
    assert code == 0 and "nothing to compute" in out and "0.0 img/s" not in out, out + err
    with pytest.raises(SystemExit):
        run_main(capsys, "extract", str(root / "data"), "--dataset", "colors", "--max-pixels", "lots")
    assert "expected a positive number, optionally with K, M or G" in capsys.readouterr().err


def test_heads_listing_and_settings_errors_name_what_the_user_typed(trained, capsys):
    root, home = trained
    code, out, _ = run_main(capsys, "heads", "--home", home)
    assert code == 0
    assert all(len(cell) == 5 and cell[1] == "." for cell in out.splitlines()[1].split()[5:7])  # 1.000 beside 0.958
    code, _, err = run_main(capsys, "serve", "--port", "99999", "--home", home, "--data-root", str(root))
    assert_one_line_error(code, err, "--port=99999")


def test_csv_as_excel_saves_it_is_read(tmp_path, capsys):
    """Excel in European locales saves CSV with ';' in the Windows code page; before, ';' was refused and
    Windows-1252 ended in a UnicodeDecodeError traceback."""
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    (tmp_path / "labels.csv").write_bytes("path;label\r\na/a_0000.jpg;caf\u00e9\r\na/a_0001.jpg;caf\u00e9\r\n"
                                          "b/b_0000.jpg;b\r\nb/b_0001.jpg;b\r\n".encode("cp1252"))
    code, out, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "x", "--labels",
                              str(tmp_path / "labels.csv"), "--backbone", "tiny", "--weights", "random", "--json",
                              "--home", str(tmp_path / "home"))
    assert code == 0 and json.loads(out)["extracted"] == 4, err
    assert any(w.startswith(f"{tmp_path / 'labels.csv'} is not UTF-8 (byte 0xe9 on line 2); it was read as "
                            f"Windows-1252") for w in json.loads(out)["warnings"]), out
    members = Catalog(tmp_path / "home" / "catalog.sqlite").members("x")
    assert sorted((m[0], m[2]) for m in members) == [("a/a_0000.jpg", "caf\u00e9"), ("a/a_0001.jpg", "caf\u00e9"),
                                                     ("b/b_0000.jpg", "b"), ("b/b_0001.jpg", "b")]
    (tmp_path / "labels.csv").write_bytes(b"path,label\na/a_0000.jpg,\x81\n")  # neither UTF-8 nor Windows-1252
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "y", "--labels",
                            str(tmp_path / "labels.csv"), "--backbone", "tiny", "--weights", "random",
                            "--home", str(tmp_path / "home"))
    assert_one_line_error(code, err, "is not UTF-8 text (byte 0x81 on line 2); save it as UTF-8")
    (tmp_path / "labels.csv").write_text("id,label\n")  # before: "no images found in DATA; expected class subfolders"
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "z", "--labels",
                            str(tmp_path / "labels.csv"), "--backbone", "tiny", "--weights", "random",
                            "--home", str(tmp_path / "home"))
    assert_one_line_error(code, err, f"{tmp_path / 'labels.csv'} has a header but no rows; expected one row per "
                                     f"image (id,label)")


def test_file_and_folder_names_that_are_not_utf8(tmp_path, capsys):
    """Names from an old archive or a Windows share (b'caf\\xe9.jpg'): before, extract ended in a traceback from SQLite
    ("surrogates not allowed") and predict --csv in one from the CSV writer. Now they show as `\\xNN`."""
    written = make_folder(tmp_path / "src", {"a": 3, "b": 3})
    data = os.fsencode(tmp_path / "data")
    for path in written:
        folder = data + b"/" + (b"\xe9t\xe9" if path.parent.name == "a" else b"b")
        os.makedirs(folder, exist_ok=True)
        with open(folder + b"/caf\xe9_" + os.fsencode(path.name), "wb") as fh:
            fh.write(path.read_bytes())
    home = str(tmp_path / "home")
    code, out, err = run_main(capsys, "extract", os.fsdecode(data), "--dataset", "x", "--backbone", "tiny",
                              "--weights", "random", "--json", "--home", home)
    assert code == 0 and json.loads(out)["extracted"] == 6, err
    members = Catalog(tmp_path / "home" / "catalog.sqlite").members("x")
    assert ("\\xe9t\\xe9/caf\\xe9_a_0000.jpg", "\\xe9t\\xe9") in [(m[0], m[2]) for m in members]
    code, out, err = run_main(capsys, "extract", os.fsdecode(data), "--dataset", "x", "--backbone", "tiny",
                              "--weights", "random", "--json", "--home", home)  # hashes reused, nothing computed
    assert code == 0 and json.loads(out)["extracted"] == 0 and json.loads(out)["cached"] == 6, err
    assert run_main(capsys, "train", "--dataset", "x", "--backbone", "tiny", "--name", "h", "--home", home)[0] == 0
    code, out, err = run_main(capsys, "predict", "h", os.fsdecode(data + b"/b"), "--csv", str(tmp_path / "p.csv"),
                              "--home", home)
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert [r["image"] for r in rows] == [f"{tmp_path}/data/b/caf\\xe9_b_000{i}.jpg" for i in range(3)]
    assert out.splitlines()[0].startswith(f"{tmp_path}/data/b/caf\\xe9_b_0000.jpg: ")
    from extractor.definition import member_files  # what views, test-time views and fine-tuning read

    files = member_files(Catalog(tmp_path / "home" / "catalog.sqlite"), "x")
    assert len(files) == 6 and all(f.is_file() for f in files.values())


def test_train_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        run_main(capsys, "train", "--help")
    text = capsys.readouterr().out
    assert "epochs=30" in text and "C=1.0" in text and "hidden=512,512" in text


def test_read_only_commands_create_no_home(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["datasets"], ["heads"], ["evaluate", "h"], ["verify"]):
        code, _, err = run_main(capsys, *args, "--home", str(empty))
        assert_one_line_error(code, err, "holds no headstart catalog")
    assert list(empty.iterdir()) == []


def test_terminal_warnings_one_class_top_level_files_and_dtype(tmp_path, capsys):
    make_folder(tmp_path / "one", {"only": 3})
    (tmp_path / "one" / "stray.jpg").write_bytes((tmp_path / "one" / "only" / "only_0000.jpg").read_bytes())
    home = ["--home", str(tmp_path / "home")]
    base = ["extract", str(tmp_path / "one"), "--dataset", "one", "--backbone", "tiny", "--weights", "random", *home]
    code, _, err = run_main(capsys, *base)
    assert code == 0
    assert "has one class ('only')" in err and "1 files at the top level" in err and "were not read" in err
    code, _, err = run_main(capsys, *base, "--dtype", "float16")
    assert code == 0 and "stored as float32; --dtype float16" in err and "nothing changed" in err


def test_datasets_tell_two_feature_sets_apart(tmp_path, capsys):
    make_folder(tmp_path / "d", {"a": 2, "b": 2})
    home = ["--home", str(tmp_path / "home")]
    for extra in (["--weights", "random:1"], ["--weights", "random:2"], ["--weights", "random:1", "--size", "40"]):
        assert run_main(capsys, "extract", str(tmp_path / "d"), "--dataset", "d", "--backbone", "tiny", *extra,
                        *home)[0] == 0
    out = run_main(capsys, "datasets", *home)[1]
    for label in ("tiny@32[random:1]=4", "tiny@32[random:2]=4", "tiny@40[random:1]=4"):
        assert label in out


def test_all_failed_dataset_says_why(tmp_path, capsys):
    (tmp_path / "junk" / "a").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "junk" / "a" / f"{i}.jpg").write_text("not an image")
    home = ["--home", str(tmp_path / "home")]
    code, out, err = run_main(capsys, "extract", str(tmp_path / "junk"), "--dataset", "j", "--backbone", "tiny",
                              "--weights", "random", *home)
    assert code == 1 and "failed: a/0.jpg: " in out and "no image could be used, so dataset 'j' was not registered" \
        in err  # a first extract: nothing registered, so the rerun with the right folder needs no --redefine
    assert "no datasets yet" in run_main(capsys, "datasets", *home)[1]
    written = make_folder(tmp_path / "good", {"a": 2, "b": 2})
    tiny = ["--backbone", "tiny", "--weights", "random", *home]
    assert run_main(capsys, "extract", str(tmp_path / "good"), "--dataset", "g", *tiny)[0] == 0
    for path in written:  # a dataset that exists keeps its record, with why each file failed
        path.write_text("not an image any more")
    assert run_main(capsys, "extract", str(tmp_path / "good"), "--dataset", "g", *tiny)[0] == 1
    assert "none: all 4 files failed" in run_main(capsys, "datasets", *home)[1]


def test_evaluate_prints_the_confusion_matrix_log_loss_and_small_split_warning(trained, capsys):
    root, home = trained
    code, out, err = run_main(capsys, "evaluate", "lr", "--split", "test", "--home", home)
    assert code == 0 and "log_loss" in out and "confusion matrix (rows: true label" in out
    matrix = out[out.index("confusion matrix"):].splitlines()[2:5]
    assert [line.split()[1] for line in matrix] == ["blue", "green", "red"]
    assert sum(int(c) for line in matrix for c in line.split()[2:]) == n_split(capsys, home)
    assert "fewer than 5 images of 3 classes" in err


def test_absent_class_has_no_f1(capsys):
    import numpy as np

    from classifiers.metrics import evaluate

    m = evaluate(np.array(["a", "a", "b"]), np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]]),
                 np.array(["a", "b", "c"]))
    assert m["per_class"]["c"]["f1"] is None and m["per_class"]["a"]["f1"] == 1.0


def test_plots_name_each_auc_and_mark_the_restored_epoch(tmp_path, monkeypatch):
    import numpy as np

    from classifiers import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    y = np.array(["a", "b", "c"] * 10)
    proba = np.eye(3)[[0, 1, 2] * 10] * 0.8 + 0.2 / 3
    plots.roc(y, proba, np.array(["a", "b", "c"]), tmp_path / "r.png", "t")
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert legend == ["a (AUC 1.000)", "b (AUC 1.000)", "c (AUC 1.000)"]
    assert len({line.get_linestyle() for line in figures[0].axes[0].lines[:3]}) == 3
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": abs(e - 3) + 0.1, "val_acc": 0.5}
               for e in range(1, 7)]
    plots.training(history, tmp_path / "t.png", "t")
    assert plots.best_epoch(history) == 3
    assert any("restored (epoch 3)" == t.get_text() for t in figures[1].axes[0].get_legend().get_texts())
    for n, named in ((12, 12), (200, 30)):  # 200 classes: 30 named (before: all, unreadable; 1,000 took 7.8 s, 19 MB)
        labels = [f"class_{i:03d}" for i in range(n)]
        plots.confusion({"confusion_matrix": np.eye(n, dtype=int).tolist(), "labels": labels}, tmp_path / "c.png", "t")
        ax = figures[-1].axes[0]
        shown = [t.get_text() for t in ax.get_xticklabels()]
        assert len(shown) == named and shown[0] == labels[0] and shown[-1] == labels[-1]
        assert ax.get_title() == ("t" if n == 12 else "t (200 classes, 30 named)")


def test_predict_argument_errors(trained, capsys):
    _, home = trained
    for args, expected in ((["predict", "lr"], "nothing to predict"),
                           (["predict", "lr", "x.jpg", "--split", "test"], "--split chooses a split of --dataset"),
                           (["predict", "lr", "--dataset", "colors", "--top-k", "0"], "expected integers >= 1")):
        code, _, err = run_main(capsys, *args, "--home", home)
        assert_one_line_error(code, err, expected)


def test_an_os_error_names_the_path_and_what_to_check(tmp_path, capsys):
    """Before: 'No such file or directory: PATH' and nothing about what to do."""
    make_folder(tmp_path / "data", {"a": 1, "b": 1})
    (tmp_path / "file").write_text("")
    code, _, err = run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                            "--weights", "random", "--home", str(tmp_path / "file" / "home"))
    assert_one_line_error(code, err, f": {tmp_path / 'file' / 'home'}; check that path and its permissions")


@pytest.mark.parametrize(("command", "resumable"), [("extract", True), ("finetune", True), ("compare", True),
                                                    ("train", False), ("predict", False), ("export", False)])
def test_ctrl_c_says_what_was_kept_for_the_command_interrupted(command, resumable, capsys, monkeypatch):
    """Before: every command said 'finished batches are saved, run the same command to continue', also train and
    predict, which keep nothing and do not resume."""
    from service import cli

    real = cli.build_parser

    def interrupted_parser():
        parser = real()
        parser.set_defaults(func=None)
        for action in parser._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(func=lambda _args: (_ for _ in ()).throw(KeyboardInterrupt()))
        return parser

    monkeypatch.setattr(cli, "build_parser", interrupted_parser)
    args = {"extract": ["extract", "d", "--dataset", "x"], "finetune": ["finetune", "--dataset", "x", "--name", "f"],
            "compare": ["compare", "--dataset", "x", "--backbones", "tiny"], "train": ["train", "--dataset", "x",
            "--backbone", "tiny", "--name", "h"], "predict": ["predict", "h", "x.jpg"],
            "export": ["export", "--dataset", "x", "--backbone", "tiny", "--out", "x.h5"]}[command]
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("headstart: interrupted")
    assert ("run the same command to continue" in err) == resumable, err


def test_train_and_export_without_backbone_use_the_one_the_dataset_has(tmp_path, capsys):
    """Extracted with --backbone tiny, trained without naming it: before, `dataset has no vgg16 features; run
    headstart extract ... --backbone vgg16` (an hour of forward passes on a real dataset, for nothing)."""
    make_folder(tmp_path / "data", {"a": 6, "b": 6})
    home = ["--home", str(tmp_path / "home")]
    extract = ["extract", str(tmp_path / "data"), "--dataset", "d", "--weights", "random"]
    assert run_main(capsys, *extract, "--backbone", "tiny", *home)[0] == 0
    code, out, err = run_main(capsys, "train", "--dataset", "d", "--name", "h", "--json", *home)
    assert code == 0 and json.loads(out)["backbone"] == "tiny", err
    code, out, err = run_main(capsys, "export", "--dataset", "d", "--out", str(tmp_path / "d.h5"), *home)
    assert code == 0 and "wrote 12 x 64 features" in out, err
    assert run_main(capsys, *extract, "--backbone", "mobilenet_v2", "--size", "32", *home)[0] == 0
    code, _, err = run_main(capsys, "train", "--dataset", "d", "--name", "h2", *home)
    assert code == 1 and err == "headstart: error: dataset 'd' has features of mobilenet_v2, tiny, not of vgg16 (the " \
                               "default backbone); pass --backbone to choose one\n"
    code, out, err = run_main(capsys, "train", "--dataset", "d", "--name", "h2", "--backbone", "tiny", "--json", *home)
    assert code == 0 and json.loads(out)["backbone"] == "tiny", err


def test_an_imbalanced_train_split_is_pointed_out_with_class_weight(tmp_path, capsys):
    """A class 20 times the size of another: the head's accuracy favours it, and before nothing said so."""
    make_folder(tmp_path / "data", {"common": 40, "rare": 2})
    home = ["--home", str(tmp_path / "home")]
    assert run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                    "--weights", "random", "--split", "0.5,0.25,0.25", *home)[0] == 0
    said = ("the train split is imbalanced: common has 20 images, rare 1 (20x); accuracy favours the large classes: "
            "read f1_macro, or train with class_weight=balanced")
    for stream in ("never", "always"):  # in memory, and read in blocks
        code, out, err = run_main(capsys, "train", "--dataset", "d", "--name", f"h-{stream}", "--stream", stream,
                                  "--json", *home)
        assert code == 0 and any(w.startswith(said) for w in json.loads(out)["warnings"]), (stream, out, err)
    code, out, _ = run_main(capsys, "train", "--dataset", "d", "--name", "hb", "--param", "class_weight=balanced",
                            "--json", *home)
    assert code == 0 and not any("imbalanced" in w for w in json.loads(out)["warnings"])
    code, out, _ = run_main(capsys, "train", "--dataset", "d", "--name", "hc", "--head", "centroid", "--json", *home)
    assert code == 0 and not any("imbalanced" in w for w in json.loads(out)["warnings"])  # class means: no weights


def test_predict_a_folder_of_class_folders_says_how_many_it_got_right(trained, capsys, tmp_path):
    """New photos sorted into folders named as the head's classes: each row has its true label, and a last line
    the accuracy (before: predictions only, to be compared by hand)."""
    root, home = trained
    mixed = tmp_path / "new"
    for label in ("red", "green"):
        (mixed / label).mkdir(parents=True)
        for i, path in enumerate(sorted((root / "data" / label).iterdir())[:3]):
            (mixed / label / f"{i}.jpg").write_bytes(path.read_bytes())
    (mixed / "unsorted").mkdir()
    (mixed / "unsorted" / "x.jpg").write_bytes((mixed / "red" / "0.jpg").read_bytes())
    code, out, err = run_main(capsys, "predict", "lr", str(mixed), "--home", home)
    assert code == 0, err
    lines = out.splitlines()  # one line per image, as always
    assert len(lines) == 7 and sum("(true: " in line for line in lines) == 6 and "unsorted/x.jpg" in out
    right = sum(line.split(": ")[1].split(" ")[0] == line.split("(true: ")[1].rstrip(")")
                for line in lines if "(true: " in line)
    assert err == (f"headstart: accuracy {right / 6:.3f}: {right} of the 6 images with a true label (a dataset's, or "
                   f"the class folder they are in) predicted right\n")
    code, out, _ = run_main(capsys, "predict", "lr", str(mixed), "--json", "--home", home)
    rows = json.loads(out)
    assert {r["true_label"] for r in rows if "true_label" in r} == {"red", "green"} and len(rows) == 7


def _csv_dataset(root, labels: list[str]):
    """Images 0.jpg .. N-1.jpg with a labels.csv giving image i the label labels[i]."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(len(labels)):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    (root / "labels.csv").write_text("file,label\n" + "".join(f"{i}.jpg,{x}\n" for i, x in enumerate(labels)))
    return root


def test_labels_naming_single_images_are_said_at_extract_and_at_train(tmp_path, capsys):
    """Before: a label column of per-image values (measurements such as 3.142, or ids) became as many classes as
    images without a word at extract; train put every image in train (a class's first image goes there), printed
    scikit-learn's UserWarning with its source path, and no figure at all, without saying why. `--labels-csv` (the
    API's name) was an unrecognized argument."""
    data = _csv_dataset(tmp_path / "data", [f"{0.137 * i:.3f}" for i in range(24)])
    home = ["--home", str(tmp_path / "home")]
    code, _, err = run_main(capsys, "extract", str(data), "--labels-csv", str(data / "labels.csv"), "--dataset", "d",
                            "--backbone", "tiny", "--weights", "random", *home)
    assert code == 0 and "headstart: warning: 24 classes for 24 labeled images, 24 of them with one image ('0.000'," \
                         in err and "look like values of single images" in err, err
    done = run_cli("train", "--dataset", "d", "--name", "h", *home)  # its own process: warning filters as shipped
    assert done.returncode == 0, done.stderr
    assert "UserWarning" not in done.stderr and "headstart: warning: the val and test splits are empty, so the head " \
        "has no val or test figures: 24 of the 24 classes have a single train image" in done.stderr, done.stderr
    code, _, err = run_main(capsys, "extract", str(data), "--dataset", "d", "--dry-run", *home)
    assert code == 0 and "24 classes for 24 labeled images" in err, err


def test_multi_label_rows_and_a_split_left_empty_are_said(tmp_path, capsys):
    """A multi-label CSV's `cat|dog` beside `cat` and `dog` is a class of its own here: said at extract. A split
    asked to be empty is said at train (before: no test line, no word)."""
    labels = ["cat", "dog", "cat|dog"] * 8
    data = _csv_dataset(tmp_path / "data", labels)
    home = ["--home", str(tmp_path / "home")]
    code, _, err = run_main(capsys, "extract", str(data), "--labels", str(data / "labels.csv"), "--dataset", "m",
                            "--backbone", "tiny", "--weights", "random", *home)
    assert code == 0 and "headstart: warning: labels that join other labels are classes of their own: 'cat|dog';" \
                         in err and "classes for" not in err, err
    assert run_main(capsys, "extract", str(data), "--labels", str(data / "labels.csv"), "--dataset", "p",
                    "--split", "0.8,0.2,0", "--backbone", "tiny", "--weights", "random", *home)[0] == 0
    code, out, err = run_main(capsys, "train", "--dataset", "p", "--name", "hp", *home)
    assert code == 0 and "  val " in out and "  test" not in out, out
    assert "headstart: warning: the test split is empty, so the head has no test figures: the split gave it no " \
           "image (--split when extracting sets the shares" in err, err
    code, _, err = run_main(capsys, "train", "--dataset", "m", "--name", "hm", *home)
    assert code == 0 and "empty" not in err, err


LIGHT_COMMANDS = (["--help"], ["train", "--help"], ["datasets"], ["heads"], ["backbones"], ["backbones", "--all"],
                  ["verify"], ["prune", "--dry-run"], ["datasets", "rm", "nope"], ["heads", "rm", "nope"])
NO_TORCH_COMMANDS = (["predict", "lr", "--dataset", "colors"], ["evaluate", "lr"])  # a logreg head, from the cache
LIGHT_CHECK = """
import contextlib, io, sys
from service.cli import main
for args, unwanted in {commands!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main([*args, "--home", {home!r}] if args[-1] != "--help" else args)
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(set(unwanted) & set(sys.modules))
    if heavy or code not in (0, 1):
        sys.exit(f"{{' '.join(args)}} exited {{code}}, imported {{', '.join(heavy)}}")
"""


def test_commands_that_compute_nothing_import_no_torch_or_sklearn(trained):
    """Listing, help, verify and removal read files only: before, each imported torch (the head parameters' help,
    through the dense head) or scikit-learn (the heads' folder, through training), ~1.6 s of every command. A
    logreg head predicting or scored from the cache needs no torch either (~1 s of its 1.9 s before)."""
    root, home = trained
    commands = [(args, ["torch", "torchvision", "sklearn", "scipy"]) for args in LIGHT_COMMANDS]
    commands += [(args, ["torch", "torchvision"]) for args in NO_TORCH_COMMANDS]
    proc = subprocess.run([sys.executable, "-c", LIGHT_CHECK.format(commands=commands, home=home)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
