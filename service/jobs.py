"""Job runner: extract and train jobs kept in the catalog, run one at a time by a worker that survives any job's
error. A job's state only moves forward; every unfinished job is found again after a restart; the queue is bounded."""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from extractor.catalog_jobs import FINAL
from extractor.errors import Conflict, HeadstartError, NotFound, Stopped, TooBusy
from extractor.model import resolve
from extractor.store import FeatureStore
from service import job_kinds
from service.metrics import Metrics
from service.settings import Settings
from service.work import TrainingSlot, check_finetune, check_train

log = logging.getLogger("headstart.jobs")
MAX_FAILURES_SHOWN = job_kinds.MAX_FAILURES_SHOWN
RUNNING = ("running", "cancelling")
PRUNE_EVERY_S = 3600.0


class ShuttingDown(HeadstartError):
    status = 503


class JobRunner:
    """One worker thread; job state lives in SQLite so that it outlives the process."""

    def __init__(self, store: FeatureStore, settings: Settings, metrics: Metrics,
                 confine: Callable[[str], Path], scrub: Callable[[str], str], slot: TrainingSlot | None = None) -> None:
        self.store, self.settings, self.metrics = store, settings, metrics
        self.confine, self.scrub = confine, scrub
        self.slot = slot or TrainingSlot()
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.live: dict[str, dict] = {}  # progress of the running job, fresher than the catalog's copy
        self.pending: dict[str, dict] = {}  # final states the catalog refused to write (disk full); retried
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._pruned = 0.0
        self.thread = threading.Thread(target=self._work, name="headstart-jobs", daemon=True)

    def start(self) -> None:
        """Running jobs were interrupted (they resume unless told otherwise), jobs being cancelled are cancelled,
        and every queued job is queued again, oldest first."""
        for job_id in self.store.catalog.recover_jobs(self.settings.resume_interrupted):
            self.queue.put(job_id)
        self._prune()
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; the running job checkpoints its finished batches and becomes `interrupted`."""
        self.stopping.set()
        self.queue.put(None)
        self.thread.join(timeout)

    # --- submitting ------------------------------------------------------------------------------
    def engine(self, kind: str) -> str:
        """Where a job of this kind runs: extract jobs on HEADSTART_ENGINE (local or ray), the others here."""
        return self.settings.engine if kind == "extract" else "local"

    def count(self, kind: str, state: str) -> None:
        self.metrics.inc("headstart_jobs_total", {"kind": kind, "state": state, "engine": self.engine(kind)})

    def submit(self, kind: str, key: str, request: dict) -> tuple[str, bool]:
        """(job id, created). The same key while a job for it is queued or running gives that job."""
        if self.stopping.is_set():
            raise ShuttingDown("the service is shutting down and takes no new jobs; retry after it restarts")
        catalog = self.store.catalog
        with self.lock:
            existing = catalog.active_job(key)
            if existing:
                return existing, False
            queued = catalog.count_jobs(("queued",))
            if queued >= self.settings.max_queued_jobs:
                raise TooBusy(f"{queued} jobs are queued, the most this server holds (HEADSTART_MAX_QUEUED_JOBS); "
                              f"retry when some have run")
            job_id = uuid.uuid4().hex[:16]
            catalog.create_job(job_id, kind, key, json.dumps(request))
        self.count(kind, "queued")
        self.queue.put(job_id)
        return job_id, True

    def submit_extract(self, request: dict) -> tuple[str, bool]:
        self.confine(request["path"])  # refused before anything is queued
        if request.get("labels_csv"):
            self.confine(request["labels_csv"])
        fp = resolve(request["backbone"], request["weights"], request.get("size")).fingerprint
        views = f":{request['augment']}:{request['views']}" if request.get("augment") else ""
        # what is read and how it is labeled and split: another folder (add), other labels or another split is
        # other work, never answered with a job that does not do it
        read = json.dumps([request.get(k) for k in ("path", "labels_csv", "unlabeled", "name_labels", "add",
                                                    "redefine", "split", "seed")])
        read_key = hashlib.sha256(read.encode()).hexdigest()[:12]
        return self.submit("extract", f"extract:{request['dataset']}:{fp.id}{views}:{read_key}", request)

    def submit_finetune(self, request: dict) -> tuple[str, bool]:
        check_finetune(self.store, self.settings, request)
        return self.submit("finetune", f"finetune:{request['name']}", request)

    def submit_compare(self, request: dict) -> tuple[str, bool]:
        if self.store.catalog.dataset(request["dataset"]) is None:
            raise NotFound(f"no dataset {request['dataset']!r}", api="POST /extract first")
        key = f"compare:{request['dataset']}:{','.join(request['backbones'])}:{request.get('sample')}:" \
              f"{request['weights']}"
        return self.submit("compare", key, request)

    def submit_train(self, request: dict) -> tuple[str, bool]:
        check_train(self.store, self.settings, request)  # bad params, caps, missing features: before queueing
        return self.submit("train", f"train:{request['name']}", request)

    def cancel(self, job_id: str) -> dict:
        """Queued or interrupted: cancelled now. Running: `cancelling` until it stops at its next step."""
        catalog = self.store.catalog
        for _ in range(3):  # the worker may take the job between our read and our write
            job = self.get(job_id)
            if job["state"] in FINAL:
                raise Conflict(f"job {job_id} already ended ({job['state']}); nothing to cancel")
            if job["state"] == "cancelling":
                return job
            if job["state"] == "running":
                self.cancelled.add(job_id)
                if catalog.transition_job(job_id, "cancelling", ("running",)):
                    return self.get(job_id)
            elif catalog.transition_job(job_id, "cancelled", ("queued", "interrupted")):
                self.count(job["kind"], "cancelled")
                return self.get(job_id)
        return self.get(job_id)

    def resume(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job["state"] not in ("interrupted", "failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job['state']}; only interrupted, failed or cancelled jobs resume")
        if self.store.catalog.active_job(self.store.catalog.job(job_id)["key"]):
            raise Conflict("another job for the same work is queued or running")
        self.cancelled.discard(job_id)
        if not self.store.catalog.transition_job(job_id, "queued", ("interrupted", "failed", "cancelled"), error=None):
            raise Conflict(f"job {job_id} changed state meanwhile; look at it again")
        self.queue.put(job_id)
        return self.get(job_id)

    # --- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict:
        job = self.store.catalog.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return self._view(job)

    def list(self, states: tuple[str, ...] | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
        return [self._view(j) for j in self.store.catalog.jobs(states, limit, offset)]

    def _view(self, job: dict) -> dict:
        pending = self.pending.get(job["id"])
        if pending:  # the catalog could not be written yet: memory has the truth
            job = {**job, "state": pending["state"], "error": pending["error"],
                   "result": json.dumps(pending["result"]) if pending["result"] is not None else job["result"]}
        progress = self.live.get(job["id"]) or (pending or {}).get("progress") or json.loads(job["progress"] or "{}")
        result = json.loads(job["result"]) if job["result"] else None
        return {"id": job["id"], "kind": job["kind"], "state": job["state"], "request": json.loads(job["request"]),
                "phase": progress.get("phase"), "done": progress.get("done", 0), "total": progress.get("total"),
                "failed": progress.get("failed", 0),
                "images_per_second": progress.get("images_per_second"), "eta_seconds": progress.get("eta_seconds"),
                "val_accuracy": progress.get("val_accuracy"), "train_loss": progress.get("train_loss"),
                "failures": (result or {}).get("failures", []), "result": result, "error": job["error"],
                "created": job["created"], "updated": job["updated"]}

    # --- running ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stopping.is_set():
            if self.pending and not self._flush_pending():
                time.sleep(0.5)  # the catalog cannot be written: run nothing new until it can
                continue
            if time.monotonic() - self._pruned > PRUNE_EVERY_S:
                self._prune()
            try:
                job_id = self.queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if job_id is None:
                break
            try:
                self._run(job_id)
            except Exception:  # never let one job end the worker
                log.exception("job runner: job %s could not be run", job_id)

    def _run(self, job_id: str) -> None:
        job = self.store.catalog.job(job_id)
        if job is None or not self.store.catalog.transition_job(job_id, "running", ("queued",)):
            return  # cancelled, or already taken, meanwhile
        self.count(job["kind"], "running")
        self.metrics.inc("headstart_jobs_running", {"kind": job["kind"], "engine": self.engine(job["kind"])})
        started = time.monotonic()
        try:
            state, result, error = self._execute(job)
        except Stopped:
            state, result, error = ("cancelled" if job_id in self.cancelled else "interrupted"), None, None
        except HeadstartError as exc:
            state, result, error = "failed", None, self.scrub(exc.for_api())
        except Exception as exc:  # a bug or a model failure: the job fails, the service stays up
            log.exception("job %s failed", job_id)
            state, result, error = "failed", None, f"internal error ({type(exc).__name__}); see the server log"
        finally:
            self.metrics.dec("headstart_jobs_running", {"kind": job["kind"], "engine": self.engine(job["kind"])})
        self.metrics.observe("headstart_job_seconds", time.monotonic() - started,
                             {"kind": job["kind"], "state": state, "engine": self.engine(job["kind"])})
        self._finish(job_id, job["kind"], state, result, error)

    def _execute(self, job: dict) -> tuple[str, dict | None, str | None]:
        """Run one job: (final state, result, error)."""
        job_id, request = job["id"], json.loads(job["request"])
        if job["kind"] == "extract":
            return job_kinds.extract(self, job_id, request)
        if job["kind"] == "train":
            return job_kinds.train(self, job_id, request)
        if job["kind"] == "finetune":
            return job_kinds.finetune(self, job_id, request)
        if job["kind"] == "compare":
            return job_kinds.compare(self, job_id, request)
        return "failed", None, f"unknown job kind {job['kind']!r}"

    def should_stop(self, job_id: str) -> bool:
        return self.stopping.is_set() or job_id in self.cancelled

    def report(self, job_id: str, view: dict, last: list[float], final: bool = False) -> None:
        """Keep the running job's progress in memory; write it to the catalog about once a second."""
        self.live[job_id] = view
        if final or time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            try:
                self.store.catalog.update_job(job_id, progress=json.dumps(view))
            except (sqlite3.Error, OSError):  # progress is best effort; the final state is not
                log.warning("job %s: progress not written (catalog not writable)", job_id)

    def _finish(self, job_id: str, kind: str, state: str, result: dict | None, error: str | None) -> None:
        self.count(kind, state)  # before the state shows: whoever sees it and then scrapes /metrics finds it
        progress = self.live.pop(job_id, None)  # the last progress, which the catalog may not have yet
        self.cancelled.discard(job_id)
        self.pending[job_id] = {"state": state, "result": result, "error": error, "progress": progress}
        self._flush_pending()

    def _flush_pending(self) -> bool:
        """Write final states kept in memory; False while the catalog refuses (they are kept and shown)."""
        for job_id, fields in list(self.pending.items()):
            try:
                self.store.catalog.finish_job(job_id, fields["state"], RUNNING, fields["result"], fields["error"],
                                              fields["progress"])
            except (sqlite3.Error, OSError) as exc:
                log.warning("job %s: final state %s not written yet (%s); will retry", job_id, fields["state"], exc)
                return False
            self.pending.pop(job_id, None)
        return True

    def _prune(self) -> None:
        self._pruned = time.monotonic()
        try:
            self.store.catalog.prune_jobs(time.time() - self.settings.job_retention_days * 86400)
        except (sqlite3.Error, OSError):
            log.warning("finished jobs not pruned (catalog not writable)")
