"""Head persistence: tampering, missing files and fingerprint mismatch refused; kill -9 mid-save is harmless."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from classifiers.heads import LogRegHead
from classifiers.persist import HeadCorrupt, head_dir, list_names, load, save
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
