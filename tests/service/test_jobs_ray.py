"""A service extract job on the Ray engine (HEADSTART_ENGINE=ray): progress, cancel that stops the Ray work,
resume, and the engine label on the job metrics."""

from __future__ import annotations

import time

from extractor.store import FeatureStore
from tests.conftest import actor_pids, make_folder
from tests.service.test_jobs import runner_for, wait


def test_a_ray_extract_job_reports_progress_cancels_and_resumes(ray_cluster, tmp_path):
    make_folder(tmp_path / "data" / "many", {"a": 50, "b": 50, "c": 50})
    runner = runner_for(tmp_path, engine="ray", ray_address=None, extract_batch_size=4)
    runner.start()
    request = {"dataset": "many", "path": "many", "backbone": "vgg16", "size": 64, "weights": "random"}
    job_id = runner.submit_extract(request)[0]
    view = wait(runner, job_id, ("running",))
    deadline = time.monotonic() + 120
    while not (view.get("phase") == "extracting" and 0 < view["done"] < view["total"]):
        assert time.monotonic() < deadline and view["state"] == "running", view
        time.sleep(0.02)
        view = runner.get(job_id)
    assert view["total"] == 150 and view["images_per_second"] > 0
    assert actor_pids(), "the forward runs in Ray actors"
    runner.cancel(job_id)
    cancelled = wait(runner, job_id, ("cancelled",), timeout=60)
    kept = cancelled["result"]["extracted"]
    assert 0 < kept < 150
    deadline = time.monotonic() + 30
    while actor_pids() and time.monotonic() < deadline:  # the Ray work stops with the job
        time.sleep(0.2)
    assert not actor_pids()
    runner.resume(job_id)
    done = wait(runner, job_id, ("succeeded",), timeout=180)
    assert done["result"]["extracted"] == 150 - kept and done["result"]["device"] == "ray"
    fp = done["result"]["fingerprint"]
    assert len(FeatureStore(tmp_path / "home").table("many", fp).paths) == 150
    text = runner.metrics.render()[0].decode()
    # views as a job on the cluster too: the clean vectors are cached, only the views are computed
    views = wait(runner, runner.submit_extract({**request, "augment": "crop", "views": 1})[0], ("succeeded",
                                                                                              "failed"), timeout=180)
    runner.stop(10)
    assert 'headstart_jobs_total{engine="ray",kind="extract",state="succeeded"} 1.0' in text
    assert views["state"] == "succeeded", views["error"]
    train = sum(1 for m in FeatureStore(tmp_path / "home").catalog.members("many") if m[3] == "train")
    assert views["result"]["extracted"] == 0 and views["result"]["views"]["computed"] == train > 0
