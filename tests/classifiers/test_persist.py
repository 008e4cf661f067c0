"""Head persistence: tampering, missing files and fingerprint mismatch refused; kill -9 mid-save is harmless."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from classifiers.heads import LogRegHead
from classifiers.persist import (
    HeadCorrupt,
    clean_leftovers,
    delete,
    head_dir,
    list_heads,
    list_names,
    load,
    rollback,
    save,
)
from extractor.errors import HeadstartError, NotFound
from tests.classifiers.test_heads import blobs
from tests.conftest import REPO

INFO = {"fingerprint": {"id": "tiny-abc", "spec": {"weights": "random:seed=0"}}, "weights": "random:0",
        "backbone": "tiny", "dataset": "d", "dim": 32, "metrics": {"test": {"accuracy": 1.0}}}


@pytest.fixture
def saved(tmp_path):
    X, y = blobs(3, 20)
    save(LogRegHead().fit(X, y), INFO, tmp_path, "h")
    return tmp_path, head_dir(tmp_path, "h")


def test_tampered_manifest_is_refused(saved):
    root, folder = saved
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classes"][0] = "renamed"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HeadCorrupt, match="modified after saving"):
        load(root, "h")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(HeadCorrupt, match="unreadable"):
        load(root, "h")
    del manifest["kind"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HeadCorrupt, match="lacks a valid 'kind'"):
        load(root, "h")


def test_missing_or_altered_weights_file_is_refused(saved):
    root, folder = saved
    data = (folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(HeadCorrupt, match="does not match its manifest"):
        load(root, "h")
    (folder / "weights.safetensors").unlink()
    with pytest.raises(HeadCorrupt, match="missing its weights file"):
        load(root, "h")


def test_fingerprint_mismatch_is_refused(saved):
    root, _ = saved
    with pytest.raises(HeadstartError, match="trained on features tiny-abc .*this backbone gives vgg16-xyz"):
        load(root, "h", fingerprint="vgg16-xyz")
    head, _ = load(root, "h", fingerprint="tiny-abc")
    assert head.kind == "logreg"


def test_unknown_and_bad_names(tmp_path):
    with pytest.raises(NotFound, match="no head 'nope'"):
        load(tmp_path, "nope")
    with pytest.raises(HeadstartError, match="head name"):
        save(LogRegHead(), INFO, tmp_path, "../escape")


def test_resave_keeps_two_versions_and_lists(saved):
    root, first = saved
    X, y = blobs(2, 20)
    save(LogRegHead().fit(X, y), INFO, root, "h")
    assert head_dir(root, "h") != first and list_names(root) == ["h"]
    versions = [p for p in (root / "h").iterdir() if p.name.startswith("v-")]
    assert len(versions) == 2
    assert len(load(root, "h")[0].classes_) == 2


SAVER = textwrap.dedent("""
    import json, sys, numpy as np
    from classifiers.heads import LogRegHead
    from classifiers.persist import save
    INFO = json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (300, 4096)).astype(np.float32)
    head = LogRegHead(max_iter=5).fit(X, np.repeat(["a", "b", "c"], 100))
    print("ready", flush=True)
    while True:
        save(head, INFO, sys.argv[1], "h")
""")


def test_kill_9_during_save_leaves_a_loadable_head(tmp_path):
    X, y = blobs(2, 20)
    save(LogRegHead().fit(X, y), INFO, tmp_path, "h")
    for delay in (0.01, 0.05, 0.13, 0.31, 0.57):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), json.dumps(INFO)], cwd=REPO,
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        head, manifest = load(tmp_path, "h")  # whichever version is current, it is whole
        assert len(head.classes_) in (2, 3) and manifest["weights_sha256"]
        assert np.isfinite(head.predict_proba(np.zeros((1, head.mean_.shape[0]), np.float32))).all()
    assert len(load(tmp_path, "h")[0].classes_) == 3  # the saver did replace the first version


def test_one_broken_head_does_not_hide_the_others(saved):
    root, folder = saved
    X, y = blobs(2, 20)
    save(LogRegHead().fit(X, y), INFO, root, "other")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classes"][0] = "edited"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    listing = {h["name"]: h for h in list_heads(root)}
    assert set(listing) == {"h", "other"}
    assert "modified after saving" in listing["h"]["error"] and "error" not in listing["other"]
    os.remove(root / "other" / os.readlink(root / "other" / "CURRENT") / "manifest.json")
    assert "unreadable" in {h["name"]: h for h in list_heads(root)}["other"]["error"]


def test_rollback_returns_to_the_previous_version_and_back(saved):
    root, first = saved
    X, y = blobs(2, 20)
    save(LogRegHead().fit(X, y), INFO, root, "h")
    assert len(load(root, "h")[0].classes_) == 2
    rollback(root, "h")
    assert head_dir(root, "h") == first and len(load(root, "h")[0].classes_) == 3
    rollback(root, "h")
    assert len(load(root, "h")[0].classes_) == 2
    save(LogRegHead().fit(*blobs(4, 20)), INFO, root, "h")  # after a rollback, a save keeps the one rolled to
    rollback(root, "h")
    assert len(load(root, "h")[0].classes_) == 2
    save(LogRegHead().fit(X, y), INFO, root, "single")
    with pytest.raises(HeadstartError, match="no earlier version"):
        rollback(root, "single")


def test_delete_is_atomic_and_leftovers_are_cleaned(saved, monkeypatch):
    root, _ = saved
    X, y = blobs(2, 20)
    save(LogRegHead().fit(X, y), INFO, root, "keep")
    real_rmtree = shutil.rmtree

    def crash(path, *a, **kw):  # the process dies while the folder's files are being unlinked
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        delete(root, "h")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert [h["name"] for h in list_heads(root)] == ["keep"]  # gone whole, never half there
    (root / "keep" / ".v-123.tmp").mkdir()
    (root / "keep" / ".v-123.tmp" / "weights.safetensors").write_bytes(b"x" * 1000)
    assert clean_leftovers(root) == 2
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".locks") == []
    assert not (root / "keep" / ".v-123.tmp").exists() and load(root, "keep")


def test_concurrent_saves_of_one_name_all_succeed(tmp_path):
    X, y = blobs(3, 20)
    heads = [LogRegHead().fit(X, y) for _ in range(2)]
    errors = []

    def one(i: int) -> None:
        try:
            save(heads[i % 2], INFO, tmp_path, "same")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(16)))
    assert errors == [] and len(load(tmp_path, "same")[0].classes_) == 3
    assert len([p for p in (tmp_path / "same").iterdir() if p.name.startswith("v-")]) == 2
