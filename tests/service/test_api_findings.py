"""What probing the service found (issues 9 and 10), each pinned against a real server on 127.0.0.1."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from extractor.errors import HeadstartError
from extractor.labelcsv import scan_csv
from extractor.names import check_name
from tests.conftest import REPO, make_folder
from tests.service.server import Server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings-api")
    make_folder(root / "data" / "colors", {"blue": 10, "green": 10, "red": 10})
    make_folder(root / "data" / "slow", {"a": 20, "b": 20}, size=(160, 120))
    server = Server(root / "home", root / "data", env={"HEADSTART_MAX_QUEUED_JOBS": "2",
                                                       "HEADSTART_EXTRACT_BATCH_SIZE": "4",
                                                       "HEADSTART_DEVICE": "cpu"}).start()
    job = server.client.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                               "weights": "random"}).json()
    assert server.wait_job(job["job_id"])["state"] == "succeeded"
    yield server
    assert server.stop()


def test_a_second_server_on_the_same_home_touches_nothing(served, tmp_path):
    c = served.client
    job_id = c.post("/extract", json={"dataset": "slow", "path": "slow", "backbone": "vgg16",
                                      "weights": "random"}).json()["job_id"]
    served.wait_job(job_id, states=("running",))
    seen = set()
    for args, expected in ((["--home", str(served.home), "--port", "0"], "another headstart serve uses the home"),
                           (["--home", str(tmp_path / "other"), "--port", str(served.port)], "cannot listen on")):
        second = subprocess.run([sys.executable, "-m", "service", "serve", *args, "--data-root", str(served.data)],
                                cwd=REPO, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "HEADSTART_OFFLINE": "1"})
        seen.add(c.get(f"/jobs/{job_id}").json()["state"])
        assert second.returncode == 1 and second.stderr.count("\n") == 1 and expected in second.stderr, second.stderr
    final = served.wait_job(job_id, states=("succeeded", "failed", "cancelled"), timeout=180)
    assert final["state"] == "succeeded" and "failed" not in seen, (seen, final)


def test_cancel_answers_cancelling_and_stops_within_a_few_batches(served):
    c = served.client
    job_id = c.post("/extract", json={"dataset": "slow", "path": "slow", "backbone": "vgg16",
                                      "weights": "random:5"}).json()["job_id"]
    view = served.wait_job(job_id, states=("running",))
    while view["phase"] != "extracting" or view["done"] < 4:
        view = c.get(f"/jobs/{job_id}").json()
    answer = c.delete(f"/jobs/{job_id}").json()
    assert answer["state"] == "cancelling", answer
    done = served.wait_job(job_id, states=("cancelled",), timeout=60)
    assert done["done"] <= answer["done"] + 12 and done["done"] < 40, (answer["done"], done["done"])


def test_a_full_queue_answers_429_with_retry_after(served):
    c = served.client
    first = c.post("/extract", json={"dataset": "slow", "path": "slow", "backbone": "vgg16",
                                     "weights": "random:6"}).json()["job_id"]
    served.wait_job(first, states=("running",))
    queued = [c.post("/extract", json={"dataset": "slow", "path": "slow", "backbone": "vgg16",
                                       "weights": f"random:{7 + i}"}) for i in range(2)]
    assert all(r.status_code == 202 for r in queued)
    refused = c.post("/extract", json={"dataset": "slow", "path": "slow", "backbone": "vgg16",
                                       "weights": "random:99"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "HEADSTART_MAX_QUEUED_JOBS" in refused.json()["detail"]
    for job_id in [first] + [r.json()["job_id"] for r in queued]:
        assert c.delete(f"/jobs/{job_id}").status_code == 200
    page = c.get("/jobs", params={"limit": 2})
    assert len(page.json()) == 2 and int(page.headers["x-total-count"]) >= 5


def test_a_broken_head_is_listed_with_its_reason_and_the_others_stay(served):
    c = served.client
    for name in ("good", "bad"):
        assert c.post("/heads", json={"name": name, "dataset": "colors", "backbone": "tiny"}).status_code == 201
    current = served.home / "heads" / "bad" / os.readlink(served.home / "heads" / "bad" / "CURRENT")
    manifest = json.loads((current / "manifest.json").read_text())
    manifest["classes"][0] = "edited"
    (current / "manifest.json").write_text(json.dumps(manifest))
    listing = {h["name"]: h for h in c.get("/heads").json()}
    assert "modified after saving" in listing["bad"]["error"] and listing["good"]["kind"] == "logreg"
    assert str(served.home) not in c.get("/heads").text
    assert c.delete("/heads/bad").status_code == 200


def test_rollback_through_the_api(served):
    c = served.client
    body = {"name": "rolled", "dataset": "colors", "backbone": "tiny"}
    first = c.post("/heads", json={**body, "head": "centroid"}).json()
    assert c.post("/heads", json={**body, "head": "logreg"}).json()["kind"] == "logreg"
    back = c.post("/heads/rolled/rollback")
    assert back.status_code == 200 and back.json()["kind"] == "centroid" == first["kind"]
    assert c.get("/heads/rolled").json()["kind"] == "centroid"


def test_hostile_numbers_are_422_and_the_connection_survives(served):
    with httpx.Client(base_url=served.url, headers=served.client.headers, timeout=60) as c:
        for raw in ('{"name": "n", "dataset": "colors", "backbone": "tiny", "head": "mlp", "params": {"seed": NaN}}',
                    '{"name": "n", "dataset": "colors", "backbone": "tiny", "params": {"C": Infinity}}',
                    '{"name": "n", "dataset": "colors", "backbone": "tiny", "head": "mlp", "params": {"lr": 1e308}}',
                    '{"name": "n", "dataset": "colors", "backbone": "tiny", "head": "centroid", '
                    '"params": {"temperature": 1e308}}',
                    '{"name": "n", "dataset": "colors", "backbone": "vgg99"}',
                    '{"name": "n", "dataset": "colors", "backbone": "tiny", "head": "svm"}'):
            response = c.post("/heads", content=raw, headers={"content-type": "application/json"})
            assert response.status_code in (400, 422), (raw, response.status_code, response.text)
            json.loads(response.text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON answer"))
            assert c.get("/healthz").status_code == 200  # same keep-alive connection, still fine


def test_background_training_is_validated_before_it_is_queued(served):
    c = served.client
    for params, status in (({"epochs": -1}, 400), ({"hidden": [99999]}, 400), ({"epochs": 5000}, 422)):
        answer = c.post("/heads", json={"name": "bg", "dataset": "colors", "backbone": "tiny", "head": "mlp",
                                        "params": params, "background": True})
        assert answer.status_code == status, answer.text
    missing = c.post("/heads", json={"name": "bg", "dataset": "nope", "backbone": "tiny", "background": True})
    assert missing.status_code == 404 and "POST /extract" in missing.json()["detail"]
    assert "headstart extract" not in missing.text  # the API speaks its own language


def test_twenty_concurrent_saves_of_one_name_never_5xx(served):
    body = {"name": "race", "dataset": "colors", "backbone": "tiny", "head": "mlp", "params": {"epochs": 3}}
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _: served.client.post("/heads", json=body).status_code, range(20)))
    assert all(code in (201, 429) for code in codes) and 201 in codes, codes
    assert served.client.get("/heads/race").status_code == 200


def test_csv_rows_outside_the_folder_get_one_answer(tmp_path):
    make_folder(tmp_path / "data", {"a": 1})
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (tmp_path / "labels.csv").write_text(f"path,label\n{outside},a\n{tmp_path / 'nothing.jpg'},a\n../secret.jpg,a\n"
                                         f"../nothing.jpg,a\n")
    reasons = {reason for _, reason in scan_csv(tmp_path / "data", tmp_path / "labels.csv").failures}
    assert len(reasons) == 1 and "not found inside the data folder" in reasons.pop()


def test_csv_rows_naming_a_file_inside_the_folder_by_an_absolute_or_dotted_path_are_that_file(tmp_path):
    """Before: an absolute path into the data folder (as CSVs from other tools carry) or a/../a/x.jpg was 'not found
    inside the data folder' although the file is there; paths that leave the folder still get the one answer."""
    inside = make_folder(tmp_path / "data", {"a": 3})
    (tmp_path / "secret.jpg").write_bytes(inside[0].read_bytes())
    rows = [f"{inside[0]},a", f"a/../a/{inside[1].name},a", f"./a/{inside[2].stem},a",  # all three inside
            f"{tmp_path / 'secret.jpg'},a", "a/../../secret.jpg,a", f"{tmp_path / 'data'}/../secret.jpg,a"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    listing = scan_csv(tmp_path / "data", tmp_path / "labels.csv")
    assert sorted(i.rel for i in listing.items) == sorted(f"a/{p.name}" for p in inside)
    assert len(listing.failures) == 3 and {r for _, r in listing.failures} == {
        "listed in the CSV but not found inside the data folder"}
    (tmp_path / "link").symlink_to(tmp_path / "data")  # the folder given and written in the CSV through a symlink
    (tmp_path / "outside").symlink_to(tmp_path)
    (tmp_path / "labels.csv").write_text(f"path,label\n{tmp_path}/link/a/{inside[0].name},a\n"
                                         f"{tmp_path}/outside/data/a/{inside[1].name},a\n"
                                         f"{tmp_path}/outside/secret.jpg,a\n{tmp_path}/link/../secret.jpg,a\n")
    listing = scan_csv(tmp_path / "link", tmp_path / "labels.csv")
    assert [i.rel for i in listing.items] == [f"a/{inside[0].name}", f"a/{inside[1].name}"]
    assert [p for p, _ in listing.failures] == [f"{tmp_path}/outside/secret.jpg", f"{tmp_path}/link/../secret.jpg"]


@pytest.mark.parametrize("name", ["hd\n", "con", "NUL", "com1", "Aux.txt", "a" * 65, ".x", ""])
def test_names_are_matched_whole_and_windows_device_names_refused(name):
    with pytest.raises(HeadstartError):
        check_name("head", name)


def test_disk_full_during_a_head_save_is_507(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from extractor.pipeline import ExtractOptions, extract
    from extractor.store import FeatureStore
    from service.app import create_app
    from service.settings import load_settings

    make_folder(tmp_path / "data" / "c", {"a": 4, "b": 4})
    extract(ExtractOptions(data_dir=tmp_path / "data" / "c", dataset="c", backbone="tiny", weights="random",
                           workers=0), FeatureStore(tmp_path / "home"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    heads = tmp_path / "home" / "heads"
    (heads / ".deleted-old-1234").mkdir(parents=True)  # what a kill -9 mid-delete and mid-save leave
    (heads / "old" / ".v-1.tmp").mkdir(parents=True)
    (heads / "old" / ".v-1.tmp" / "weights.safetensors").write_bytes(b"\0" * 4096)
    monkeypatch.setattr("classifiers.persist.save_file", full)
    app = create_app(load_settings(home=tmp_path / "home", data_root=tmp_path / "data", device="cpu"))
    with TestClient(app) as client:
        assert not (heads / ".deleted-old-1234").exists() and not (heads / "old" / ".v-1.tmp").exists()
        answer = client.post("/heads", json={"name": "h", "dataset": "c", "backbone": "tiny"})
    assert answer.status_code == 507 and "disk full" in answer.json()["detail"]
    assert not (tmp_path / "home" / "heads" / "h" / "CURRENT").exists()
