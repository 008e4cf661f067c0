"""What each kind of job does: extract (features into the cache) and train (a head), with progress and stops."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from extractor.decode import Limits
from extractor.errors import Stopped
from extractor.pipeline import ExtractOptions, Progress
from extractor.pipeline import extract as run_extract
from service import work

if TYPE_CHECKING:
    from service.jobs import JobRunner

MAX_FAILURES_SHOWN = 100  # per job or dataset in API answers; `headstart datasets --json` lists every one


def read_options(runner: JobRunner, request: dict) -> dict:
    """What an extract request reads and how it is labeled (extractor.definition.Wanted's fields, paths confined):
    the same for the job and for its preview."""
    return {"data_dir": runner.confine(request["path"]),
            "labels_csv": runner.confine(request["labels_csv"]) if request.get("labels_csv") else None,
            "unlabeled": bool(request.get("unlabeled")), "name_labels": bool(request.get("name_labels")),
            "add": bool(request.get("add")), "redefine": bool(request.get("redefine"))}


def extract(runner: JobRunner, job_id: str, request: dict) -> tuple[str, dict | None, str | None]:
    s = runner.settings
    opts = ExtractOptions(
        **read_options(runner, request), dataset=request["dataset"],
        backbone=request["backbone"], weights=request["weights"],
        size=request.get("size"), dtype=request.get("dtype") or "float32", split=request.get("split"),
        seed=request.get("seed"), batch_size=s.extract_batch_size, workers=s.extract_workers, device=s.device,
        limits=Limits(max_pixels=s.max_pixels), flush_seconds=s.flush_seconds, confine=True,
        augment=request.get("augment"), views=int(request.get("views") or 0),
        decode=request.get("decode") or "auto", engine=s.engine, ray_address=s.ray_address)
    last, deadline, timed_out = [0.0], time.monotonic() + (s.extract_max_seconds or float("inf")), []

    def progress(p: Progress) -> None:
        runner.report(job_id, {"phase": p.phase, "done": p.done, "total": p.total, "failed": p.failed,
                               "images_per_second": round(p.rate, 2),
                               "eta_seconds": None if p.eta is None else round(p.eta, 1)}, last, p.done == p.total)

    def should_stop() -> bool:
        if time.monotonic() > deadline:
            timed_out.append(True)
            return True
        return runner.should_stop(job_id)

    summary = _recorded(runner, request, run_extract(opts, runner.store, progress=progress,
                                                     should_stop=should_stop).to_dict())
    if summary["stopped"]:
        if timed_out:
            return "failed", summary, (f"stopped after {s.extract_max_seconds:g} s, the limit of "
                                       f"HEADSTART_EXTRACT_MAX_SECONDS; finished batches are kept: resume the job "
                                       f"to go on")
        return ("cancelled" if job_id in runner.cancelled else "interrupted"), summary, None
    usable = summary["extracted"] + summary["cached"]
    if not usable and summary["failures"]:
        first = summary["failures"][0]
        return "failed", summary, (f"none of the {summary['failed']} images could be used; first: "
                                   f"{first['path']}: {first['reason']}")
    return "succeeded", summary, None


def _recorded(runner: JobRunner, request: dict, summary: dict) -> dict:
    """An extract's summary counted in the metrics, then cut to what a job shows, its paths scrubbed."""
    labels = {"backbone": request["backbone"], "engine": runner.settings.engine}
    runner.metrics.inc("headstart_images_extracted_total", labels, summary["extracted"])
    runner.metrics.inc("headstart_extract_seconds_total", labels, summary["seconds"])
    if summary["extracted"]:
        runner.metrics.set("headstart_extract_images_per_second", summary["extracted"] / max(summary["seconds"], 1e-9),
                           labels)
    summary["failures"] = summary["failures"][:MAX_FAILURES_SHOWN]  # `failed` counts them all
    for item in summary["failures"]:
        item["path"] = runner.scrub(item["path"])
    summary["warnings"] = [runner.scrub(w) for w in summary["warnings"]]
    return summary


def train(runner: JobRunner, job_id: str, request: dict) -> tuple[str, dict | None, str | None]:
    started, last = time.monotonic(), [0.0]

    def on_epoch(row: dict, epochs: int) -> None:
        elapsed = time.monotonic() - started
        rate = row["epoch"] / elapsed if elapsed > 0 else 0.0
        runner.report(job_id, {"phase": "training", "done": row["epoch"], "total": epochs,
                               "val_accuracy": row.get("val_acc"), "train_loss": round(row["train_loss"], 6),
                               "eta_seconds": round((epochs - row["epoch"]) / rate, 1) if rate else None}, last)

    with runner.slot.hold(wait=True):  # one training at a time on the device; a job waits its turn
        runner.report(job_id, {"phase": "training", "done": 0, "total": None}, last, final=True)
        manifest = work.train(runner.store, runner.settings, request, lambda: runner.should_stop(job_id), on_epoch)
    return "succeeded", {"name": manifest["name"], "metrics": manifest["metrics"]}, None


def finetune(runner: JobRunner, job_id: str, request: dict) -> tuple[str, dict | None, str | None]:
    """A fine-tuning job: its checkpoint makes cancel + resume, and a restart, continue from the last epoch."""
    from classifiers.finetune import Request
    from classifiers.finetune import finetune as run_finetune
    from classifiers.heads import Monitor

    s, started, last, timed_out = runner.settings, time.monotonic(), [0.0], []
    state = {"val_accuracy": None}

    def should_stop() -> bool:
        if time.monotonic() - started > s.finetune_max_seconds:
            timed_out.append(True)
            return True
        return runner.should_stop(job_id)

    def on_epoch(row: dict, epochs: int) -> None:
        state["val_accuracy"] = row["val_acc"]

    def progress(e) -> None:
        rate = e.batch / e.elapsed if e.elapsed > 0 else 0.0
        runner.report(job_id, {"phase": "finetuning", "epoch": e.epoch, "done": e.epoch - 1, "total": e.epochs,
                               "batch": e.batch, "batches": e.batches, "train_loss": round(e.loss, 6),
                               "val_accuracy": state["val_accuracy"],
                               "eta_seconds": round((e.batches - e.batch) / rate, 1) if rate else None}, last)

    with runner.slot.hold(wait=True):
        try:
            manifest = run_finetune(runner.store, Request(request["dataset"], request["backbone"], request["name"],
                                                          request.get("weights"), request.get("params") or {},
                                                          s.device, s.extract_workers, bool(request.get("restart"))),
                                    Monitor(should_stop=should_stop, on_epoch=on_epoch), progress)
        except Stopped:
            if timed_out:
                return "failed", None, (f"stopped after {s.finetune_max_seconds:g} s, the limit of "
                                        f"HEADSTART_FINETUNE_MAX_SECONDS; the last finished epoch is kept: resume "
                                        f"the job to go on")
            raise
    return "succeeded", {"name": manifest["name"], "metrics": manifest["metrics"],
                         "fingerprint": manifest["fingerprint"]["id"], "finetune": manifest["finetune"]}, None


def compare(runner: JobRunner, job_id: str, request: dict) -> tuple[str, dict | None, str | None]:
    """A compare job: extraction per backbone (cancel stops it between batches), then a probe on each."""
    from classifiers.compare import compare as run_compare

    last = [0.0]

    def progress(name: str, done: int, total: int) -> None:
        runner.report(job_id, {"phase": f"backbone {name}", "done": done, "total": total}, last, final=True)

    with runner.slot.hold(wait=True):
        rows = run_compare(runner.store, request["dataset"], request["backbones"], request.get("sample"),
                           request["weights"], runner.settings.device, progress,
                           should_stop=lambda: runner.should_stop(job_id))
    if runner.should_stop(job_id):
        raise Stopped("compare stopped")
    runner.report(job_id, {"phase": "ranked", "done": len(rows), "total": len(rows)}, last, final=True)
    return "succeeded", {"dataset": request["dataset"], "sample": request.get("sample"), "rows": rows}, None
