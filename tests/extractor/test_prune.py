"""Forgetting a dataset and freeing the cache: `datasets rm` keeps the vectors (by content: another dataset or a
re-extract uses them), `prune` deletes the shards no dataset needs, whole, under each fingerprint's writer lock."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from classifiers.review import scored_split
from extractor.errors import NotFound
from extractor.store import FeatureStore
from tests.conftest import REPO, assert_one_line_error, make_folder, run_main


def shard_files(home) -> set[str]:
    return {p.name for p in (home / "features").rglob("*.h5")}


def test_rm_keeps_vectors_prune_frees_whole_unused_shards_views_too(tmp_path, capsys):
    home = tmp_path / "home"
    h = ["--home", str(home)]
    make_folder(tmp_path / "a", {"x": 4, "y": 4})
    shutil.copytree(tmp_path / "a" / "x", tmp_path / "b" / "x")  # b shares a's x images
    make_folder(tmp_path / "b", {"z": 3}, seed=7)
    make_folder(tmp_path / "c", {"v": 5, "w": 5}, seed=11)
    tiny = ["--backbone", "tiny", "--weights", "random"]
    for name, more in (("a", []), ("b", []), ("c", ["--augment", "flip", "--views", "1"])):
        assert run_main(capsys, "extract", str(tmp_path / name), "--dataset", name, *tiny, *more, *h)[0] == 0
    assert run_main(capsys, "train", "--dataset", "a", "--name", "ha", *h)[0] == 0
    store = FeatureStore(home)
    files = {s["file"]: s for s in store.catalog.shards()}
    before = shard_files(home)
    code, out, err = run_main(capsys, "datasets", "rm", "a", "--json", *h)
    assert code == 0, err
    assert json.loads(out) == {"deleted": "a", "vectors_only_its": 4, "heads": ["ha"]}  # x is b's too
    assert shard_files(home) == before  # nothing deleted yet
    code, out, _ = run_main(capsys, "extract", str(tmp_path / "a"), "--dataset", "a", *tiny, *h)
    assert code == 0 and "nothing to compute" in out  # found again by content
    assert run_main(capsys, "datasets", "rm", "a", *h)[0] == 0
    code, out, _ = run_main(capsys, "prune", "--dry-run", "--json", *h)
    dry = json.loads(out)  # a's shard holds x, which b needs: kept whole, its y counted; a's 8 file hashes
    assert code == 0 and (dry["shards"], dry["vectors"], dry["unused_rows_kept"], dry["file_hashes"]) == \
        (0, 0, 4, 8), dry
    c_shas = {sha for _, sha, _, _ in store.catalog.members("c")}
    c_files = {f for f, s in files.items() if {sha for sha, *_ in store.catalog.shard_vectors(s["id"])} <= c_shas}
    assert run_main(capsys, "datasets", "rm", "c", *h)[0] == 0
    c_rows = sum(files[f]["rows"] for f in c_files)
    code, out, _ = run_main(capsys, "prune", *h)  # c's clean shard and its views' shard
    assert code == 0 and out.startswith(f"deleted 2 shard files ({c_rows} vectors,") and \
        "4 vectors no dataset needs stay, in shards that also hold vectors a dataset needs" in out, out
    assert len(c_files) == 2 and shard_files(home) == before - {f.rsplit("/", 1)[-1] for f in c_files}
    assert run_main(capsys, "train", "--dataset", "b", "--name", "hb", *h)[0] == 0  # b's vectors all there
    code, out, _ = run_main(capsys, "datasets", "rm", "b", "--prune", *h)
    assert code == 0 and "deleted 2 shard files (11 vectors" in out, out
    assert shard_files(home) == set() and not store.catalog.dataset_names()
    with store.catalog.connect() as con:  # no dataset left: no file hash is remembered either
        assert con.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    code, out, _ = run_main(capsys, "verify", *h)
    assert code == 0 and "no problems found" in out
    code, _, err = run_main(capsys, "datasets", "rm", "b", *h)
    assert code == 1 and "no dataset 'b'" in err
    code, _, err = run_main(capsys, "evaluate", "hb", *h)  # was: "the test split of 'b' has no labeled images"
    assert_one_line_error(code, err, "head 'hb' was trained on dataset 'b', which this home does not hold")
    with pytest.raises(NotFound, match="which this home does not hold"):  # the mistakes and ROC views: the same
        scored_split(store, "hb")
    assert run_main(capsys, "extract", str(tmp_path / "b"), "--dataset", "b", "--backbone", "tiny", "--weights",
                    "random:1", *h)[0] == 0  # b again, with other features
    code, _, err = run_main(capsys, "evaluate", "hb", *h)
    assert_one_line_error(code, err, "dataset 'b' has no vectors of the features head 'hb' was trained on (tiny, "
                                     "weights random:0); run `headstart extract DIR --dataset b --backbone tiny "
                                     "--weights random:0` first")


def test_prune_skips_a_fingerprint_being_written(tmp_path, capsys):
    make_folder(tmp_path / "a", {"x": 2, "y": 2})
    h = ["--home", str(tmp_path / "home")]
    assert run_main(capsys, "extract", str(tmp_path / "a"), "--dataset", "a", "--backbone", "tiny", "--weights",
                    "random", *h)[0] == 0
    assert run_main(capsys, "datasets", "rm", "a", *h)[0] == 0
    store = FeatureStore(tmp_path / "home")
    fp = next(iter({s["fingerprint"] for s in store.catalog.shards()}))
    lock = store.writer_lock(fp).acquire()
    try:
        code, out, _ = run_main(capsys, "prune", *h)
        assert code == 1 and f"skipped {fp}: an extraction is writing it; run prune again after it" in out
        assert shard_files(tmp_path / "home")
    finally:
        lock.release()
    assert run_main(capsys, "prune", *h)[0] == 0 and shard_files(tmp_path / "home") == set()


def test_rm_is_refused_while_the_dataset_is_being_extracted_in_this_process(tmp_path):
    from extractor.errors import Conflict, NotFound
    from extractor.pipeline import ExtractOptions, extract
    from extractor.prune import forget_dataset

    make_folder(tmp_path / "a", {"x": 3, "y": 3})
    store = FeatureStore(tmp_path / "home")
    refused = []

    def progress(_event) -> None:  # an rm arriving in the middle of the run (as from a request thread)
        try:
            forget_dataset(store, "a")
        except Conflict as exc:
            refused.append(str(exc))
        except NotFound:  # while the files are hashed it is not registered yet
            pass

    summary = extract(ExtractOptions(data_dir=tmp_path / "a", dataset="a", backbone="tiny", weights="random",
                                     workers=0, batch_size=2, device="cpu"), store, progress=progress)
    assert summary.extracted == 6 and store.catalog.dataset("a") is not None
    assert refused and refused[0].startswith("dataset 'a' is being extracted (this process")
    assert forget_dataset(store, "a")["deleted"] == "a"  # the run over, rm goes through


def test_rm_is_refused_while_another_process_extracts_it(tmp_path, capsys):
    make_folder(tmp_path / "a", {"x": 2, "y": 2})
    h = ["--home", str(tmp_path / "home")]
    assert run_main(capsys, "extract", str(tmp_path / "a"), "--dataset", "a", "--backbone", "tiny", "--weights",
                    "random", *h)[0] == 0
    lock = FeatureStore(tmp_path / "home").dataset_lock("a").path
    holder = subprocess.Popen(  # holds the lock shared, as a running extraction does
        [sys.executable, "-c", "import sys; from extractor.locks import SharedLock\n"
         f"with SharedLock({str(lock)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, _, err = run_main(capsys, "datasets", "rm", "a", *h)
        assert_one_line_error(code, err, "dataset 'a' is being extracted (another process")
        assert FeatureStore(tmp_path / "home").catalog.dataset("a") is not None
    finally:
        holder.communicate("")
    assert run_main(capsys, "datasets", "rm", "a", *h)[0] == 0
