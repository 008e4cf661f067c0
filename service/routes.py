"""HTTP routes: thin handlers that validate, call the packages off the event loop, and shape JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from classifiers.persist import delete, head_dir, heads_dir, list_heads, read_manifest, rollback
from classifiers.predict import top_k
from extractor.backbones import describe
from extractor.decode import DecodeError, Limits
from service import thumbnails, work
from service.batcher import ModelFailure
from service.jobs import MAX_FAILURES_SHOWN
from service.schemas import (
    ERROR_RESPONSES,
    NAME,
    CompareRequest,
    ExtractRequest,
    FinetuneRequest,
    HeadRequest,
    JobAccepted,
)

router = APIRouter(responses=ERROR_RESPONSES)
JobState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "interrupted"]
JOB_ID = PathParam(pattern=r"^[0-9a-f]{1,32}$")
HEAD_NAME = PathParam(pattern=NAME)


def state(request: Request):
    return request.app.state


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(request: Request) -> JSONResponse:
    def probe() -> None:
        s = state(request)
        s.store.catalog.dataset_names()
        marker = s.store.home / ".ready-probe"
        marker.write_text("ok")
        marker.unlink()

    try:
        await run_in_threadpool(probe)
    except Exception:
        return JSONResponse({"detail": "store or catalog is not usable (read-only or missing home?)"}, 503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    body, content_type = state(request).metrics.render(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})


@router.get("/backbones", tags=["catalog"])
async def backbones(every: bool = Query(False, alias="all", description="every torchvision model too")) -> list[dict]:
    return describe(every)


@router.get("/datasets", tags=["catalog"])
async def datasets(request: Request) -> list[dict]:
    rows = await run_in_threadpool(state(request).store.overview, True, MAX_FAILURES_SHOWN)
    root = state(request).settings.data_root.resolve()

    def relative(text: str | None) -> str | None:  # server paths never leave the server
        path = Path(text) if text else None
        return path.relative_to(root).as_posix() if path and path.is_relative_to(root) else None

    for row in rows:
        row["path"] = relative(row.pop("root"))
        row["sources"] = [{"path": relative(s["root"]), "kind": s["kind"], "labels_csv": relative(s["labels_csv"]),
                           "prefix": s["prefix"]} for s in row["sources"]]
    return rows


@router.get("/datasets/{name}/images/{sha256}/thumbnail", tags=["catalog"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG at most size x size"}})
async def thumbnail(request: Request, name: str = PathParam(pattern=NAME),
                    sha256: str = PathParam(pattern=r"^[0-9a-f]{64}$"),
                    size: int = Query(160, ge=32, le=512, description="longest side in pixels")) -> Response:
    """A small JPEG of a dataset's member image (by content hash): read inside the data root, checked against its
    hash, decoded within the limits, kept on disk in the home. Only images of the dataset can be shown."""
    s = state(request)
    file = await run_in_threadpool(thumbnails.member_file, s.store, s.settings.data_root, name, sha256)
    kept = thumbnails.cached(s.store, sha256, size)
    if kept.is_file():
        data = await run_in_threadpool(kept.read_bytes)
    else:
        data = await s.decoder.run(thumbnails.make, s.store, file, sha256, size,
                                   Limits(max_pixels=s.settings.max_pixels))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/extract", status_code=202, response_model=JobAccepted, tags=["jobs"])
async def extract(body: ExtractRequest, request: Request) -> JobAccepted:
    job_id, created = await run_in_threadpool(state(request).runner.submit_extract, body.model_dump())
    return JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}", created=created)


@router.get("/jobs", tags=["jobs"])
async def jobs(request: Request, response: Response, state_: JobState | None = Query(None, alias="state"),
               limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)) -> list[dict]:
    """Jobs newest first, `limit` at a time from `offset`; the X-Total-Count header counts them all."""
    runner = state(request).runner
    states = (state_,) if state_ else None
    response.headers["X-Total-Count"] = str(await run_in_threadpool(runner.store.catalog.count_jobs, states))
    return await run_in_threadpool(runner.list, states, limit, offset)


@router.get("/jobs/{job_id}", tags=["jobs"])
async def job(request: Request, job_id: str = JOB_ID) -> dict:
    return await run_in_threadpool(state(request).runner.get, job_id)


@router.delete("/jobs/{job_id}", tags=["jobs"])
async def cancel_job(request: Request, job_id: str = JOB_ID) -> dict:
    return await run_in_threadpool(state(request).runner.cancel, job_id)


@router.post("/jobs/{job_id}/resume", tags=["jobs"])
async def resume_job(request: Request, job_id: str = JOB_ID) -> dict:
    return await run_in_threadpool(state(request).runner.resume, job_id)


@router.post("/heads", status_code=201, tags=["heads"])
async def create_head(body: HeadRequest, request: Request):
    s = state(request)
    if body.background:
        job_id, created = await run_in_threadpool(s.runner.submit_train, body.model_dump())
        return JSONResponse(JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}", created=created).model_dump(),
                            202)

    def now() -> dict:
        with s.runner.slot.hold(wait=False):  # one training at a time on the device: 429 when taken
            return work.train(s.store, s.settings, body.model_dump())

    try:
        manifest = await run_in_threadpool(now)
    except (RuntimeError, MemoryError) as exc:  # CUDA out of memory and friends
        raise ModelFailure(f"training failed in the model ({type(exc).__name__}); retry later") from None
    s.models.forget(body.name)
    return _public(manifest)


# per split, what grows with the classes squared or linearly: in GET /heads/{name}, not in the list (1000 classes
# made 2 x 1,000,000 matrix cells per head, megabytes of JSON for each head in every list)
DETAIL_METRICS = ("confusion_matrix", "per_class", "labels")


def _public(manifest: dict, brief: bool = False) -> dict:
    keep = ("name", "kind", "params", "classes", "backbone", "dataset", "dim", "metrics", "created", "split_sizes",
            "views", "trained_on")
    out = {k: manifest.get(k) for k in keep}
    if brief and isinstance(out["metrics"], dict):
        out["metrics"] = {split: {k: v for k, v in m.items() if k not in DETAIL_METRICS} if isinstance(m, dict) else m
                          for split, m in out["metrics"].items()}
    out["fingerprint"] = manifest["fingerprint"]["id"]
    out["weights"] = manifest["weights"] if not manifest["weights"].startswith("/") else "file"
    out["warnings"] = [w.replace(manifest["weights"], out["weights"]) for w in manifest.get("warnings", [])]
    return out


@router.post("/finetune", status_code=202, response_model=JobAccepted, tags=["jobs"])
async def finetune(body: FinetuneRequest, request: Request) -> JobAccepted:
    """Fine-tune the last stages of a backbone with a dense head, as a job (progress per epoch; cancel and resume
    continue from the last finished epoch; a restart too). The result is a head like the others."""
    job_id, created = await run_in_threadpool(state(request).runner.submit_finetune, body.model_dump())
    return JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}", created=created)


@router.post("/compare", status_code=202, response_model=JobAccepted, tags=["jobs"])
async def compare(body: CompareRequest, request: Request) -> JobAccepted:
    """Rank backbones on a dataset, as a job: each backbone's features (extracted once, cached), a logreg probe
    with C chosen on val; the result holds the ranked rows (val/test accuracy, F1, dim, img/s, cache size)."""
    job_id, created = await run_in_threadpool(state(request).runner.submit_compare, body.model_dump())
    return JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}", created=created)


@router.get("/heads", tags=["heads"])
async def heads(request: Request) -> list[dict]:
    """Every head; one that fails its checks is listed with its `error` (it never hides the others)."""
    root, scrub = heads_dir(state(request).store), request.app.state.scrub

    def read() -> list[dict]:
        return [{"name": m["name"], "error": scrub(m["error"])} if "error" in m else _public(m, brief=True)
                for m in list_heads(root)]

    return await run_in_threadpool(read)


@router.post("/heads/{name}/rollback", tags=["heads"])
async def rollback_head(request: Request, name: str = HEAD_NAME) -> dict:
    """Make the version that the last save replaced current again (a second rollback undoes the first)."""
    manifest = await run_in_threadpool(rollback, heads_dir(state(request).store), name)
    state(request).models.forget(name)
    return _public(manifest)


@router.get("/heads/{name}", tags=["heads"])
async def get_head(request: Request, name: str = HEAD_NAME) -> dict:
    root = heads_dir(state(request).store)
    manifest = await run_in_threadpool(lambda: read_manifest(head_dir(root, name)))
    return {**_public(manifest), "history": manifest.get("history", [])}


@router.post("/extract/preview", tags=["jobs"])
async def extract_preview(body: ExtractRequest, request: Request) -> dict:
    """How an extract of this request would read its folder, as `extract --dry-run`: the classes and their counts,
    where the splits come from, failures known from the listing, warnings. No image is read, no model loaded,
    nothing registered; the same refusals as `POST /extract` (a path outside the data root, a folder without
    images, a dataset redefined without `redefine`)."""
    s, scrub = state(request), request.app.state.scrub

    def run() -> dict:
        from extractor.definition import Wanted
        from extractor.preview import preview_extract
        from service.job_kinds import read_options

        r = body.model_dump()
        p = preview_extract(s.store, r["dataset"], Wanted(**read_options(s.runner, r)), r.get("split"), r.get("seed"))
        p["root"] = r["path"]  # the server's paths never leave it
        p["sources"], p["warnings"] = [scrub(x) for x in p["sources"]], [scrub(w) for w in p["warnings"]]
        p["failures"] = [{"path": f["path"], "reason": scrub(f["reason"])} for f in p["failures"][:MAX_FAILURES_SHOWN]]
        return p

    return await run_in_threadpool(run)


@router.delete("/datasets/{name}", tags=["catalog"])
async def delete_dataset(request: Request, name: str = PathParam(pattern=NAME),
                         prune: bool = Query(False, description="then delete the cached features no dataset needs")
                         ) -> dict:
    """Forget a dataset (its definition, members and failures), as `headstart datasets rm`: its cached vectors stay
    until a prune, heads trained on it still predict. 409 while a job for it is queued or running, or an extraction
    of it runs."""
    from service.cli_admin import remove_dataset

    return await run_in_threadpool(remove_dataset, state(request).store, name, prune)


@router.delete("/heads/{name}", tags=["heads"])
async def delete_head(request: Request, name: str = HEAD_NAME) -> dict:
    await run_in_threadpool(delete, heads_dir(state(request).store), name)
    state(request).models.forget(name)
    return {"deleted": name}


@router.post("/predict", tags=["predict"])
async def predict(request: Request, files: list[UploadFile] = File(...), head: str = Form(..., pattern=NAME),
                  top_k_: int = Form(3, alias="top_k", ge=1, le=100)) -> dict:
    s = state(request)
    if len(files) > s.settings.max_files:
        raise HTTPException(413, f"{len(files)} files in one request; at most {s.settings.max_files}")
    model, _, batcher = await run_in_threadpool(s.models.head, head)
    limits = Limits(max_bytes=s.settings.max_upload_bytes, max_pixels=s.settings.max_upload_pixels)
    size = batcher.backbone.resolved.size
    method = batcher.backbone.resolved.preprocess.method if batcher.backbone.resolved.device_decode else None
    batcher.announce(len(files))

    async def one(upload: UploadFile) -> dict:
        name = Path(upload.filename or "upload").name[:200]
        try:
            array = await s.decoder.image(await upload.read(), size, limits, method)
        except DecodeError as exc:
            batcher.announce(-1)
            return {"file": name, "error": str(exc), "status": exc.status}
        vector = await batcher.submit(array)
        return {"file": name, "top": top_k(model.predict_proba(vector[None])[0], model.classes_, top_k_)}

    results = await asyncio.gather(*(one(f) for f in files))
    if all("error" in r for r in results):
        raise HTTPException(results[0]["status"], "; ".join(f"{r['file']}: {r['error']}" for r in results))
    return {"head": head, "results": results}
