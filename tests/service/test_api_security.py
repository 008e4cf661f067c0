"""Safe by default: auth, binding, path confinement, upload limits and formats, clean errors, model failures."""

from __future__ import annotations

import io
import os
import time

import httpx
import pytest
from PIL import Image

from service.cli_serve import is_loopback
from service.settings import Settings
from tests.conftest import assert_one_line_error, make_folder, run_main
from tests.extractor.test_decode import png_header_only
from tests.service.server import KEY, Server

LIMIT = 300_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    data = root / "data"
    make_folder(data / "colors", {"blue": 8, "green": 8, "red": 8})
    make_folder(root / "data_evil" / "loot", {"x": 3})  # a sibling whose name extends the root's
    (data / "evil-link").symlink_to(root / "data_evil")
    (data / "etc-link").symlink_to("/etc")
    outside = next((root / "data_evil" / "loot" / "x").iterdir())
    (data / "colors" / "red" / "sneaky.jpg").symlink_to(outside)  # a file inside pointing outside
    server = Server(root / "home", data, env={"HEADSTART_MAX_UPLOAD_BYTES": str(LIMIT)}).start()
    job = server.client.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                               "weights": "random"}).json()
    server.job = server.wait_job(job["job_id"])
    assert server.client.post("/heads", json={"name": "h", "dataset": "colors", "backbone": "tiny"}).status_code == 201
    server.root = root
    yield server
    assert server.stop()


def clean(response: httpx.Response, served: Server) -> httpx.Response:
    """Error bodies: JSON `detail`, no stack trace, no server path."""
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()
    assert "Traceback" not in response.text and str(served.root) not in response.text
    assert "/work/" not in response.text and "site-packages" not in response.text
    return response


def test_docs_are_offline_and_readable_without_the_key(served):
    page = httpx.get(served.url + "/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text  # every asset from this server
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        response = httpx.get(served.url + asset)
        assert response.status_code == 200 and len(response.content) > 10_000
    schema = httpx.get(served.url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer" and "/predict" in schema["paths"]
    assert httpx.get(served.url + "/docs-assets/../heads").status_code == 401  # no way around the key


@pytest.mark.parametrize("path", ["/jobs", "/metrics", "/heads", "/readyz", "/datasets", "/backbones"])
def test_every_endpoint_but_healthz_and_docs_needs_the_key(served, path):
    assert httpx.get(served.url + path).status_code == 401
    assert httpx.get(served.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(served.url + path, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert served.client.get(path).status_code == 200
    response = httpx.post(served.url + "/predict", files={"files": ("a.png", b"x")}, data={"head": "h"})
    assert clean(response, served).status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_healthz_is_open(served):
    assert httpx.get(served.url + "/healthz").json() == {"status": "ok"}


def test_binds_loopback_by_default_and_refuses_public_without_key(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HEADSTART_API_KEY", raising=False)
    assert Settings().host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.org")
    code, _, err = run_main(capsys, "serve", "--host", "0.0.0.0", "--home", str(tmp_path), "--data-root", str(tmp_path))
    assert_one_line_error(code, err, "refusing to listen on 0.0.0.0 without an API key")


@pytest.mark.parametrize("env,expected", [
    ({"HEADSTART_PORT": "abc"}, "HEADSTART_PORT='abc'"), ({"HEADSTART_PREDICT_MAX_BATCH": "0"}, "greater than"),
    ({"HEADSTART_DEVICE": "gpu"}, "device 'gpu': expected auto, cpu, cuda"),
    ({"HEADSTART_DEVICE": "cuda:7"}, "cuda:7")])
def test_bad_settings_stop_the_start_with_one_line(capsys, monkeypatch, tmp_path, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, _, err = run_main(capsys, "serve", "--home", str(tmp_path), "--data-root", str(tmp_path))
    assert_one_line_error(code, err, expected)


@pytest.mark.parametrize("path,status", [
    ("/etc", 400), ("../data_evil/loot", 400), ("%2e%2e/data_evil", 400), ("colors/%2E%2E/..", 400),
    ("col\x00ors", 400), ("evil-link/loot", 403), ("etc-link", 403), ("C:/Windows", 400), ("nope", 404)])
def test_dataset_paths_are_confined_to_the_data_root(served, path, status):
    response = served.client.post("/extract", json={"dataset": "x", "path": path, "backbone": "tiny",
                                                     "weights": "random"})
    assert clean(response, served).status_code == status, response.text


def test_a_missing_path_names_what_is_there_and_never_what_is_outside(served):
    """The page's extract form takes a folder name typed by hand: a typo gets the folders it could have meant."""
    answer = served.client.post("/extract", json={"dataset": "x", "path": "colours", "backbone": "tiny"})
    assert answer.status_code == 404 and answer.json()["detail"].endswith(
        "no such file or folder in the data root: colours; the data root holds colors/, etc-link/, evil-link/"), \
        answer.text
    answer = served.client.post("/extract", json={"dataset": "x", "path": "colors/bleu", "backbone": "tiny"})
    assert answer.json()["detail"].endswith("colors/ holds blue/, green/, red/")
    answer = served.client.post("/extract", json={"dataset": "x", "path": "evil-link/nope", "backbone": "tiny"})
    assert answer.status_code == 403 and "loot" not in answer.text  # through a symlink out: refused, nothing listed


def test_labels_csv_is_confined_too(served):
    response = served.client.post("/extract", json={"dataset": "x", "path": "colors", "labels_csv": "/etc/passwd",
                                                     "backbone": "tiny", "weights": "random"})
    assert clean(response, served).status_code == 400


def test_symlinked_file_leaving_the_root_is_not_read(served):
    result = served.job["result"]
    assert served.job["state"] == "succeeded" and result["extracted"] == 24
    assert {"path": "red/sneaky.jpg", "reason": "path leaves the data folder (symlink); not read"} in result["failures"]


@pytest.mark.parametrize("weights", ["/etc/passwd", "http://example.org/w.pth", "random:abc", "imagenet.pth"])
def test_no_request_field_is_a_file_or_url(served, weights):
    response = served.client.post("/extract", json={"dataset": "x", "path": "colors", "weights": weights})
    assert clean(response, served).status_code == 422


@pytest.mark.parametrize("params,expected", [({"hidden": "abc"}, "hidden"), ({"epochs": -1}, "epochs"),
                                             ({"hidden": [1000000000]}, "hidden")])
def test_bad_head_params_are_400_before_any_training(served, params, expected):
    response = served.client.post("/heads", json={"name": "p", "dataset": "colors", "backbone": "tiny",
                                                  "head": "mlp", "params": params})
    assert clean(response, served).status_code == 400 and f"parameter {expected}=" in response.json()["detail"]


def predict(served: Server, data: bytes, name: str = "a.jpg", **kw) -> httpx.Response:
    return served.client.post("/predict", data={"head": "h"}, files={"files": (name, data, "image/jpeg")}, **kw)


def test_upload_over_the_limit_with_content_length_is_413(served):
    assert clean(predict(served, b"\0" * (LIMIT + 10)), served).status_code == 413


def test_upload_over_the_limit_without_content_length_is_413(served):
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(100):
            yield b"\0" * 10_000

    response = served.client.post("/predict", content=chunks(),
                                  headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers
    assert clean(response, served).status_code == 413


def test_format_is_checked_by_content(served):
    assert clean(predict(served, b"%PDF-1.4 pretending", "photo.jpg"), served).status_code == 415
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(buf, "PNG")
    assert predict(served, buf.getvalue(), "notes.txt").status_code == 200  # a PNG named .txt is fine


def test_bomb_and_corrupt_images_are_422_within_a_second(served):
    start = time.monotonic()
    response = predict(served, png_header_only(60000, 60000), "bomb.png")
    assert clean(response, served).status_code == 422 and "decompression bomb" in response.json()["detail"]
    assert time.monotonic() - start < 1.0
    good = next((served.data / "colors" / "green").iterdir()).read_bytes()
    assert clean(predict(served, good[: len(good) // 2]), served).status_code == 422


def test_one_bad_file_among_good_ones_gets_its_own_error(served):
    good = next((served.data / "colors" / "green").iterdir()).read_bytes()
    response = served.client.post("/predict", data={"head": "h"}, files=[
        ("files", ("good.jpg", good, "image/jpeg")), ("files", ("bad.jpg", b"nope", "image/jpeg"))])
    results = response.json()["results"]
    assert response.status_code == 200 and "top" in results[0] and results[1]["status"] == 415


def test_too_many_files_and_unknown_head(served):
    good = next((served.data / "colors" / "green").iterdir()).read_bytes()
    many = [("files", (f"{i}.jpg", good, "image/jpeg")) for i in range(17)]
    assert clean(served.client.post("/predict", data={"head": "h"}, files=many), served).status_code == 413
    assert clean(served.client.post("/predict", data={"head": "nope"}, files=many[:1]), served).status_code == 404


def test_model_error_fails_that_request_with_503_and_the_service_stays_up(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from extractor.model import LoadedBackbone
    from service.app import create_app

    make_folder(tmp_path / "data" / "c", {"a": 4, "b": 4})
    settings = Settings(home=tmp_path / "home", data_root=tmp_path / "data", api_key=None)
    real = LoadedBackbone.embed_arrays
    calls = {"n": 0}

    def flaky(self, arrays):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, arrays)

    with TestClient(create_app(settings)) as client:
        job = client.post("/extract", json={"dataset": "c", "path": "c", "backbone": "tiny", "weights": "random"})
        for _ in range(200):
            if client.get(f"/jobs/{job.json()['job_id']}").json()["state"] == "succeeded":
                break
            time.sleep(0.05)
        assert client.post("/heads", json={"name": "h", "dataset": "c", "backbone": "tiny"}).status_code == 201
        monkeypatch.setattr(LoadedBackbone, "embed_arrays", flaky)
        image = next((tmp_path / "data" / "c" / "a").iterdir()).read_bytes()
        failed = client.post("/predict", data={"head": "h"}, files={"files": ("a.jpg", image, "image/jpeg")})
        assert failed.status_code == 503 and "model error" in failed.json()["detail"]
        assert "Traceback" not in failed.text and os.fspath(tmp_path) not in failed.text
        again = client.post("/predict", data={"head": "h"}, files={"files": ("a.jpg", image, "image/jpeg")})
        assert again.status_code == 200 and client.get("/healthz").status_code == 200


def test_confine_rejects_sibling_prefix_directly(tmp_path):
    from service.security import PathRefused, confine

    (tmp_path / "data").mkdir()
    (tmp_path / "data_evil").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "data_evil")
    with pytest.raises(PathRefused) as err:
        confine(tmp_path / "data", "link")
    assert err.value.status == 403
    assert confine(tmp_path / "data", ".") == (tmp_path / "data").resolve()


def test_scrubber_hides_server_paths_and_keeps_ordinary_text():
    from pathlib import Path

    from service.security import Scrubber

    scrub = Scrubber({Path("/srv/data"): "<data>", Path("/srv/home"): "<home>"})
    assert scrub("cannot read /srv/data/pets/a.jpg") == "cannot read <data>/pets/a.jpg"
    assert scrub("expected the file /root/.cache/torch/hub/x.pth") == "expected the file <server path>"
    assert scrub("split 0.6,0.2,0.2 into train/val/test") == "split 0.6,0.2,0.2 into train/val/test"
    assert scrub("roll back with POST /heads/pets/rollback, or delete it") == \
        "roll back with POST /heads/pets/rollback, or delete it"  # the API's own routes stay (they were mangled)
    assert scrub("GET /heads/h/predictions?dataset=d gives them; not /srv/x/y") == \
        "GET /heads/h/predictions?dataset=d gives them; not <server path>"
    assert scrub("POSTED /etc/passwd/x") == "POSTED <server path>"  # only a method's own word keeps a path
    assert scrub("GET /etc/passwd/x") == "GET <server path>"  # and only for a route of this API
