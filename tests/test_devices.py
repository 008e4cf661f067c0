"""The same work on each device present: the CPU always, CUDA where there is one (with AMP there).

Without CUDA the cuda cases are skipped; `make test` on a GPU host runs them against CPU references.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from classifiers.heads import get_head_class
from extractor.model import LoadedBackbone, resolve
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from service.app import create_app
from service.settings import Settings
from tests.conftest import make_folder

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    assert (norms > 0).all(), "all-zero features say nothing"
    return (a * b).sum(axis=1) / norms


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", ["tiny", "vgg16"])
def test_backbone_features_match_the_cpu_reference(device, backbone):
    resolved = resolve(backbone, "random:3")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (resolved.size, resolved.size, 3), dtype=np.uint8) for _ in range(3)]
    reference = LoadedBackbone(resolved, "cpu", amp="off").setup().embed_arrays(images)
    model = LoadedBackbone(resolved, device).setup()
    got = model.embed_arrays(images)
    assert model.device.type == device and (model.amp is not None) == (device == "cuda")
    assert got.shape == reference.shape == (3, resolved.fingerprint.dim) and got.dtype == np.float32
    assert cosines(got, reference).min() > 0.99  # AMP on CUDA changes the last bits, not the meaning
    assert np.array_equal(model.embed_arrays(images[:1]).shape, (1, resolved.fingerprint.dim))


@pytest.mark.parametrize("device", DEVICES)
def test_extract_on_the_device_stores_what_the_cpu_computes(device, tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 5})
    stores = {}
    for role, where, amp in (("reference", "cpu", "off"), ("device", device, "auto")):
        stores[role] = FeatureStore(tmp_path / f"home-{role}")
        summary = extract(ExtractOptions(data_dir=tmp_path / "data", dataset="d", backbone="tiny", weights="random",
                                         device=where, amp=amp, workers=1, batch_size=4, decode="cpu"),
                          stores[role])
        assert summary.extracted == 10 and summary.failed == 0 and summary.device.startswith(where)
    ref, got = stores["reference"].table("d", summary.fingerprint), stores["device"].table("d", summary.fingerprint)
    assert got.sha256 == ref.sha256
    assert cosines(got.features, ref.features).min() > 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_head_trains_and_predicts_on_the_device(device):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 16))
    X = np.concatenate([c + rng.normal(0, 0.5, (30, 16)) for c in centers]).astype(np.float32)
    y = np.repeat(["x", "y", "z"], 30)
    head = get_head_class("mlp")(device=device, epochs=10, hidden=[32, 32]).fit(X, y)
    assert next(head.net.parameters()).device.type == device
    assert (head.predict(X) == y).mean() > 0.95


@pytest.mark.parametrize("device", DEVICES)
def test_service_predicts_on_the_device(device, tmp_path):
    make_folder(tmp_path / "data" / "c", {"blue": 8, "red": 8})
    settings = Settings(home=tmp_path / "home", data_root=tmp_path / "data", api_key=None, device=device,
                        extract_workers=0)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/extract", json={"dataset": "c", "path": "c", "backbone": "tiny",
                                               "weights": "random"}).json()["job_id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "succeeded" and job["result"]["device"].startswith(device), job
        trained = client.post("/heads", json={"name": "h", "dataset": "c", "backbone": "tiny", "head": "mlp",
                                              "params": {"epochs": 60, "lr": 0.01, "patience": 60}})
        assert trained.status_code == 201, trained.text
        assert trained.json()["trained_on"].startswith(device)  # the service's device, not "auto"
        image = sorted((tmp_path / "data" / "c" / "red").iterdir())[0].read_bytes()
        answer = client.post("/predict", data={"head": "h", "top_k": "2"},
                             files={"files": ("r.jpg", image, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        top = answer.json()["results"][0]["top"]
        assert [t["label"] for t in top] == ["red", "blue"] and abs(sum(t["probability"] for t in top) - 1) < 1e-4
