"""Prometheus metrics (prometheus-client, one registry per app) and the request-timing ASGI middleware.

Callers name a metric by its exposed name (`inc("headstart_jobs_total", {...})`), so that the names stay the
contract: every metric below is declared here once, with its labels and its help text."""

from __future__ import annotations

import time

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Receive, Scope, Send

prometheus_client.disable_created_metrics()  # no *_created series: they double every counter for nothing here

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

# exposed name: (type, help, labels, buckets)
DECLARED = {
    "headstart_requests_total": ("counter", "HTTP requests by method, route and status", ("method", "route", "status")),
    "headstart_request_seconds": ("histogram", "HTTP request latency by route", ("route",), LATENCY_BUCKETS),
    "headstart_jobs_total": ("counter", "job state transitions by kind, state and engine", ("kind", "state", "engine")),
    "headstart_job_seconds": ("histogram", "wall time of finished jobs by kind, final state and engine",
                              ("kind", "state", "engine"), JOB_BUCKETS),
    "headstart_jobs_running": ("gauge", "jobs running now by kind and engine", ("kind", "engine")),
    "headstart_images_extracted_total": ("counter", "feature vectors computed by extract jobs", ("backbone", "engine")),
    "headstart_extract_seconds_total": ("counter", "wall seconds of extract runs (the images counter over this "
                                                   "is the throughput)", ("backbone", "engine")),
    "headstart_extract_images_per_second": ("gauge", "the last extract run's throughput (vectors computed per second)",
                                            ("backbone", "engine")),
    "headstart_predict_batch_size": ("histogram", "images per backbone forward in the predict micro-batcher", (),
                                     BATCH_BUCKETS),
    "headstart_predict_images_total": ("counter", "images predicted", ()),
}
KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


class Metrics:
    """The app's metrics; `render()` is the /metrics body (Prometheus text format)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = {}
        for name, (kind, text, labels, *buckets) in DECLARED.items():
            options = {"buckets": buckets[0]} if buckets else {}
            base = name.removesuffix("_total") if kind == "counter" else name
            self.metrics[name] = KINDS[kind](base, text, labels, registry=self.registry, **options)

    def _child(self, name: str, labels: dict[str, str] | None):
        metric = self.metrics[name]
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        self._child(name, labels).inc(value)

    def dec(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        self._child(name, labels).dec(value)

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self._child(name, labels).set(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self._child(name, labels).observe(value)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and its content type, in the format the scraper's Accept header asks for (Prometheus text
        0.0.4 by default, OpenMetrics when asked)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.inc("headstart_requests_total",
                             {"method": scope["method"], "route": path, "status": str(status[0])})
            self.metrics.observe("headstart_request_seconds", time.perf_counter() - start, {"route": path})
