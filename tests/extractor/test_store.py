"""FeatureStore: one writer per fingerprint, readers never blocked, crash leftovers cleaned, kill -9 safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from extractor.backbones import get_spec, make_fingerprint
from extractor.errors import Conflict
from extractor.export import export
from extractor.model import resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from tests.conftest import REPO, make_folder, run_cli


def fake_fp():
    return make_fingerprint(get_spec("tiny"), 32, "random:seed=0:init=test")


def test_second_writer_gets_a_clear_error_and_readers_still_read(tmp_path):
    store = FeatureStore(tmp_path)
    fp = fake_fp()
    vectors = np.arange(4 * 64, dtype=np.float32).reshape(4, 64)
    with store.writer(fp, shard_rows=2) as writer:
        writer.add(["a" * 64, "b" * 64, "c" * 64], vectors[:3])  # one shard of 2 rows written
        with pytest.raises(Conflict, match=f"already writing {fp.id} features \\(pid {os.getpid()}"):
            with store.writer(fp):
                pass
        reader = FeatureStore(tmp_path)  # a reader during the write sees the committed shard
        np.testing.assert_array_equal(reader.read(fp.id, ["b" * 64, "a" * 64], 64), vectors[[1, 0]])
    np.testing.assert_array_equal(store.read(fp.id, ["c" * 64], 64), vectors[[2]])
    with store.writer(fp):  # the lock is released afterwards
        pass


def test_crash_leftovers_are_removed_by_the_next_writer(tmp_path):
    store = FeatureStore(tmp_path)
    fp = fake_fp()
    with store.writer(fp) as writer:
        writer.add(["a" * 64], np.ones((1, 64), np.float32))
    folder = store.shard_dir(fp.id)
    (folder / "123-abc.h5.tmp").write_bytes(b"half written")
    with h5py.File(folder / "999-orphan.h5", "w") as fh:  # renamed but never committed
        fh["features"] = np.zeros((1, 64), np.float32)
    with store.writer(fp):
        pass
    assert sorted(p.suffix for p in folder.iterdir() if p.name != "writer.lock") == [".h5"]
    assert store.read(fp.id, ["a" * 64], 64).sum() == 64


def test_cli_second_writer_fails_in_one_line_while_first_runs(tmp_path):
    make_folder(tmp_path / "data", {"a": 200}, size=(32, 32), fmt="PNG")
    home = tmp_path / "home"
    with FeatureStore(home).writer(resolve("tiny", "random").fingerprint):
        result = run_cli("extract", str(tmp_path / "data"), "--dataset", "d", "--backbone", "tiny",
                         "--weights", "random", "--home", str(home))
        listing = run_cli("datasets", "--home", str(home), "--json")  # readers are never blocked
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "already writing" in result.stderr and "Traceback" not in result.stderr
    assert listing.returncode == 0 and json.loads(listing.stdout) == []  # a failed first run registers nothing


@pytest.mark.slow
def test_kill_9_at_many_moments_never_corrupts_and_rerun_matches(tmp_path):
    data = tmp_path / "data"
    make_folder(data, {"a": 300, "b": 300}, size=(48, 48), fmt="PNG")
    args = ["extract", str(data), "--dataset", "d", "--backbone", "tiny", "--weights", "random",
            "--batch-size", "4", "--workers", "0", "--shard-rows", "8", "--device", "cpu", "--json"]
    reference = FeatureStore(tmp_path / "ref")
    ref = extract(ExtractOptions(data_dir=data, dataset="d", backbone="tiny", weights="random", workers=0,
                                 device="cpu"), reference)
    crashed = tmp_path / "crashed"
    shard_dir = FeatureStore(crashed).shard_dir(ref.fingerprint)
    kills = 0
    # Kill during start-up, right when a shard's temp file exists, and after 1, 4, 10, 2 new shards.
    for trigger in ("startup", "tmp", 1, 4, 10, 2):
        before_files = len(list(shard_dir.glob("*.h5"))) if shard_dir.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "service", *args, "--home", str(crashed)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if trigger == "startup":
                time.sleep(0.5)
                break
            files = list(shard_dir.glob("*")) if shard_dir.exists() else []
            if trigger == "tmp" and any(f.name.endswith(".tmp") for f in files):
                break
            if isinstance(trigger, int) and sum(f.suffix == ".h5" for f in files) >= before_files + trigger:
                break
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        store = FeatureStore(crashed)  # the cache opens and every committed vector reads
        if store.catalog.dataset("d") and store.catalog.fingerprint(ref.fingerprint):
            assert np.isfinite(store.table("d", ref.fingerprint).features).all()
    assert kills == 6, "an extraction finished before it could be killed"
    before = FeatureStore(crashed).table("d", ref.fingerprint).features.shape[0]
    assert 0 < before < 600  # committed work survived the kills, and work was left to do
    done = run_cli(*args, "--home", str(crashed))
    summary = json.loads(done.stdout)
    assert summary["extracted"] + summary["cached"] == 600 and summary["cached"] == before  # nothing twice
    a = export(reference, "d", ref.fingerprint, tmp_path / "a.h5")
    b = export(FeatureStore(crashed), "d", ref.fingerprint, tmp_path / "b.h5")
    with h5py.File(a["out"]) as fa, h5py.File(b["out"]) as fb:
        assert [p for p in fa["paths"]] == [p for p in fb["paths"]]
        assert [s for s in fa["split"]] == [s for s in fb["split"]]
        np.testing.assert_allclose(fa["features"][()], fb["features"][()], rtol=1e-5, atol=1e-6)
    with FeatureStore(crashed).catalog.connect() as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        shard_rows = con.execute("SELECT SUM(rows) FROM shards").fetchone()[0]
    assert shard_rows == 600  # no shard holds a vector computed twice


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batches_of_any_size_split_into_full_shards_row_for_row(tmp_path, dtype):
    store = FeatureStore(tmp_path)
    fp = fake_fp()
    rng = np.random.default_rng(0)
    sizes = [2, 5, 1, 0, 4, 3]  # batches straddle the 3-row shard boundary, an empty one too
    vectors = rng.normal(size=(sum(sizes), 64)).astype(np.float32)
    shas = [f"{i:064x}" for i in range(len(vectors))]
    with store.writer(fp, dtype=dtype, shard_rows=3, flush_seconds=3600) as writer:
        start = 0
        for n in sizes:
            writer.add(shas[start:start + n], vectors[start:start + n])
            start += n
    with store.catalog.connect() as con:
        rows = sorted(r for (r,) in con.execute("SELECT rows FROM shards"))
    assert rows == [3, 3, 3, 3, 3] and writer.written == 15
    np.testing.assert_allclose(store.read(fp.id, shas[::-1], 64), vectors[::-1], rtol=1e-3 if dtype == "float16"
                               else 0)
