"""The FastAPI application: `create_app(settings)` wires store, job runner, models, safety and metrics."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from classifiers.persist import clean_leftovers, heads_dir
from extractor.errors import HeadstartError, TooBusy
from extractor.model import resolve_device
from extractor.store import FeatureStore
from service import docs, routes_scores, security, webui
from service.batcher import Models
from service.cli import version
from service.decoding import Decoder
from service.jobs import JobRunner
from service.metrics import Metrics, MetricsMiddleware
from service.routes import router
from service.schemas import params_error
from service.settings import Settings, load_settings

log = logging.getLogger("headstart.api")


def _error_handlers(app: FastAPI, scrub: security.Scrubber) -> None:
    """Every error is `{"detail": ...}` with its status: no stack trace, no server path."""

    @app.exception_handler(HeadstartError)
    async def headstart_error(request: Request, exc: HeadstartError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooBusy) else None
        return JSONResponse({"detail": scrub(exc.for_api())}, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and why; the offending input is not echoed (it may be NaN, which JSON cannot carry)."""
        one_line = params_error(exc.errors())
        if one_line:  # bad head or fine-tuning parameters: 400 and the command line's words
            return JSONResponse({"detail": one_line}, 400)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(security.PathRefused)
    async def path_refused(request: Request, exc: security.PathRefused) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, 500)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    resolve_device(settings.device)  # a bad HEADSTART_DEVICE stops the start, not the first request
    store = FeatureStore(settings.home)
    metrics = Metrics()
    scrub = security.Scrubber({settings.data_root: "<data>", settings.home: "<home>"})
    runner = JobRunner(store, settings, metrics, partial(security.confine, settings.data_root), scrub)
    models = Models(heads_dir(store), settings.device, settings.backbone_cache, settings.head_cache,
                    settings.predict_max_batch, settings.predict_max_wait_ms / 1000, metrics)

    decoder = Decoder(settings.decode_threads, settings.decode_memory_mb << 20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(clean_leftovers, heads_dir(store))  # what a kill -9 mid-save or mid-delete left
        runner.start()
        yield
        await run_in_threadpool(runner.stop, settings.shutdown_grace_s)  # checkpoint the running job
        models.close()
        decoder.close()

    app = FastAPI(title="headstart", version=version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Extract bottleneck features, train heads, predict images. Every endpoint but "
                              "/healthz, /docs and /openapi.json needs `Authorization: Bearer <key>` when the "
                              "server has an API key (use the Authorize button). The web page is at /ui.")
    docs.mount(app)
    webui.mount(app)
    app.state.settings, app.state.store, app.state.metrics = settings, store, metrics
    app.state.runner, app.state.models, app.state.scrub, app.state.decoder = runner, models, scrub, decoder
    app.include_router(router)
    app.include_router(routes_scores.router)
    _error_handlers(app, scrub)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(security.BodyLimitMiddleware, upload_limit=settings.max_upload_bytes,
                       json_limit=settings.max_json_bytes, upload_paths={"/predict"})
    app.add_middleware(security.AuthMiddleware, api_key=key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(security.HeadersMiddleware)
    return app
