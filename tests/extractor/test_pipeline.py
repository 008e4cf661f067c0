"""Extraction end to end in-process: incremental, bad files, exactness against torchvision, export."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from extractor.decode import Limits, preprocess
from extractor.errors import HeadstartError
from extractor.export import export
from extractor.model import LoadedBackbone, resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import make_folder
from tests.extractor.test_decode import png_header_only


def opts(data, **kw) -> ExtractOptions:
    # CPU on every host: these tests compare vectors exactly; tests/test_devices.py covers CUDA.
    base = dict(data_dir=data, dataset="d", backbone="tiny", weights="random", workers=0, batch_size=4, device="cpu")
    return ExtractOptions(**{**base, **kw})


def test_incremental_only_new_images_are_computed(tmp_path):
    make_folder(tmp_path / "data", {"a": 4, "b": 4})
    store = FeatureStore(tmp_path / "home")
    first = extract(opts(tmp_path / "data"), store)
    assert (first.extracted, first.cached, first.failed) == (8, 0, 0)
    make_folder(tmp_path / "data", {"a": 2, "b": 1}, seed=5, start=100)
    second = extract(opts(tmp_path / "data"), store)
    assert (second.extracted, second.cached) == (3, 8)
    third = extract(opts(tmp_path / "data"), store)
    assert (third.extracted, third.cached, third.device) == (0, 11, "none")  # no model was even loaded


def test_progress_reports_hashing_then_extracting(tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 4})
    events = []
    extract(opts(tmp_path / "data"), FeatureStore(tmp_path / "home"), progress=events.append)
    phases = [e.phase for e in events]
    assert phases[0] == "hashing" and phases[-1] == "extracting"
    assert phases == sorted(phases, key=lambda p: p == "extracting")  # all hashing comes first
    last_hash = [e for e in events if e.phase == "hashing"][-1]
    assert (last_hash.done, last_hash.total) == (9, 9) and (events[-1].done, events[-1].total) == (9, 9)
    again = []
    extract(opts(tmp_path / "data"), FeatureStore(tmp_path / "home"), progress=again.append)
    assert again == []  # hashes known by size and mtime, vectors cached: nothing to report


def test_same_bytes_under_two_names_are_computed_once(tmp_path):
    written = make_folder(tmp_path / "data", {"a": 3})
    shutil.copy(written[0], tmp_path / "data" / "a" / "copy.jpg")
    summary = extract(opts(tmp_path / "data"), FeatureStore(tmp_path / "home"))
    assert (summary.files, summary.extracted, summary.duplicates) == (4, 3, 1)


def test_bad_files_are_recorded_and_the_job_goes_on(tmp_path):
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    good = (tmp_path / "data" / "a" / "a_0000.jpg").read_bytes()
    bad = {
        "a/truncated.jpg": (good[: len(good) // 2], "corrupt or truncated JPEG"),
        "a/zero.png": (b"", "empty file"),
        "b/text.jpg": (b"just some text, not pixels", "not a supported image"),
        "b/bomb.png": (png_header_only(50000, 50000), "decompression bomb"),
    }
    for rel, (data, _) in bad.items():
        (tmp_path / "data" / rel).write_bytes(data)
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "data", workers=1), store)
    assert (summary.extracted, summary.failed, summary.files) == (6, 4, 10)
    reasons = dict(summary.failures)
    for rel, (_, expected) in bad.items():
        assert expected in reasons[rel], (rel, reasons[rel])
    assert dict(store.catalog.failures("d")) == reasons
    (listed,) = store.overview()
    assert sum(listed["splits"].values()) == 6 and listed["failed"] == 4  # split counts are usable images
    rerun = extract(opts(tmp_path / "data"), store)  # known-bad content is not decoded again
    assert (rerun.extracted, rerun.cached, rerun.failed, rerun.device) == (0, 6, 4, "none")


def test_vectors_equal_a_direct_torchvision_forward(tmp_path):
    written = make_folder(tmp_path / "data", {"a": 2, "b": 1}, size=(200, 150))
    store = FeatureStore(tmp_path / "home")
    extract(opts(tmp_path / "data", backbone="vgg16", batch_size=2), store)
    resolved = resolve("vgg16", "random")
    ours = LoadedBackbone(resolved, "cpu").setup()
    direct = torchvision.models.vgg16(weights=None).eval()
    trunk = {k: v.contiguous() for k, v in ours.model.state_dict().items()}
    direct.load_state_dict(trunk, strict=False)
    shas = [store.catalog.members("d")[i][1] for i in range(3)]
    cached = store.read(resolved.fingerprint.id, shas, resolved.fingerprint.dim)
    for row, path in enumerate(sorted(written, key=lambda p: p.relative_to(tmp_path / "data").as_posix())):
        pixels = preprocess(path.read_bytes(), 150, Limits())
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0).contiguous()
        x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        with torch.no_grad():
            expected = direct.features(x).flatten(1)[0].numpy()
        np.testing.assert_allclose(cached[row], expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def test_float16_storage(tmp_path):
    make_folder(tmp_path / "data", {"a": 3})
    s32, s16 = FeatureStore(tmp_path / "h32"), FeatureStore(tmp_path / "h16")
    fp = extract(opts(tmp_path / "data"), s32).fingerprint
    extract(opts(tmp_path / "data", dtype="float16"), s16)
    with h5py.File(next((s16.home / "features" / fp).glob("*.h5"))) as fh:
        assert fh["features"].dtype == np.float16
    a, b = s32.table("d", fp).features, s16.table("d", fp).features
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-3)


def test_export_round_trip_through_plain_h5py(tmp_path, monkeypatch):
    import extractor.export

    monkeypatch.setattr(extractor.export, "CHUNK_ROWS", 2)  # several blocks, the last one partial
    make_folder(tmp_path / "data", {"cat": 3, "dog": 2})
    (tmp_path / "data" / "dog" / "broken.jpg").write_bytes(b"nope")
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "data"), store)
    result = export(store, "d", summary.fingerprint, tmp_path / "out" / "d.h5")
    assert result["rows"] == 5
    with h5py.File(tmp_path / "out" / "d.h5", "r") as fh:
        assert fh["features"].shape == (5, 64) and fh["features"].dtype == np.float32
        names = [n.decode() for n in fh["label_names"][()]]
        assert names == ["cat", "dog"]
        labels, paths = fh["labels"][()], [p.decode() for p in fh["paths"][()]]
        assert [names[i] for i in labels] == [p.split("/")[0] for p in paths]
        assert set(s.decode() for s in fh["split"][()]) <= {"train", "val", "test"}
        assert len(fh["sha256"][0]) == 64
        assert fh.attrs["fingerprint_id"] == summary.fingerprint and fh.attrs["failed"] == 1
        assert '"backbone": "tiny"' in fh.attrs["fingerprint"]
        expected = store.table("d", summary.fingerprint).features
        np.testing.assert_array_equal(fh["features"][()], expected)


def test_export_to_npz_and_csv_by_suffix_with_the_same_content(tmp_path, monkeypatch, capsys):
    """Before: the file was HDF5 whatever its name, so `--out features.csv` gave an HDF5 file named .csv."""
    import csv

    import extractor.export
    from tests.conftest import assert_one_line_error, run_main

    monkeypatch.setattr(extractor.export, "CHUNK_ROWS", 2)  # several blocks, the last one partial
    make_folder(tmp_path / "data", {"cat": 3, "dog": 2})
    make_folder(tmp_path / "more", {"cat": 1}, seed=5)
    next((tmp_path / "more" / "cat").iterdir()).rename(tmp_path / "data" / "cat" / 'with, "quotes".jpg')
    store = FeatureStore(tmp_path / "home")
    fp = extract(opts(tmp_path / "data", augment="flip", views=1), store).fingerprint
    export(store, "d", fp, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "r") as fh:
        reference = {k: fh[k][()] for k in ("features", "labels", "paths", "split")}
        view_rows = fh["views"]["features"].shape[0]
        assert view_rows > 0
    result = export(store, "d", fp, tmp_path / "d.npz")
    assert (result["format"], result["rows"], result["views"]) == ("npz", 6, view_rows)
    with np.load(tmp_path / "d.npz") as npz:  # allow_pickle is False: every array is plain
        np.testing.assert_array_equal(npz["features"], reference["features"])
        np.testing.assert_array_equal(npz["labels"], reference["labels"])
        assert list(npz["paths"]) == [p.decode() for p in reference["paths"]]
        assert list(npz["split"]) == [s.decode() for s in reference["split"]]
        assert npz["views_features"].shape == (view_rows, 64) and str(npz["fingerprint_id"]) == fp
    code, _, err = run_main(capsys, "export", "--dataset", "d", "--backbone", "tiny", "--out", str(tmp_path / "d.csv"),
                            "--home", str(tmp_path / "home"))
    assert code == 0 and f"warning: the {view_rows} cached augmented views are not written to a CSV" in err
    with open(tmp_path / "d.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][:5] == ["path", "label", "split", "sha256", "f0"] and len(table[0]) == 4 + 64
    assert [row[0] for row in table[1:]] == [p.decode() for p in reference["paths"]]
    assert 'cat/with, "quotes".jpg' in [row[0] for row in table[1:]]
    assert [row[1] for row in table[1:]] == [p.decode().split("/")[0] for p in reference["paths"]]
    np.testing.assert_array_equal(np.array([row[4:] for row in table[1:]], np.float32), reference["features"])
    code, _, err = run_main(capsys, "export", "--dataset", "d", "--backbone", "tiny", "--out",
                            str(tmp_path / "d.parquet"), "--home", str(tmp_path / "home"))
    assert_one_line_error(code, err, "expected a file name ending .h5 (HDF5), .npz (NumPy) or .csv, not .parquet")
    assert not (tmp_path / "d.parquet").exists()



def test_export_refuses_a_folder_or_an_unwritable_path_in_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    """Before: --out FOLDER wrote FOLDER.tmp beside it and said 'Is a directory: FOLDER.tmp'; an unwritable path gave
    h5py's own message; a write that failed midway left OUT.tmp behind."""
    from tests.conftest import assert_one_line_error, run_main

    make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    store = FeatureStore(tmp_path / "home")
    fp = extract(opts(tmp_path / "data"), store).fingerprint
    (tmp_path / "folder").mkdir()
    base = ["export", "--dataset", "d", "--backbone", "tiny", "--home", str(tmp_path / "home"), "--out"]
    code, _, err = run_main(capsys, *base, str(tmp_path / "folder"))
    assert_one_line_error(code, err, f"--out {tmp_path / 'folder'} is a folder; give a file path, e.g. ")
    assert not (tmp_path / "folder.tmp").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_main(capsys, *base, str(blocker / "sub" / "x.h5"))  # a parent that is a file
    assert_one_line_error(code, err, f"cannot write {blocker / 'sub' / 'x.h5'}: ")
    assert "choose another --out" in err

    import extractor.export

    def full(*_args, **_kw):  # the file written whole, then its fsync finds the disk full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(extractor.export, "publish", full)
    with pytest.raises(HeadstartError, match="cannot write .*d.h5: No space left on device; choose another --out"):
        export(store, "d", fp, tmp_path / "out" / "d.h5")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no d.h5, no d.h5.tmp

def test_changed_file_between_hash_and_decode_is_not_cached_under_the_old_key(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", {"a": 2})
    target = tmp_path / "data" / "a" / "a_0000.jpg"
    import extractor.decode as decode

    real = decode.read_file

    def swapped(path, limits, *rest):  # the file is rewritten after it was hashed, just before it is read
        if path == target and not getattr(swapped, "done", False):
            swapped.done = True
            Image.new("RGB", (10, 10), (1, 2, 3)).save(path, "PNG")
            os.utime(path, ns=(1, 1))  # another mtime, whatever the filesystem's clock resolution
        return real(path, limits, *rest)

    monkeypatch.setattr(decode, "read_file", swapped)
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "data", workers=1), store)
    assert summary.extracted == 1 and "changed since it was hashed" in dict(summary.failures)["a/a_0000.jpg"]
    assert store.catalog.bad_content(Limits().signature()) == {}  # the bytes on disk may be fine: retried
    monkeypatch.setattr(decode, "read_file", real)
    assert extract(opts(tmp_path / "data"), store).extracted == 1


def test_content_refused_by_one_decoder_is_tried_again_by_another(tmp_path, monkeypatch):
    """Content that failed to decode is remembered and not read again, but before, for good: a file a later Pillow
    (or headstart) reads, or refuses for another reason, kept the old verdict and its old words."""
    import extractor.formats as formats

    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    target = tmp_path / "data" / "a" / "a_0000.jpg"
    target.write_bytes(target.read_bytes()[:40])  # cut short
    store = FeatureStore(tmp_path / "home")
    monkeypatch.setattr(formats, "_signed_format", lambda data: None)  # an older decoder's verdict
    old = dict(extract(opts(tmp_path / "data"), store).failures)["a/a_0000.jpg"]
    assert old.startswith("not a supported image")
    monkeypatch.undo()
    assert dict(extract(opts(tmp_path / "data"), store).failures)["a/a_0000.jpg"] == old  # remembered: not read
    monkeypatch.setattr(formats, "DECODE_RULES", formats.DECODE_RULES + 1)
    new = dict(extract(opts(tmp_path / "data"), store).failures)["a/a_0000.jpg"]
    assert new.startswith("corrupt or truncated JPEG image")
    monkeypatch.setattr(formats.PIL, "__version__", "0.0-other")
    assert dict(extract(opts(tmp_path / "data"), store).failures)["a/a_0000.jpg"] == new  # read again, same verdict
    assert len(store.catalog.bad_content(Limits().signature())) == 1


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(dtype="int8"), dict(dataset="../x")])
def test_bad_options_are_clear_errors(tmp_path, bad):
    from extractor.errors import HeadstartError

    with pytest.raises(HeadstartError):
        extract(opts(tmp_path, **bad), FeatureStore(tmp_path / "home"))


def test_the_collector_skips_older_objects_during_a_run_and_gets_them_back(tmp_path):
    import gc

    from extractor.errors import HeadstartError

    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    older = len(gc.get_objects())
    seen = []
    extract(opts(tmp_path / "data", batch_size=2), FeatureStore(tmp_path / "home"),
            progress=lambda p: seen.append(gc.get_freeze_count()))
    # what lived before the run is out of the collector's passes (less the few freed meanwhile)
    assert seen and min(seen) >= 0.9 * older
    assert gc.get_freeze_count() == 0  # and back in them after it
    with pytest.raises(HeadstartError):
        extract(opts(tmp_path / "nowhere"), FeatureStore(tmp_path / "home"))
    assert gc.get_freeze_count() == 0  # also after a failed run


def test_decode_workers_are_started_before_the_model_loads(tmp_path, monkeypatch):
    import multiprocessing

    from extractor.errors import HeadstartError
    from extractor.model import LoadedBackbone

    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    children = []
    real = LoadedBackbone.setup

    def setup(self):
        children.append(len(multiprocessing.active_children()))
        return real(self)

    monkeypatch.setattr(LoadedBackbone, "setup", setup)
    summary = extract(opts(tmp_path / "data", workers=2), FeatureStore(tmp_path / "home"))
    assert summary.extracted == 6 and children == [2]  # both forked, decoding while the weights load

    def failing(self):
        raise HeadstartError("no weights here")

    monkeypatch.setattr(LoadedBackbone, "setup", failing)
    make_folder(tmp_path / "more", {"a": 2, "b": 2})
    try:
        extract(opts(tmp_path / "more", workers=2), FeatureStore(tmp_path / "home2"))
    except HeadstartError as exc:  # while the error (and its traceback) is held, as a job's handler holds it
        assert "no weights" in str(exc)
        assert multiprocessing.active_children() == []  # a model that fails to load stops them at once
    else:
        pytest.fail("the failing model load was not an error")
