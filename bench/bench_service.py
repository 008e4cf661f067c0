"""Service benchmark: a real uvicorn server on 127.0.0.1, vgg16 (random weights) + logreg head.

Single-client predict latency (p50, p99) against the bare single-image forward measured in the same run,
and 8 concurrent clients' throughput (each client on its own kept connection) against the single client's,
with the micro-batch sizes seen. The ceiling ratio is what micro-batching could give at most on this
device: the bare forward of a whole batch, per image, against the single client's throughput.

    python bench/bench_service.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_extract import make_jpegs  # noqa: E402
from classifiers.training import train_head  # noqa: E402
from extractor.model import LoadedBackbone, resolve  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402


def bare_forward_ms(device: str, batch: int = 1, repeats: int = 15) -> float:
    """Median ms per image of the model alone on `batch` preprocessed images, on the server's device."""
    model = LoadedBackbone(resolve("vgg16", "random"), device).setup()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(batch)]
    model.embed_arrays(images)  # returns host arrays, so each call waits for the device
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.embed_arrays(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / batch


def start_server(home: Path, data: Path, device: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A real `headstart serve` on a free loopback port (no API key unless `env` sets one): (process, URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**os.environ, "HEADSTART_OFFLINE": "1", "HEADSTART_DEVICE": device}
    environment.pop("HEADSTART_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port), "--home", str(home),
                             "--data-root", str(data)], cwd=ROOT, env={**environment, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def batch_histogram(url: str) -> dict[str, int]:
    text = httpx.get(f"{url}/metrics").text
    pattern = r'headstart_predict_batch_size_bucket\{le="([^"]+)"\} (\d+)'
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, text)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--single", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--device", default="auto", help="the server's and the bare forward's device")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, home = Path(tmp) / "data", Path(tmp) / "home"
        make_jpegs(data / "set", 40)
        store = FeatureStore(home)
        extract(ExtractOptions(data_dir=data / "set", dataset="set", backbone="vgg16", weights="random"), store)
        train_head(store, "set", "vgg16", "logreg", "bench")
        image = sorted((data / "set").rglob("*.jpg"))[0].read_bytes()  # a 500x375 JPEG
        bare_before = bare_forward_ms(args.device)
        proc, url = start_server(home, data, args.device)
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                def call(c: httpx.Client = client) -> float:
                    start = time.perf_counter()
                    r = c.post("/predict", data={"head": "bench"}, files={"files": ("a.jpg", image, "image/jpeg")})
                    r.raise_for_status()
                    return time.perf_counter() - start

                for _ in range(3):
                    call()
                single = [call() for _ in range(args.single)]
            before = batch_histogram(url)
            per_client = [args.requests // args.clients + (i < args.requests % args.clients)
                          for i in range(args.clients)]

            def client_loop(n: int) -> int:  # one connection per client, as a real client keeps; -> errors
                failed = 0
                with httpx.Client(base_url=url, timeout=60) as c:
                    c.get("/healthz")
                    ready.wait()
                    for _ in range(n):
                        r = c.post("/predict", data={"head": "bench"}, files={"files": ("a.jpg", image, "image/jpeg")})
                        failed += r.status_code != 200
                return failed

            ready = threading.Event()
            with ThreadPoolExecutor(args.clients) as pool:
                running = [pool.submit(client_loop, n) for n in per_client]
                time.sleep(0.5)  # every client connected before the clock starts
                start = time.perf_counter()
                ready.set()
                errors = sum(f.result() for f in running)
            concurrent_s = time.perf_counter() - start
            after = batch_histogram(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        bare_after = bare_forward_ms(args.device)
        batched = bare_forward_ms(args.device, args.clients, repeats=5)
    bare = (bare_before + bare_after) / 2
    p50, p99 = np.percentile(single, 50) * 1000, np.percentile(single, 99) * 1000
    single_tput = len(single) / sum(single)
    conc_tput = args.requests / concurrent_s
    batches = {le: after[le] - before.get(le, 0) for le in after}
    print(json.dumps({
        "bare_single_image_forward_ms": round(bare, 2), "bare_before_after_ms": [round(bare_before, 2),
                                                                                 round(bare_after, 2)],
        "single_client_p50_ms": round(p50, 2), "single_client_p99_ms": round(p99, 2),
        "ratio_p50_over_bare": round(p50 / bare, 3),
        "single_client_rps": round(single_tput, 2), "concurrent8_rps": round(conc_tput, 2),
        "clients": args.clients, "ratio_concurrent_over_single": round(conc_tput / single_tput, 3),
        # what batching could give at most: the bare forward of `clients` images at once, per image
        "bare_batched_forward_ms_per_image": round(batched, 2),
        "ceiling_ratio_bare_batched_over_single": round(1000 / batched / single_tput, 3),
        "concurrent_requests": args.requests, "concurrent_errors": errors,
        "batch_size_cumulative_buckets": batches,
    }, indent=1))


if __name__ == "__main__":
    main()
