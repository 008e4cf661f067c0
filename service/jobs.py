"""Job runner: extract and train jobs kept in the catalog, run one at a time, resumed after a restart."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from classifiers.training import train_head
from extractor.decode import Limits
from extractor.errors import Conflict, HeadstartError, NotFound
from extractor.model import resolve
from extractor.pipeline import ExtractOptions, Progress, extract
from extractor.store import FeatureStore
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("headstart.jobs")
ACTIVE, FINAL = ("queued", "running"), ("succeeded", "failed", "cancelled")
MAX_FAILURES_SHOWN = 100  # per job or dataset in API answers; `headstart datasets --json` lists every one


class ShuttingDown(HeadstartError):
    status = 503


class JobRunner:
    """One worker thread; job state lives in SQLite so that it outlives the process."""

    def __init__(self, store: FeatureStore, settings: Settings, metrics: Metrics,
                 confine: Callable[[str], Path], scrub: Callable[[str], str]) -> None:
        self.store, self.settings, self.metrics = store, settings, metrics
        self.confine, self.scrub = confine, scrub
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.live: dict[str, dict] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name="headstart-jobs", daemon=True)

    def start(self) -> None:
        """Jobs that were running when the process died are `interrupted`; they resume unless told otherwise."""
        catalog = self.store.catalog
        for job in catalog.jobs(("running",)):
            catalog.update_job(job["id"], state="interrupted")
        for job in reversed(catalog.jobs(("queued", "interrupted"))):
            if job["state"] == "queued" or self.settings.resume_interrupted:
                catalog.update_job(job["id"], state="queued")
                self.queue.put(job["id"])
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; the running job checkpoints its finished batches and becomes `interrupted`."""
        self.stopping.set()
        self.queue.put(None)
        self.thread.join(timeout)

    # --- submitting ------------------------------------------------------------------------------
    def submit(self, kind: str, key: str, request: dict) -> tuple[str, bool]:
        """(job id, created). The same key while a job for it is queued or running gives that job."""
        if self.stopping.is_set():
            raise ShuttingDown("the service is shutting down and takes no new jobs; retry after it restarts")
        with self.lock:
            existing = self.store.catalog.active_job(key)
            if existing:
                return existing, False
            job_id = uuid.uuid4().hex[:16]
            self.store.catalog.create_job(job_id, kind, key, json.dumps(request))
        self.metrics.inc("headstart_jobs_total", {"kind": kind, "state": "queued"})
        self.queue.put(job_id)
        return job_id, True

    def submit_extract(self, request: dict) -> tuple[str, bool]:
        self.confine(request["path"])  # refused before anything is queued
        if request.get("labels_csv"):
            self.confine(request["labels_csv"])
        fp = resolve(request["backbone"], request["weights"], request.get("size")).fingerprint
        return self.submit("extract", f"extract:{request['dataset']}:{fp.id}", request)

    def cancel(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job["state"] in FINAL:
            raise Conflict(f"job {job_id} already ended ({job['state']}); nothing to cancel")
        self.cancelled.add(job_id)
        if job["state"] in ("queued", "interrupted"):
            self._finish(job_id, job["kind"], "cancelled")
        return self.get(job_id)

    def resume(self, job_id: str) -> dict:
        job = self.store.catalog.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job["state"] not in ("interrupted", "failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job['state']}; only interrupted, failed or cancelled jobs resume")
        if self.store.catalog.active_job(job["key"]):
            raise Conflict(f"another job for the same work is already {job['state']}")
        self.cancelled.discard(job_id)
        self.store.catalog.update_job(job_id, state="queued", error=None)
        self.queue.put(job_id)
        return self.get(job_id)

    # --- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict:
        job = self.store.catalog.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return self._view(job)

    def list(self) -> list[dict]:
        return [self._view(j) for j in self.store.catalog.jobs()]

    def _view(self, job: dict) -> dict:
        progress = self.live.get(job["id"]) or json.loads(job["progress"] or "{}")
        result = json.loads(job["result"]) if job["result"] else None
        return {"id": job["id"], "kind": job["kind"], "state": job["state"], "request": json.loads(job["request"]),
                "phase": progress.get("phase"), "done": progress.get("done", 0), "total": progress.get("total"),
                "images_per_second": progress.get("images_per_second"), "eta_seconds": progress.get("eta_seconds"),
                "failures": (result or {}).get("failures", []), "result": result, "error": job["error"],
                "created": job["created"], "updated": job["updated"]}

    # --- running ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stopping.is_set():
            job_id = self.queue.get()
            if job_id is None:
                break
            job = self.store.catalog.job(job_id)
            if job is None or job["state"] != "queued" or job_id in self.cancelled:
                continue
            self._run(job)

    def _run(self, job: dict) -> None:
        job_id, kind = job["id"], job["kind"]
        self.store.catalog.update_job(job_id, state="running")
        request = json.loads(job["request"])
        try:
            if kind == "extract":
                summary = self._extract(job_id, request)
                state = "succeeded" if not summary["stopped"] else (
                    "cancelled" if job_id in self.cancelled else "interrupted")
                usable = summary["extracted"] + summary["cached"]
                error = None
                if state == "succeeded" and not usable and summary["failures"]:
                    first = summary["failures"][0]
                    state, error = "failed", (f"none of the {summary['failed']} images could be used; first: "
                                              f"{first['path']}: {first['reason']}")
                self._finish(job_id, kind, state, result=summary, error=error)
            else:
                manifest = train_head(self.store, request["dataset"], request["backbone"], request["head"],
                                      request["name"], request.get("params") or {}, request.get("weights"),
                                      self.settings.device)
                self._finish(job_id, kind, "succeeded", result={"name": manifest["name"],
                                                                 "metrics": manifest["metrics"]})
        except HeadstartError as exc:
            self._finish(job_id, kind, "failed", error=self.scrub(str(exc)))
        except Exception as exc:  # a bug or a model failure: the job fails, the service stays up
            log.exception("job %s failed", job_id)
            self._finish(job_id, kind, "failed", error=f"internal error ({type(exc).__name__}); see the server log")

    def _finish(self, job_id: str, kind: str, state: str, result: dict | None = None, error: str | None = None):
        self.live.pop(job_id, None)
        fields = {"state": state, "error": error}
        if result is not None:
            fields["result"] = json.dumps(result)
        self.store.catalog.update_job(job_id, **fields)
        self.metrics.inc("headstart_jobs_total", {"kind": kind, "state": state})

    def _extract(self, job_id: str, request: dict) -> dict:
        s = self.settings
        opts = ExtractOptions(
            data_dir=self.confine(request["path"]), dataset=request["dataset"],
            labels_csv=self.confine(request["labels_csv"]) if request.get("labels_csv") else None,
            unlabeled=bool(request.get("unlabeled")), backbone=request["backbone"], weights=request["weights"],
            size=request.get("size"), dtype=request.get("dtype") or "float32", split=request.get("split"),
            seed=request.get("seed"), batch_size=s.extract_batch_size, workers=s.extract_workers, device=s.device,
            limits=Limits(max_pixels=s.max_pixels), flush_seconds=s.flush_seconds, confine=True,
            add=bool(request.get("add")), redefine=bool(request.get("redefine")))
        last = [0.0]

        def progress(p: Progress) -> None:
            view = {"phase": p.phase, "done": p.done, "total": p.total, "failed": p.failed,
                    "images_per_second": round(p.rate, 2), "eta_seconds": None if p.eta is None else round(p.eta, 1)}
            self.live[job_id] = view
            if time.monotonic() - last[0] > 1.0 or p.done == p.total:
                last[0] = time.monotonic()
                self.store.catalog.update_job(job_id, progress=json.dumps(view))

        def should_stop() -> bool:
            return self.stopping.is_set() or job_id in self.cancelled

        summary = extract(opts, self.store, progress=progress, should_stop=should_stop).to_dict()
        self.metrics.inc("headstart_images_extracted_total", {"backbone": request["backbone"]}, summary["extracted"])
        summary["failures"] = summary["failures"][:MAX_FAILURES_SHOWN]  # `failed` counts them all
        for item in summary["failures"]:
            item["path"] = self.scrub(item["path"])
        return summary
