"""Augmented views in the cache (issue 11): deterministic, incremental, train images only, crash-safe, and never
seen by val or test metrics."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from classifiers.metrics import evaluate
from classifiers.persist import heads_dir, load
from classifiers.training import split_arrays, train_head
from extractor.augment import parse, view
from extractor.errors import HeadstartError
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import REPO, assert_one_line_error, make_folder, run_cli, run_main


def opts(data, **kw):
    return ExtractOptions(data_dir=data, **{"dataset": "d", "backbone": "tiny", "weights": "random", "workers": 0,
                                            "device": "cpu", **kw})


def views_of(store: FeatureStore, fp: str, recipe: str = "classic", count: int = 64) -> dict[tuple[str, int], bytes]:
    features, shas, index = store.views("d", fp, parse(recipe).text, count)
    return {(s, i): f.tobytes() for s, i, f in zip(shas, index, features, strict=True)}


def test_a_view_is_a_pure_function_of_content_recipe_and_index():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    classic = parse("classic")
    assert np.array_equal(view(image, classic, "a" * 64, 3), view(image, classic, "a" * 64, 3))
    assert not np.array_equal(view(image, classic, "a" * 64, 3), view(image, classic, "a" * 64, 4))
    assert not np.array_equal(view(image, classic, "a" * 64, 3), view(image, classic, "b" * 64, 3))
    assert not np.array_equal(view(image, classic, "a" * 64, 3), view(image, parse("crop"), "a" * 64, 3))
    assert parse("classic").text == parse("zoom=0.3,shift=0.2,flip,shear=11.5,rotate=50").text  # one cache


def test_views_are_bit_identical_across_processes_and_homes(tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 5})
    for home in ("one", "two"):  # two processes, two homes
        result = run_cli("extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights",
                         "random", "--augment", "classic", "--views", "3", "--device", "cpu", "--home",
                         str(tmp_path / home), "--json")
        assert result.returncode == 0, result.stderr
    fp = json.loads(result.stdout)["fingerprint"]
    one, two = views_of(FeatureStore(tmp_path / "one"), fp), views_of(FeatureStore(tmp_path / "two"), fp)
    assert len(one) == 18 and one == two


def test_incremental_views_and_images_and_train_split_only(tmp_path):
    make_folder(tmp_path / "data", {"a": 10, "b": 10})
    store = FeatureStore(tmp_path / "home")
    first = extract(opts(tmp_path / "data", augment="classic", views=2), store)
    assert first.views["computed"] == 2 * 12 and first.views["images"] == 12
    four = extract(opts(tmp_path / "data", augment="classic", views=4), store)
    assert four.views["computed"] == 2 * 12 and four.views["cached"] == 24 and four.extracted == 0
    before = views_of(store, first.fingerprint)
    make_folder(tmp_path / "data", {"a": 5, "b": 5}, seed=8, start=100)
    more = extract(opts(tmp_path / "data", augment="classic", views=4), store)
    train = {m[1] for m in store.catalog.members("d") if m[3] == "train"}
    after = views_of(store, first.fingerprint)
    assert more.views["computed"] == 4 * (len(train) - 12)  # only the new train images
    assert all(after[key] == value for key, value in before.items())  # nothing computed twice
    assert {sha for sha, _ in after} == train  # val and test images get no views
    again = extract(opts(tmp_path / "data", augment="classic", views=4), store)
    assert again.views["computed"] == 0 and again.extracted == 0


def test_heads_on_views_are_scored_on_clean_val_and_test_only(tmp_path):
    make_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 12})
    store = FeatureStore(tmp_path / "home")
    fp = extract(opts(tmp_path / "data", augment="crop", views=3), store).fingerprint
    for kind in ("logreg", "mlp", "centroid"):
        manifest = train_head(store, "d", "tiny", kind, kind, views=3)
        table = store.table("d", fp)
        data = split_arrays(table)
        assert manifest["views"]["rows"] == 3 * len(data["train"][0]) and manifest["views"]["per_image"] == 3
        head, _ = load(heads_dir(store), kind)
        for split in ("val", "test"):  # what a leak of views into val/test would change
            X, y = data[split]
            expected = evaluate(y, head.predict_proba(X), head.classes_)
            got = manifest["metrics"][split]
            assert got["n"] == len(X) and got["confusion_matrix"] == expected["confusion_matrix"]
            assert got["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-5)
    with pytest.raises(HeadstartError, match="lack some of views 0-5 .*--views 6"):
        train_head(store, "d", "tiny", "logreg", "x", views=6)
    with pytest.raises(HeadstartError, match="no tiny views of recipe 'classic'"):
        train_head(store, "d", "tiny", "logreg", "x", views=2, augment="classic")


KILLED = """
import sys
from pathlib import Path
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
extract(ExtractOptions(data_dir=Path(sys.argv[1]), dataset="d", backbone="vgg16", size=64, weights="random",
                       workers=0, device="cpu", batch_size=4, flush_seconds=0.05, augment="classic", views=8),
        FeatureStore(sys.argv[2]))
"""


def test_kill_9_during_views_then_rerun_gives_every_view_identical_to_a_clean_run(tmp_path):
    make_folder(tmp_path / "data", {"a": 8, "b": 8})
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "data"), str(home)], cwd=REPO,
                            env={**os.environ, "HEADSTART_OFFLINE": "1"})
    deadline, views = time.monotonic() + 240, 0
    while views < 8:  # some views committed, most still to come
        assert proc.poll() is None and time.monotonic() < deadline, "the extraction ended before it was killed"
        time.sleep(0.05)
        try:
            with sqlite3.connect(home / "catalog.sqlite") as con:
                views = con.execute("SELECT COUNT(*) FROM views").fetchone()[0]
        except sqlite3.OperationalError:
            views = 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = FeatureStore(home)
    resumed = extract(opts(tmp_path / "data", backbone="vgg16", size=64, batch_size=4, augment="classic", views=8),
                      store)
    clean = FeatureStore(tmp_path / "clean")
    fp = extract(opts(tmp_path / "data", backbone="vgg16", size=64, batch_size=4, augment="classic", views=8),
                 clean).fingerprint
    assert resumed.views["cached"] >= 8 and resumed.views["computed"] > 0  # the killed run left a part
    assert views_of(store, fp) == views_of(clean, fp) and len(views_of(clean, fp)) == 8 * 10


def test_bad_recipes_and_view_counts_are_one_line_errors(tmp_path, capsys):
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    base = ["extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights", "random",
            "--home", str(tmp_path / "home")]
    for extra, expected in ((["--augment", "twirl=3", "--views", "2"], "augment term 'twirl'"),
                            (["--augment", "rotate=500", "--views", "2"], "from 0 to 180"),
                            (["--augment", "classic", "--views", "65"], "from 0 to 64"),
                            (["--augment", "classic"], "views need both"),
                            (["--views", "3"], "views need both")):
        code, _, err = run_main(capsys, *base, *extra)
        assert_one_line_error(code, err, expected)
    for extra, expected in ((["--tta", "9"], "--tta 9: expected an integer from 1 to 8"),):
        code, _, err = run_main(capsys, "predict", "h", "x.jpg", *extra, "--home", str(tmp_path / "home"))
        assert code == 1 and ("no head" in err or expected in err)


def test_the_edge_filled_affine_agrees_with_torchvisions_wherever_no_fill_is_involved():
    import torch
    import torchvision.transforms.v2.functional as F
    from torchvision import tv_tensors

    from extractor.augment import _EdgeAffine

    image = tv_tensors.Image(torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator()
                                           .manual_seed(0)))
    affine = _EdgeAffine(rotate=12, shift=0.05, shear=5, zoom=0.1)
    for seed in range(5):
        torch.manual_seed(seed)
        p = affine.draw.make_params([image])
        torch.manual_seed(seed)
        ours = affine(image)
        theirs = F.affine(image, angle=p["angle"], translate=list(p["translate"]), scale=p["scale"],
                          shear=list(p["shear"]), interpolation=F.InterpolationMode.BILINEAR)
        inner = (slice(None), slice(24, 72), slice(24, 72))  # the centre never samples outside the image here
        assert torch.equal(ours[inner], theirs[inner])
    corner = affine(image)[:, 0, 0]
    assert corner.sum() > 0  # filled with the nearest edge pixel, never the black of a constant fill


def test_a_rerun_that_only_computes_views_does_not_say_nothing_to_compute(tmp_path, capsys):
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    base = ["extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny", "--weights", "random",
            "--workers", "0", "--home", str(tmp_path / "home")]
    assert run_main(capsys, *base)[0] == 0
    code, out, _ = run_main(capsys, *base, "--augment", "classic", "--views", "2")
    assert code == 0 and "nothing to compute" not in out and "all image vectors cached" in out, out
    assert "views (classic, 2 per train image): " in out and " 0 computed" not in out, out
    code, out, _ = run_main(capsys, *base, "--augment", "classic", "--views", "2")
    assert code == 0 and "nothing to compute" in out and " 0 computed" in out, out
