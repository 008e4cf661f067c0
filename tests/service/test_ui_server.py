"""What the server does for the page (issue 15): /ui open but data closed, security headers, no CORS, the ROC and
the mistakes order the page reads, thumbnails that refuse tricks and bombs, and a script without HTML sinks."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from classifiers.training import train_head
from extractor.pipeline import ExtractOptions, extract
from extractor.store import FeatureStore
from service.app import create_app
from service.security import API_CSP, UI_CSP
from service.settings import load_settings
from service.webui import UI
from tests.conftest import make_folder

KEY = "ui-key-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Classes a and b (5 of a filed under b: mistakes) and one 3000x3000 member image; the server allows
    only 1 MP, so that member is a bomb for its thumbnail."""
    root = tmp_path_factory.mktemp("uiserver")
    make_folder(root / "data" / "set", {"a": 15, "b": 10})
    for path in sorted((root / "data" / "set" / "a").iterdir())[:5]:
        shutil.move(path, root / "data" / "set" / "b" / f"moved_{path.name}")
    Image.new("RGB", (3000, 3000), (200, 30, 30)).save(root / "data" / "set" / "a" / "huge.jpg", quality=50)
    store = FeatureStore(root / "home")
    extract(ExtractOptions(data_dir=root / "data" / "set", dataset="d", backbone="tiny", weights="random",
                           workers=0, device="cpu"), store)
    train_head(store, "d", "tiny", "centroid", "h")
    settings = load_settings(home=root / "home", data_root=root / "data", device="cpu", api_key=KEY,
                             max_pixels=1_000_000)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client, root


def test_the_page_is_open_but_the_data_is_not(served):
    client, _ = served
    anonymous = TestClient(client.app)
    page = anonymous.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert anonymous.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    for asset in ("app.js", "style.css"):
        got = anonymous.get(f"/ui/assets/{asset}")
        assert got.status_code == 200 and got.headers["x-content-type-options"] == "nosniff"
    assert anonymous.get("/datasets").status_code == 401
    assert anonymous.get("/ui/../datasets").status_code in (401, 404)
    assert anonymous.get("/ui/assets/../../datasets").status_code in (401, 404)
    assert anonymous.get("/ui/assets/nothing.js").status_code == 404


def test_security_headers_and_no_cors(served):
    client, _ = served
    page = client.get("/ui/")
    assert page.headers["content-security-policy"] == UI_CSP
    assert "'unsafe-inline'" not in UI_CSP and "'unsafe-eval'" not in UI_CSP and "*" not in UI_CSP
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    api = client.get("/heads", headers={"Origin": "https://evil.example"})
    assert api.headers["content-security-policy"] == API_CSP
    assert "access-control-allow-origin" not in api.headers  # no CORS opening
    preflight = client.options("/heads", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "DELETE"})
    assert "access-control-allow-origin" not in preflight.headers
    assert client.get("/healthz").headers["content-security-policy"] == API_CSP
    assert "content-security-policy" not in client.get("/docs").headers  # Swagger UI starts with an inline script


def test_the_page_script_has_no_html_sinks_and_no_inline_code():
    script = (UI / "assets" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "localStorage"):
        assert sink not in script, f"app.js uses {sink}"
    html = (UI / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
    assert not re.search(r"\son[a-z]+=", html) and "style=" not in html  # no inline handlers or styles
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # no CDN


def test_roc_curves_and_the_mistakes_order(served):
    client, _ = served
    roc = client.get("/heads/h/roc", params={"split": "train"})
    assert roc.status_code == 200, roc.text
    body = roc.json()
    assert body["split"] == "train" and len(body["curves"]) == 1  # binary: the positive class
    curve = body["curves"][0]
    assert curve["label"] == "b" and 0 <= curve["auc"] <= 1 and len(curve["fpr"]) == len(curve["tpr"]) <= 101
    assert curve["fpr"][0] == curve["tpr"][0] == 0 and curve["fpr"][-1] == curve["tpr"][-1] == 1
    assert curve["fpr"] == sorted(curve["fpr"]) and curve["tpr"] == sorted(curve["tpr"])
    assert client.get("/heads/h/roc", params={"split": "nope"}).status_code == 422
    assert client.get("/heads/missing/roc").status_code == 404
    confident = client.get("/heads/h/mistakes", params={"split": "train"}).json()["rows"]
    unsure = client.get("/heads/h/mistakes", params={"split": "train", "order": "unsure"}).json()["rows"]
    assert len(confident) >= 2 and unsure == sorted(confident, key=lambda r: (r["confidence"], r["path"]))
    assert client.get("/heads/h/mistakes", params={"order": "random"}).status_code == 422


def test_thumbnails_refuse_strangers_tricks_and_bombs_without_a_5xx(served):
    client, root = served
    huge = hashlib.sha256((root / "data" / "set" / "a" / "huge.jpg").read_bytes()).hexdigest()
    bomb = client.get(f"/datasets/d/images/{huge}/thumbnail")
    assert bomb.status_code == 422 and "pixel" in bomb.json()["detail"]  # decoded within the server's limits
    stranger = hashlib.sha256(b"not a member").hexdigest()
    assert client.get(f"/datasets/d/images/{stranger}/thumbnail").status_code == 404
    for trick in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "a" * 65, huge.upper()):
        assert client.get(f"/datasets/d/images/{trick}/thumbnail").status_code in (404, 422)
    assert client.get(f"/datasets/..%2Fd/images/{huge}/thumbnail").status_code in (404, 422)
    member = next(p for p in (root / "data" / "set" / "a").iterdir() if p.name != "huge.jpg")
    sha = hashlib.sha256(member.read_bytes()).hexdigest()
    assert client.get(f"/datasets/d/images/{sha}/thumbnail").status_code == 200
    assert TestClient(client.app).get(f"/datasets/d/images/{sha}/thumbnail").status_code == 401
