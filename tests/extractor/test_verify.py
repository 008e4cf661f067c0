"""Shard files that vanish or break: one clear line when needed, healed by the next extract, `verify --repair`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from extractor.errors import CacheDamaged
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from extractor.verify import verify
from tests.conftest import assert_one_line_error, make_folder, run_main


def opts(data, **kw):
    return ExtractOptions(data_dir=data, **{"dataset": "fm", "backbone": "tiny", "weights": "random", "workers": 0,
                                            "shard_rows": 8, **kw})


@pytest.fixture
def extracted(tmp_path):
    make_folder(tmp_path / "data", {"a": 10, "b": 10})
    store = FeatureStore(tmp_path / "home")
    summary = extract(opts(tmp_path / "data"), store)
    reference = store.table("fm", summary.fingerprint)
    return store, summary.fingerprint, reference


def test_deleted_shard_folder_is_one_line_then_healed_by_the_next_extract(tmp_path, extracted, capsys):
    store, fp, reference = extracted
    shutil.rmtree(store.shard_dir(fp))
    with pytest.raises(CacheDamaged, match="missing.*headstart extract"):
        store.table("fm", fp)
    code, _, err = run_main(capsys, "train", "--dataset", "fm", "--backbone", "tiny", "--name", "h",
                            "--home", str(store.home))
    assert_one_line_error(code, err, "which is missing")
    summary = extract(opts(tmp_path / "data"), store)
    assert summary.repaired == 20 and summary.extracted == 20 and summary.cached == 0
    assert any("missing or damaged" in w for w in summary.warnings)
    healed = store.table("fm", fp)
    assert healed.sha256 == reference.sha256 and np.array_equal(healed.features, reference.features)


def test_a_truncated_shard_is_found_by_its_size(tmp_path, extracted):
    store, fp, reference = extracted
    victim = sorted(store.shard_dir(fp).glob("*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    summary = extract(opts(tmp_path / "data"), store)
    assert summary.repaired == 8 and summary.extracted == 8
    assert np.array_equal(store.table("fm", fp).features, reference.features)


def test_verify_reads_every_shard_and_repairs(tmp_path, extracted):
    store, fp, reference = extracted
    shards = sorted(store.shard_dir(fp).glob("*.h5"))
    data = bytearray(shards[1].read_bytes())  # same size, other contents: only a full read finds it
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    shards[1].write_bytes(bytes(data))
    (store.shard_dir(fp) / "123-abc.h5").write_bytes(b"a renamed shard never committed")
    (store.shard_dir(fp) / "456-def.h5.tmp").write_bytes(b"half written")
    assert verify(FeatureStore(tmp_path / "clean-home"))["damaged"] == []
    report = verify(store)
    assert report["shards"] == 3 and report["vectors"] == 20 and not report["repaired"]
    assert [d["file"] for d in report["damaged"]] == [str(shards[1].relative_to(store.home))]
    assert sorted(report["leftovers"]) == [f"features/{fp}/123-abc.h5", f"features/{fp}/456-def.h5.tmp"]
    fixed = verify(store, repair=True)
    assert fixed["repaired"] and fixed["dropped_vectors"] == 8
    assert sorted(p.name for p in store.shard_dir(fp).iterdir()) == sorted([shards[0].name, shards[2].name,
                                                                          "writer.lock"])
    assert verify(store) == {**verify(store), "damaged": [], "leftovers": []}
    assert extract(opts(tmp_path / "data"), store).extracted == 8
    assert np.array_equal(store.table("fm", fp).features, reference.features)


def test_verify_cli_reports_and_exits_non_zero_until_repaired(tmp_path, extracted, capsys):
    store, fp, _ = extracted
    sorted(store.shard_dir(fp).glob("*.h5"))[0].unlink()
    code, out, _ = run_main(capsys, "verify", "--home", str(store.home))
    assert code == 1 and "file is missing" in out and "--repair" in out
    code, out, _ = run_main(capsys, "verify", "--repair", "--home", str(store.home))
    assert code == 0 and "dropped 8 vectors" in out
    code, out, _ = run_main(capsys, "verify", "--home", str(store.home))
    assert code == 0 and "no problems" in out
