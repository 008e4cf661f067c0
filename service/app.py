"""The FastAPI application: `create_app(settings)` wires store, job runner, models, safety and metrics."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from classifiers.training import heads_dir
from extractor.errors import HeadstartError
from extractor.model import resolve_device
from extractor.store import FeatureStore
from service import security
from service.batcher import Models
from service.jobs import JobRunner
from service.metrics import Metrics, MetricsMiddleware
from service.routes import router
from service.settings import Settings, load_settings

log = logging.getLogger("headstart.api")


def _error_handlers(app: FastAPI, scrub: security.Scrubber) -> None:
    """Every error is `{"detail": ...}` with its status: no stack trace, no server path."""

    @app.exception_handler(HeadstartError)
    async def headstart_error(request: Request, exc: HeadstartError) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc))}, exc.status)

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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        yield
        await run_in_threadpool(runner.stop, settings.shutdown_grace_s)  # checkpoint the running job
        models.close()

    app = FastAPI(title="headstart", version="0.1.0", lifespan=lifespan,
                  description="Extract bottleneck features, train heads, predict images.")
    app.state.settings, app.state.store, app.state.metrics = settings, store, metrics
    app.state.runner, app.state.models = runner, models
    app.include_router(router)
    _error_handlers(app, scrub)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(security.BodyLimitMiddleware, upload_limit=settings.max_upload_bytes,
                       json_limit=settings.max_json_bytes, upload_paths={"/predict"})
    app.add_middleware(security.AuthMiddleware, api_key=key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
