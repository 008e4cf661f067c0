"""The API through a real uvicorn process: the full loop, every endpoint, jobs, restart and shutdown."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.conftest import make_folder
from tests.service.server import Server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    make_folder(root / "data" / "colors", {"blue": 15, "green": 15, "red": 15})
    make_folder(root / "data" / "slow", {"a": 20, "b": 20}, size=(160, 120))
    server = Server(root / "home", root / "data").start()
    yield server
    assert server.stop()


def sample(served: Server, label: str) -> bytes:
    """A fresh image of `label` drawn the way the training images were (same class index)."""
    out = served.home.parent / "fresh"
    make_folder(out, {"blue": 0, "green": 0, "red": 0, label: 1}, seed=123)
    return next((out / label).iterdir()).read_bytes()


def as_heic(data: bytes) -> bytes:
    import io

    import pillow_heif  # test-only: the HEIC encoder
    from PIL import Image

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.open(io.BytesIO(data))).save(buf, format="HEIF", quality=90)
    return buf.getvalue()


def test_extract_train_predict_loop(served):
    banner = served.log.read_text().splitlines()[0]  # the first line a user sees names the page and the docs
    assert f"the page at {served.url}/ui" in banner and f"the API docs at {served.url}/docs" in banner, banner
    c = served.client
    accepted = c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                        "weights": "random", "split": "0.6,0.2,0.2", "seed": 1})
    assert accepted.status_code == 202 and accepted.json()["status_url"].startswith("/jobs/")
    job = served.wait_job(accepted.json()["job_id"])
    assert job["state"] == "succeeded" and job["done"] == job["total"] == 45 and job["phase"] == "extracting"
    assert job["result"]["extracted"] == 45 and job["images_per_second"] > 0
    trained = c.post("/heads", json={"name": "colors-lr", "dataset": "colors", "backbone": "tiny", "head": "logreg"})
    assert trained.status_code == 201, trained.text
    assert trained.json()["metrics"]["test"]["accuracy"] >= 0.9 and trained.json()["warnings"] == []
    files = [("files", ("g.jpg", sample(served, "green"), "image/jpeg")),
             ("files", ("r.jpg", sample(served, "red"), "image/jpeg")),
             ("files", ("IMG_0001.HEIC", as_heic(sample(served, "blue")), "image/heic"))]  # an iPhone's photo
    predicted = c.post("/predict", data={"head": "colors-lr", "top_k": "2"}, files=files)
    assert predicted.status_code == 200, predicted.text
    results = predicted.json()["results"]
    assert [r["top"][0]["label"] for r in results] == ["green", "red", "blue"] and len(results[0]["top"]) == 2
    assert sum(t["probability"] for t in results[0]["top"]) <= 1.0 + 1e-6


def test_catalog_endpoints(served):
    c = served.client
    served.wait_job(c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                             "weights": "random"}).json()["job_id"])
    assert {b["name"] for b in c.get("/backbones").json()} >= {"vgg16", "inception_v3", "resnet50"}
    datasets = {d["name"]: d for d in c.get("/datasets").json()}
    assert datasets["colors"]["path"] == "colors" and sum(datasets["colors"]["splits"].values()) == 45
    assert str(served.data) not in c.get("/datasets").text
    assert c.get("/jobs").status_code == 200 and len(c.get("/jobs").json()) >= 1
    assert c.get("/readyz").json() == {"status": "ready"}
    job = c.post("/heads", json={"name": "colors-bg", "dataset": "colors", "backbone": "tiny", "head": "centroid",
                                 "background": True})
    assert job.status_code == 202
    assert served.wait_job(job.json()["job_id"])["state"] == "succeeded"
    assert {h["name"] for h in c.get("/heads").json()} >= {"colors-bg"}
    assert c.get("/heads/colors-bg").json()["kind"] == "centroid"
    listed = next(h for h in c.get("/heads").json() if h["name"] == "colors-bg")["metrics"]["test"]
    detail = c.get("/heads/colors-bg").json()["metrics"]["test"]  # the list: headline figures only
    assert {"confusion_matrix", "per_class", "labels"} <= set(detail) and not {"confusion_matrix", "per_class",
                                                                                "labels"} & set(listed)
    assert listed == {k: v for k, v in detail.items() if k not in ("confusion_matrix", "per_class", "labels")}
    assert c.delete("/heads/colors-bg").json() == {"deleted": "colors-bg"}
    assert c.get("/heads/colors-bg").status_code == 404
    metrics = c.get("/metrics").text
    assert 'headstart_requests_total{method="GET",route="/backbones",status="200"}' in metrics
    assert "headstart_images_extracted_total" in metrics and "headstart_jobs_total" in metrics
    docs = c.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_labels_from_file_names_through_the_api(served):
    c, flat = served.client, served.home.parent / "data" / "flat"
    for index, path in enumerate(make_folder(served.home.parent / "named", {"cat": 3, "dog": 3})):
        flat.mkdir(exist_ok=True)
        path.rename(flat / f"{path.parent.name}.{index}.jpg")
    job = served.wait_job(c.post("/extract", json={"dataset": "flat", "path": "flat", "backbone": "tiny",
                                                   "weights": "random", "name_labels": True}).json()["job_id"])
    assert job["state"] == "succeeded", job
    train = c.post("/heads", json={"name": "flat-lr", "dataset": "flat", "head": "centroid"})  # its one backbone
    assert train.status_code == 201 and train.json()["classes"] == ["cat", "dog"], train.text
    both = c.post("/extract", json={"dataset": "flat2", "path": "flat", "backbone": "tiny", "weights": "random",
                                    "name_labels": True, "unlabeled": True}).json()
    assert "expected one of them, not several" in served.wait_job(both["job_id"])["error"]


def test_preview_an_extract_reads_no_image_and_registers_nothing(served):
    c = served.client
    answer = c.post("/extract/preview", json={"dataset": "peek", "path": "colors", "backbone": "tiny"})
    assert answer.status_code == 200, answer.text
    p = answer.json()
    assert (p["root"], p["kind"], p["images"], p["classes"], p["exists"]) == \
        ("colors", "folders", 45, {"blue": 15, "green": 15, "red": 15}, False)
    assert p["sources"] == ["<data>/colors (class subfolders)"] and str(served.data) not in answer.text
    assert p["splits"] == {"by": "fractions", "fractions": "0.6,0.2,0.2", "seed": 42} and p["failed"] == 0
    assert "peek" not in {d["name"] for d in c.get("/datasets").json()}
    assert c.post("/extract/preview", json={"dataset": "peek", "path": "nope"}).status_code == 404
    assert c.post("/extract/preview", json={"dataset": "peek", "path": "colors", "split": "2,2"}).status_code == 400


def test_delete_a_dataset_and_prune_what_no_dataset_needs(served):
    c = served.client
    make_folder(served.data / "other", {"a": 5, "b": 5}, seed=31)  # content no other dataset of the module holds
    served.wait_job(c.post("/extract", json={"dataset": "other", "path": "other", "backbone": "tiny",
                                             "weights": "random"}).json()["job_id"])
    assert c.delete("/datasets/nope").status_code == 404
    gone = c.delete("/datasets/other", params={"prune": "true"})
    assert gone.status_code == 200, gone.text
    answer = gone.json()
    assert answer["deleted"] == "other" and answer["vectors_only_its"] == 10 and answer["heads"] == []
    assert answer["pruned"]["vectors"] == 10 and answer["pruned"]["shards"] == 1 and answer["pruned"]["busy"] == []
    assert "other" not in {d["name"] for d in c.get("/datasets").json()}


def test_same_work_gives_the_running_job_and_cancel_stops_it(served):
    c = served.client
    body = {"dataset": "slow", "path": "slow", "backbone": "vgg16", "weights": "random"}
    first = c.post("/extract", json=body).json()
    second = c.post("/extract", json=body).json()
    assert second["job_id"] == first["job_id"] and first["created"] and not second["created"]
    other = c.post("/extract", json={**body, "seed": 7}).json()  # another split is other work: its own job (before:
    assert other["created"] and other["job_id"] != first["job_id"]  # answered with the first, the seed ignored)
    assert c.delete(f"/jobs/{other['job_id']}").json()["state"] == "cancelled"  # queued: cancelled at once
    served.wait_job(first["job_id"], states=("running",))
    busy = c.delete("/datasets/slow")  # a dataset with a job running is not deleted under it
    assert busy.status_code == 409 and first["job_id"] in busy.json()["detail"], busy.text
    cancelled = c.delete(f"/jobs/{first['job_id']}")
    assert cancelled.status_code == 200
    job = served.wait_job(first["job_id"])
    assert job["state"] == "cancelled"
    assert c.delete(f"/jobs/{first['job_id']}").status_code == 409
    assert c.get("/jobs/ffffffff").status_code == 404


def vectors(home) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as con:
        return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]


def shard_rows(home) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as con:
        return con.execute("SELECT COALESCE(SUM(rows), 0) FROM shards").fetchone()[0]


def alive(pid: int, wait: float = 15.0) -> bool:
    """Whether `pid` still runs after up to `wait` seconds (torch's watchdog checks every 5 s)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.2)
    return True


def start_vgg16_job(tmp_path, env: dict) -> tuple[Server, str]:
    """A server extracting 60 images with vgg16 on the CPU (also on a GPU host: slow enough to interrupt).

    `env` gains the batch size and device, so that a restarted server runs with the same settings."""
    make_folder(tmp_path / "data" / "big", {"a": 30, "b": 30}, size=(160, 120))
    env.update({"HEADSTART_EXTRACT_BATCH_SIZE": "4", "HEADSTART_DEVICE": "cpu"})
    server = Server(tmp_path / "home", tmp_path / "data", env=env).start()
    job_id = server.client.post("/extract", json={"dataset": "big", "path": "big", "backbone": "vgg16",
                                                  "weights": "random"}).json()["job_id"]
    return server, job_id


def test_kill_9_during_extract_then_restart_resumes_without_recomputing(tmp_path):
    env = {"HEADSTART_EXTRACT_WORKERS": "1", "HEADSTART_FLUSH_SECONDS": "0.2"}  # commit every batch
    first, job_id = start_vgg16_job(tmp_path, env)
    while vectors(tmp_path / "home") < 12:  # some batches committed, most of the job still to do
        assert first.proc.poll() is None
    workers = first.children()
    assert workers, "the extract job should be decoding in a worker process"
    first.kill()
    saved = vectors(tmp_path / "home")
    assert saved < 60
    second = Server(tmp_path / "home", tmp_path / "data", env=env).start()
    job = second.wait_job(job_id, states=("succeeded", "failed", "cancelled"))
    assert job["state"] == "succeeded", job
    assert job["result"]["cached"] == saved and job["result"]["extracted"] == 60 - saved
    assert vectors(tmp_path / "home") == shard_rows(tmp_path / "home") == 60  # no vector stored twice
    assert second.stop()
    assert not [pid for pid in workers if alive(pid)], "decode workers outlived the killed server"


def test_sigterm_checkpoints_the_running_job(tmp_path):
    env = {"HEADSTART_FLUSH_SECONDS": "1000", "HEADSTART_RESUME_INTERRUPTED": "false"}
    server, job_id = start_vgg16_job(tmp_path, env)
    while (view := server.client.get(f"/jobs/{job_id}").json())["phase"] != "extracting" or view["done"] < 8:
        pass  # (first the files are hashed: done/total then count files read)
    assert server.stop(timeout=60)  # graceful: finished batches flushed although flush_seconds is huge
    saved = vectors(tmp_path / "home")
    assert 8 <= saved < 60
    again = Server(tmp_path / "home", tmp_path / "data", env=env).start()
    assert again.client.get(f"/jobs/{job_id}").json()["state"] == "interrupted"
    assert again.client.post(f"/jobs/{job_id}/resume").json()["state"] in ("queued", "running")
    done = again.wait_job(job_id, states=("succeeded", "failed"))
    assert done["state"] == "succeeded" and done["result"]["extracted"] == 60 - saved
    assert again.stop()


def test_extract_jobs_fail_clearly_when_nothing_is_usable(served):
    c, data = served.client, served.home.parent / "data"
    (data / "empty" / "a").mkdir(parents=True)  # a class folder without images: a wrong path, most likely
    (data / "junk" / "a").mkdir(parents=True)
    (data / "junk" / "a" / "x.jpg").write_text("not an image")
    for path, expected in (("empty", "no images found in <data>/empty"), ("junk", "none of the 1 images")):
        job_id = c.post("/extract", json={"dataset": path, "path": path, "backbone": "tiny",
                                          "weights": "random"}).json()["job_id"]
        done = served.wait_job(job_id)
        assert done["state"] == "failed" and expected in done["error"], done
        assert str(data) not in done["error"]
    assert "empty" not in {d["name"] for d in c.get("/datasets").json()}  # nothing registered for a wrong folder


def test_answers_show_the_first_100_failures_and_count_all(served):
    c, data = served.client, served.home.parent / "data"
    make_folder(data / "mostly-junk", {"a": 1, "b": 1})
    for i in range(103):
        (data / "mostly-junk" / "a" / f"junk{i:03d}.jpg").write_bytes(b"no image " * 3)
    job_id = c.post("/extract", json={"dataset": "mostly-junk", "path": "mostly-junk", "backbone": "tiny",
                                      "weights": "random"}).json()["job_id"]
    job = served.wait_job(job_id)
    assert job["state"] == "succeeded" and job["result"]["failed"] == 103 and len(job["failures"]) == 100
    listed = next(d for d in c.get("/datasets").json() if d["name"] == "mostly-junk")
    assert listed["failed"] == 103 and len(listed["failures"]) == 100


def test_views_round_trip_through_the_api(served):
    c = served.client
    body = {"dataset": "colors", "path": "colors", "backbone": "tiny", "weights": "random", "augment": "crop",
            "views": 2}
    job = served.wait_job(c.post("/extract", json=body).json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["views"]["per_image"] == 2, job["result"]
    train = next(d for d in c.get("/datasets").json() if d["name"] == "colors")
    listed = [v for v in train["views"] if v["recipe_name"] == "crop"]
    assert listed and listed[0]["complete"] == 2 and listed[0]["images"] == train["splits"]["train"]
    head = c.post("/heads", json={"name": "colors-views", "dataset": "colors", "backbone": "tiny", "views": 2,
                                  "augment": "crop"})
    assert head.status_code == 201, head.text
    assert head.json()["views"]["per_image"] == 2 and head.json()["views"]["rows"] == 2 * train["splits"]["train"]
    for bad in ({**body, "augment": "twirl"}, {**body, "views": 65}):
        assert c.post("/extract", json=bad).status_code == 422
    missing = c.post("/heads", json={"name": "x", "dataset": "colors", "backbone": "tiny", "views": 9,
                                     "augment": "crop"})
    assert missing.status_code == 400 and '"views": 9' in missing.json()["detail"]


def test_finetune_job_cancels_and_resumes_through_the_api(served):
    c = served.client
    served.wait_job(c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                             "weights": "random"}).json()["job_id"])
    body = {"name": "colors-ft", "dataset": "colors", "backbone": "tiny", "weights": "random",
            "params": {"epochs": 400, "patience": 400, "unfreeze": 1, "lr": 1e-3, "batch_size": 4}}
    accepted = c.post("/finetune", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    view = served.wait_job(job_id, states=("running",))
    while view["phase"] != "finetuning" or view["done"] < 2:  # two epochs finished (checkpointed)
        view = c.get(f"/jobs/{job_id}").json()
        assert view["state"] == "running", view
    assert c.delete(f"/jobs/{job_id}").json()["state"] in ("cancelling", "cancelled")
    stopped = served.wait_job(job_id, states=("cancelled",))
    assert c.post(f"/jobs/{job_id}/resume").json()["state"] in ("queued", "running")
    assert (served.home / "finetune" / "colors-ft" / "checkpoint.pt").is_file()
    resumed = served.wait_job(job_id, states=("running",))
    while resumed["phase"] != "finetuning" or resumed["train_loss"] is None:
        resumed = c.get(f"/jobs/{job_id}").json()
    assert resumed["done"] >= 2, resumed  # it went on from its checkpoint, not from the first epoch
    assert stopped["state"] == "cancelled" and c.delete(f"/jobs/{job_id}").status_code == 200
    served.wait_job(job_id, states=("cancelled",))
    for params, status in (({"lr": 0}, 400), ({"unfreeze": "two"}, 400), ({"epochs": 5000}, 422)):
        answer = c.post("/finetune", json={**body, "name": "bad", "params": params})
        assert answer.status_code == status, answer.text
    unnamed = {k: v for k, v in body.items() if k != "backbone"}  # the dataset's one backbone, not vgg16
    done = served.wait_job(c.post("/finetune", json={**unnamed, "name": "colors-ft2", "params": {
        "epochs": 2, "unfreeze": 1, "lr": 1e-3}}).json()["job_id"])
    assert done["state"] == "succeeded", done
    head = c.get("/heads/colors-ft2").json()
    assert head["fingerprint"] == done["result"]["fingerprint"] and head["backbone"] == "tiny"
    image = next((served.data / "colors" / "red").iterdir()).read_bytes()
    answer = c.post("/predict", data={"head": "colors-ft2"}, files={"files": ("r.jpg", image, "image/jpeg")})
    assert answer.status_code == 200 and answer.json()["results"][0]["top"], answer.text


def test_compare_job_ranks_backbones(served):
    c = served.client
    served.wait_job(c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                             "weights": "random"}).json()["job_id"])
    body = {"dataset": "colors", "backbones": ["tiny", "vgg16"], "weights": "random", "sample": 30}
    accepted = c.post("/compare", json=body)
    assert accepted.status_code == 202, accepted.text
    done = served.wait_job(accepted.json()["job_id"])
    assert done["state"] == "succeeded", done
    assert done["done"] == done["total"] == 2  # before: a finished compare showed 1 of 2 (its last start)
    rows = done["result"]["rows"]
    assert [r["rank"] for r in rows] == [1, 2] and {r["backbone"] for r in rows} == {"tiny", "vgg16"}
    assert all(r["C"] > 0 and 0 <= r["val_accuracy"] <= 1 for r in rows)
    again = served.wait_job(c.post("/compare", json=body).json()["job_id"])
    assert all(r["extracted_now"] == 0 for r in again["result"]["rows"])
    for bad, status in (({**body, "backbones": ["vgg61"]}, 422), ({**body, "dataset": "nope"}, 404),
                        ({**body, "backbones": []}, 422)):
        assert c.post("/compare", json=bad).status_code == status


def test_thumbnails_of_member_images_only(served):
    import hashlib
    import io

    from PIL import Image

    c = served.client
    served.wait_job(c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                             "weights": "random"}).json()["job_id"])
    member = next((served.data / "colors" / "red").iterdir())
    sha = hashlib.sha256(member.read_bytes()).hexdigest()
    url = f"/datasets/colors/images/{sha}/thumbnail"
    got = c.get(url, params={"size": 32})
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(got.content))
    assert img.format == "JPEG" and max(img.size) == 32  # 64x48 shrunk to fit, aspect kept
    assert img.size == (32, 24)
    assert (served.home / "thumbnails" / sha[:2] / f"{sha}-32.jpg").is_file()  # kept on disk
    assert c.get(url, params={"size": 32}).content == got.content
    outsider = next((served.data / "slow" / "a").iterdir())  # in the data root, in no dataset yet
    other = hashlib.sha256(outsider.read_bytes()).hexdigest()
    assert c.get(f"/datasets/colors/images/{other}/thumbnail").status_code == 404
    assert c.get(f"/datasets/nope/images/{sha}/thumbnail").status_code == 404
    for bad in ("../../etc/passwd", sha[:-1], sha.upper()):
        assert c.get(f"/datasets/colors/images/{bad}/thumbnail").status_code in (404, 422)
    assert c.get(url, params={"size": 4096}).status_code == 422
    changed = sorted((served.data / "colors" / "red").iterdir())[-1]  # replaced on disk after extraction
    old = hashlib.sha256(changed.read_bytes()).hexdigest()
    original = changed.read_bytes()
    changed.write_bytes(outsider.read_bytes())
    try:
        answer = c.get(f"/datasets/colors/images/{old}/thumbnail", params={"size": 40})
        assert 400 <= answer.status_code < 500 and "changed" in answer.json()["detail"]  # never other bytes
    finally:
        changed.write_bytes(original)


def test_metrics_keep_their_names_and_count_extract_throughput_per_engine(served):
    from prometheus_client.parser import text_string_to_metric_families

    c = served.client
    job = served.wait_job(c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                                   "weights": "random"}).json()["job_id"])
    assert job["state"] == "succeeded"
    answer = c.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(answer.text) for s in family.samples}
    names = {name for name, _ in samples}
    assert {"headstart_requests_total", "headstart_request_seconds_bucket", "headstart_jobs_total",
            "headstart_images_extracted_total", "headstart_job_seconds_count", "headstart_jobs_running",
            "headstart_extract_seconds_total", "headstart_extract_images_per_second"} <= names
    assert not any(name.endswith("_created") for name in names)
    local = (("engine", "local"),)
    assert samples[("headstart_jobs_total", (("engine", "local"), ("kind", "extract"), ("state", "succeeded")))] >= 1
    assert samples[("headstart_job_seconds_count", (("engine", "local"), ("kind", "extract"),
                                                    ("state", "succeeded")))] >= 1
    assert samples[("headstart_jobs_running", (("engine", "local"), ("kind", "extract")))] == 0
    tiny = (("backbone", "tiny"), *local)
    assert samples[("headstart_images_extracted_total", tiny)] >= 45  # the first extraction computed 45
    assert samples[("headstart_extract_seconds_total", tiny)] > 0
    assert samples[("headstart_extract_images_per_second", tiny)] >= 0
    openmetrics = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
