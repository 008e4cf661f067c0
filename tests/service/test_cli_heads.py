"""The heads CLI end to end on a small extracted folder (tiny backbone, float16 storage)."""

from __future__ import annotations

import json

from PIL import Image

from tests.conftest import assert_one_line_error, make_folder, run_cli, run_main


def test_train_evaluate_predict_heads_end_to_end(tmp_path):
    make_folder(tmp_path / "data", {"red": 20, "green": 20, "blue": 20})
    home = ["--home", str(tmp_path / "home")]
    extracted = run_cli("extract", str(tmp_path / "data"), "--dataset", "colors", "--backbone", "tiny",
                        "--weights", "random", "--dtype", "float16", *home)
    assert extracted.returncode == 0, extracted.stderr
    for kind in ("logreg", "mlp"):
        trained = run_cli("train", "--dataset", "colors", "--backbone", "tiny", "--head", kind, "--name", kind,
                          "--param", "class_weight=balanced", "--json", *home)
        assert trained.returncode == 0, trained.stderr
        metrics = json.loads(trained.stdout)["metrics"]
        assert metrics["test"]["accuracy"] >= 0.9 and metrics["val"]["n"] == 12
    evaluated = run_cli("evaluate", "mlp", "--split", "test", "--plots", str(tmp_path / "plots"), "--json", *home)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["metrics"]["confusion_matrix"] and len(result["plots"]) == 3
    for plot in result["plots"]:
        with Image.open(plot) as img:
            assert img.format == "PNG" and img.size[0] > 300
    make_folder(tmp_path / "new", {"blue": 0, "green": 1, "red": 0}, seed=99)  # same class index as training
    image = next((tmp_path / "new" / "green").iterdir())
    (tmp_path / "junk.jpg").write_text("not an image")
    predicted = run_cli("predict", "logreg", str(image), str(tmp_path / "junk.jpg"), str(tmp_path / "absent.jpg"),
                        "--top-k", "2", "--json", *home)
    assert predicted.returncode == 1, predicted.stderr  # some files failed: said per file, exit 1
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in json.loads(predicted.stdout)}
    assert rows[image.name]["top"][0]["label"] == "green" and len(rows[image.name]["top"]) == 2
    assert "not a supported image" in rows["junk.jpg"]["error"]
    assert rows["absent.jpg"]["error"] == "no such file or folder"
    make_folder(tmp_path / "batch", {"blue": 3, "green": 3, "red": 3}, seed=7)  # a folder, 2 images per forward
    (tmp_path / "batch" / "red" / "notes.txt").write_text("skipped: not an image file")
    folder = run_cli("predict", "logreg", str(tmp_path / "batch"), "--batch-size", "2", *home)
    lines = folder.stdout.splitlines()
    assert folder.returncode == 0 and len(lines) == 9, folder.stdout + folder.stderr
    right = sum(line.split(": ")[1].startswith(line.split("/")[-2]) for line in lines)  # .../red/x.jpg: red 0.9..
    assert right >= 8, folder.stdout
    listing = json.loads(run_cli("heads", "--json", *home).stdout)
    assert {r["name"]: r["classes"] for r in listing} == {"logreg": 3, "mlp": 3}


def test_head_errors_are_one_line(tmp_path, capsys):
    home = ["--home", str(tmp_path / "home")]
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights", "random",
             *home)
    cases = [
        (["train", "--dataset", "d", "--backbone", "tiny", "--head", "svm", "--name", "x"], "unknown head"),
        (["train", "--dataset", "d", "--backbone", "vgg16", "--name", "x"], "has no vgg16 features"),
        (["train", "--dataset", "d", "--backbone", "tiny", "--name", "x", "--param", "C"], "key=value"),
        (["train", "--dataset", "d", "--backbone", "tiny", "--head", "mlp", "--name", "x", "--param", "device=gpu"],
         "device 'gpu': expected auto, cpu, cuda"),
        (["evaluate", "missing"], "no head 'missing'"),
        (["predict", "missing", "x.jpg"], "no head 'missing'"),
    ]
    run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "flat", "--unlabeled", "--backbone", "tiny",
             "--weights", "random", *home)
    cases.append((["train", "--dataset", "flat", "--backbone", "tiny", "--name", "x"], "has no labels"))
    for args, expected in cases:
        code, _, err = run_main(capsys, *args, *home)
        assert_one_line_error(code, err, expected)


def test_output_paths_that_cannot_be_written_are_one_line_before_any_work_and_leave_nothing(tmp_path, capsys):
    """Before: predict --csv FOLDER printed every prediction, then 'Is a directory: FOLDER.tmp' (FOLDER.tmp left
    beside it); an unwritable --csv named OUT.csv.tmp; evaluate --plots FILE said 'File exists: FILE'."""
    home = ["--home", str(tmp_path / "home")]
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights", "random",
             *home)
    assert run_main(capsys, "train", "--dataset", "d", "--backbone", "tiny", "--name", "h", *home)[0] == 0
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        (["predict", "h", "--dataset", "d", "--split", "train", "--csv", str(tmp_path / "folder")],
         f"--csv {tmp_path / 'folder'} is a folder; give a file path, e.g. {tmp_path / 'folder' / 'predictions.csv'}"),
        (["predict", "h", "--dataset", "d", "--split", "train", "--csv", str(tmp_path / "file" / "p.csv")],
         f"cannot write {tmp_path / 'file' / 'p.csv'}: "),
        (["evaluate", "h", "--plots", str(tmp_path / "file")], f"--plots {tmp_path / 'file'} is a file; give a folder"),
        (["evaluate", "h", "--plots", str(tmp_path / "file" / "plots")],
         f"cannot write {tmp_path / 'file' / 'plots'}: "),
    ]
    for args, expected in cases:
        code, out, err = run_main(capsys, *args, *home)
        assert_one_line_error(code, err, expected)
        assert out == ""  # refused before any prediction is printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file", "folder", "home"]  # no *.tmp left
    assert list((tmp_path / "folder").iterdir()) == []


def test_evaluate_on_another_labeled_dataset(tmp_path, capsys):
    """A head trained on one dataset, scored on a holdout dataset: all its labeled images by default, after a one-line
    refusal while its vectors of the head's features are missing; overlap and unknown labels are warned about."""
    written = make_folder(tmp_path / "data", {"red": 10, "green": 10, "blue": 10})
    home = ["--home", str(tmp_path / "home")]
    extract = ["--backbone", "tiny", *home]
    assert run_main(capsys, "extract", str(tmp_path / "data"), "--dataset", "colors", *extract, "--weights",
                    "random")[0] == 0
    assert run_main(capsys, "train", "--dataset", "colors", "--backbone", "tiny", "--name", "lr", *home)[0] == 0
    make_folder(tmp_path / "holdout", {"red": 4, "green": 4, "blue": 4, "purple": 2}, seed=5)
    for path in written[:10]:  # the red images the head learned from (most in its train split)
        (tmp_path / "holdout" / "red" / f"copy-{path.name}").write_bytes(path.read_bytes())
    (tmp_path / "holdout" / "blue" / "broken.jpg").write_bytes(b"\xff\xd8 cut")  # a failure: neither scored nor missing
    code, _, err = run_main(capsys, "evaluate", "lr", "--dataset", "holdout", *home)
    assert_one_line_error(code, err, "no dataset 'holdout'")
    assert run_main(capsys, "extract", str(tmp_path / "holdout"), "--dataset", "holdout", *extract, "--weights",
                    "random:7")[0] == 0  # other weights: not the head's features
    code, _, err = run_main(capsys, "evaluate", "lr", "--dataset", "holdout", *home)
    assert_one_line_error(code, err, "14 of the 24 labeled images of dataset 'holdout' (train/val/test) have no "
                                     "vectors of the features head 'lr' was trained on (tiny, weights random:0)")
    assert "--dataset holdout --backbone tiny --weights random" in err
    assert run_main(capsys, "extract", str(tmp_path / "holdout"), "--dataset", "holdout", *extract, "--weights",
                    "random")[0] == 0
    code, out, err = run_main(capsys, "evaluate", "lr", "--dataset", "holdout", "--json", *home)
    assert code == 0, err
    result = json.loads(out)
    m = result["metrics"]
    assert result["split"] == "all" and m["n"] == 24 and m["per_class"]["purple"]["recall"] == 0.0
    assert m["per_class"]["green"]["recall"] >= 0.75 and m["per_class"]["blue"]["recall"] >= 0.75
    warned = " | ".join(result["warnings"])
    assert "2 images have labels head 'lr' was not trained on (purple); they count as errors" in warned
    copies_seen = sum(1 for line in result["warnings"] if "also in the train or val split of 'colors'" in line)
    assert copies_seen == 1 and "the figures are optimistic" in warned
    code, out, err = run_main(capsys, "evaluate", "lr", "--dataset", "holdout", *home)
    assert "fewer than 5 images of 3 classes: blue (4), green (4), purple (2); their figures are noisy (add " \
           "images)" in err and "the all split" not in err
    code, out, err = run_main(capsys, "evaluate", "lr", "--dataset", "holdout", "--split", "test", *home)
    assert code == 0 and out.startswith("lr on holdout (test): accuracy ") and "the test split has fewer" in err
    code, out, _ = run_main(capsys, "evaluate", "lr", "--json", *home)  # its own dataset: test split, no overlap
    own = json.loads(out)  # (--json carries the small-split warning too)
    assert code == 0 and own["split"] == "test" and [w[:40] for w in own["warnings"]] == [
        "the test split has fewer than 5 images o"]
    make_folder(tmp_path / "inbox" / "x", {"red": 2}, seed=8)
    assert run_main(capsys, "extract", str(tmp_path / "inbox"), "--dataset", "inbox", "--unlabeled", *extract,
                    "--weights", "random")[0] == 0
    code, _, err = run_main(capsys, "evaluate", "lr", "--dataset", "inbox", *home)
    assert_one_line_error(code, err, "dataset 'inbox' has no labels: a head is scored on labeled images")
    assert "`headstart predict lr --dataset inbox` gives its predictions" in err
    code, _, err = run_main(capsys, "evaluate", "lr", "--split", "every", *home)
    assert_one_line_error(code, err, "split 'every': expected one of train, val, test or all")
