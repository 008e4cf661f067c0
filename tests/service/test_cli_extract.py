"""The CLI as a user runs it: extract --json keys, datasets, export, backbones, one-line errors."""

from __future__ import annotations

import json

import h5py

from tests.conftest import assert_one_line_error, make_folder, run_cli, run_main


def test_extract_datasets_export_through_the_cli(tmp_path):
    make_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    home = str(tmp_path / "home")
    result = run_cli("extract", str(tmp_path / "data"), "--dataset", "pets", "--backbone", "tiny",
                     "--weights", "random", "--split", "0.5,0.25,0.25", "--seed", "1", "--json", "--home", home)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("extracted", "cached", "failed", "seconds", "images_per_second"):
        assert key in summary
    assert summary["extracted"] == 6 and summary["failed"] == 0
    listing = json.loads(run_cli("datasets", "--json", "--home", home).stdout)
    assert listing[0]["name"] == "pets" and sum(listing[0]["splits"].values()) == 6
    assert listing[0]["features"][0]["backbone"] == "tiny" and listing[0]["features"][0]["vectors"] == 6
    out = tmp_path / "pets.h5"
    exported = run_cli("export", "--dataset", "pets", "--backbone", "tiny", "--out", str(out), "--home", home)
    assert exported.returncode == 0, exported.stderr
    with h5py.File(out) as fh:
        assert fh["features"].shape == (6, 64)
    text = run_cli("datasets", "--home", home).stdout
    header, row = text.splitlines()
    assert row.startswith("pets ") and header.index("FEATURES") == row.index("tiny@32[random:0]=6")  # aligned columns


def test_errors_are_one_line_with_non_zero_exit(tmp_path, capsys):
    home = str(tmp_path / "home")
    make_folder(tmp_path / "data", {"a": 1})
    cases = [
        (["extract", str(tmp_path / "missing"), "--dataset", "x", "--weights", "random", "--backbone", "tiny"],
         "does not exist"),
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--backbone", "resnet50"], "headstart weights fetch"),
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--backbone", "vgg99"], "did you mean vgg19"),
        (["export", "--dataset", "nope", "--backbone", "vgg16", "--out", str(tmp_path / "o.h5")], "no dataset"),
        (["weights", "fetch", "tiny"], "no ImageNet weights"),
        (["extract", str(tmp_path / "empty"), "--dataset", "x", "--weights", "random", "--backbone", "tiny"],
         "no images found in"),
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--weights", "random", "--backbone", "tiny",
          "--device", "gpu"], "device 'gpu': expected auto, cpu, cuda"),
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--weights", "random", "--backbone", "tiny",
          "--amp", "fp8"], "amp 'fp8': expected one of"),
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--weights", "random", "--size", "100000"],
         "input size 100000 is not valid for vgg16: expected an integer from 32 to 1024"),  # was a killed worker
        (["extract", str(tmp_path / "data"), "--dataset", "x", "--weights", "random", "--backbone", "tiny",
          "--workers", "100000"], "--workers 100000: expected an integer from 0"),  # was 100000 forked processes
    ]
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    for args, expected in cases:
        code, _, err = run_main(capsys, *args, "--home", home)
        assert_one_line_error(code, err, expected)
    listing = json.loads(run_cli("datasets", "--json", "--home", home).stdout)
    assert str(tmp_path / "empty") not in {d["root"] for d in listing}  # an empty folder registers nothing
    result = run_cli("extract", str(tmp_path / "data"), "--dataset", "x", "--backbone", "resnet50", "--home", home)
    assert result.returncode == 1 and result.stderr.startswith("headstart: error: ImageNet weights for resnet50")
    make_folder(tmp_path / "three", {"a": 2, "b": 1})  # three batches of one: three workers on this machine's cores
    result = run_cli("extract", str(tmp_path / "three"), "--dataset", "t", "--backbone", "tiny", "--weights",
                     "random", "--batch-size", "1", "--workers", "3", "--home", home)
    assert result.returncode == 0 and result.stderr == ""  # not torch's warning about more workers than cores


def test_backbones_listing(capsys):
    rows = json.loads(run_main(capsys, "backbones", "--json")[1])
    assert {r["name"]: r["dim"] for r in rows}["vgg16"] == 8192


def test_progress_bar_names_the_phase_and_its_unit():
    import io

    from extractor.pipeline import Progress
    from service.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = ProgressBar("pets/vgg16", stream=out)
    bar(Progress(3, 9, 0, 1.0, phase="hashing"))
    assert "pets/vgg16 hashing" in out.getvalue() and "3/9" in out.getvalue() and "files" in out.getvalue()
    bar(Progress(5, 20, 1, 2.0, phase="views"))
    bar.close()
    text = out.getvalue()
    assert "pets/vgg16 views" in text and "5/20" in text and "failed=1" in text
    quiet = io.StringIO()  # not a terminal: nothing drawn
    ProgressBar("x", stream=quiet)(Progress(1, 2, 0, 1.0))
    assert quiet.getvalue() == ""
    bar(Progress(9, 9, 1, 3.0))
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "extracting" in last and "9/9" in last and "img/s" in last and "failed=1" in last and last.endswith("\n")
    quiet = io.StringIO()  # not a terminal: nothing drawn
    ProgressBar("x", stream=quiet)(Progress(1, 2, 0, 1.0))
    assert quiet.getvalue() == ""
