"""Prometheus text metrics: counters and histograms with labels, plus the request-timing ASGI middleware."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
HELP = {
    "headstart_requests_total": ("counter", "HTTP requests by method, route and status"),
    "headstart_request_seconds": ("histogram", "HTTP request latency by route"),
    "headstart_jobs_total": ("counter", "job state transitions by kind and state"),
    "headstart_images_extracted_total": ("counter", "feature vectors computed by extract jobs"),
    "headstart_predict_batch_size": ("histogram", "images per backbone forward in the predict micro-batcher"),
    "headstart_predict_images_total": ("counter", "images predicted"),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    clean = {k: str(v).replace("\\", "/").replace('"', "'") for k, v in labels.items()}
    body = ",".join(f'{k}="{v}"' for k, v in sorted(clean.items()))
    return "{" + body + "}"


class Metrics:
    """Thread-safe in-process registry; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.hists: dict[str, dict[str, list]] = defaultdict(dict)
        self.buckets = {"headstart_request_seconds": LATENCY_BUCKETS, "headstart_predict_batch_size": BATCH_BUCKETS}

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        with self.lock:
            self.counters[name][_labels(labels or {})] += value

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        bounds = self.buckets[name]
        with self.lock:
            key = _labels(labels or {})
            hist = self.hists[name].setdefault(key, [[0] * len(bounds), 0.0, 0])
            index = bisect.bisect_left(bounds, value)
            if index < len(bounds):
                hist[0][index] += 1
            hist[1] += value
            hist[2] += 1

    def render(self) -> str:
        lines = []
        with self.lock:
            for name, (kind, text) in HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in self.counters.get(name, {}).items():
                    lines.append(f"{name}{key} {value:g}")
                for key, (counts, total, n) in self.hists.get(name, {}).items():
                    inner = key[1:-1] + "," if key else ""
                    running = 0
                    for bound, count in zip(self.buckets[name], counts, strict=True):
                        running += count
                        lines.append(f'{name}_bucket{{{inner}le="{bound:g}"}} {running}')
                    lines += [f'{name}_bucket{{{inner}le="+Inf"}} {n}', f"{name}_sum{key} {total:g}",
                              f"{name}_count{key} {n}"]
        return "\n".join(lines) + "\n"


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
