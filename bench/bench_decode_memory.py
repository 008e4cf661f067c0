"""Peak memory of the service under the decode attack (issue 10.4), and how long a light request waits meanwhile.

A real `headstart serve` on 127.0.0.1 (tiny backbone, logreg head). Attacks, each bounded in requests:
  tiff:  one POST /predict with 8 float TIFFs of 8000x8000 (384 KB each on the wire)
  png16: one POST /predict with 8 16-bit PNGs of 8000x8000 (141 KB each)
  png64: 3 concurrent POST /predict, each with 16 RGB PNGs of 8000x8000 (64 MP)
The server's RSS is sampled every 20 ms from /proc (and VmHWM read at the end); GET /jobs is timed every
100 ms during the attack. A server above --kill-gb is killed (reported as such), to keep this machine alive.

    python bench/bench_decode_memory.py                      # this checkout
    python bench/bench_decode_memory.py --repo /tmp/before   # another checkout (e.g. git worktree of an old commit)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def images(kind: str, n: int) -> list[bytes]:
    side = 8000
    if kind == "tiff":
        img, fmt, extra = Image.fromarray(np.full((side, side), 0.5, np.float32)), "TIFF", \
            {"compression": "tiff_adobe_deflate"}
    elif kind == "png16":
        img, fmt, extra = Image.fromarray(np.full((side, side), 1000, np.uint16)), "PNG", {"optimize": True}
    else:
        img, fmt, extra = Image.new("RGB", (side, side), (120, 60, 30)), "PNG", {"optimize": True}
    buf = io.BytesIO()
    img.save(buf, fmt, **extra)
    return [buf.getvalue()] * n


class Watch(threading.Thread):
    """Samples a process's RSS; kills it above `kill_bytes`."""

    def __init__(self, pid: int, kill_bytes: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.kill_bytes, self.peak, self.killed, self.done = pid, kill_bytes, 0, False, False

    def rss(self, field: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.done:
            now = self.rss()
            self.peak = max(self.peak, now)
            if now > self.kill_bytes:
                os.kill(self.pid, 9)
                self.killed = True
                return
            time.sleep(0.02)


def serve(repo: Path, home: Path, data: Path, env: dict) -> tuple[subprocess.Popen, str]:
    data.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port), "--home", str(home),
                             "--data-root", str(data)], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HEADSTART_OFFLINE": "1", **env})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def prepare(url: str, data: Path) -> None:
    for label, color in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (data / "d" / label).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.new("RGB", (40, 30), tuple(c + 5 * i for c in color)).save(data / "d" / label / f"{i}.png")
    job = httpx.post(url + "/extract", json={"dataset": "d", "path": "d", "backbone": "tiny", "weights": "random"},
                     timeout=60).json()["job_id"]
    while httpx.get(f"{url}/jobs/{job}", timeout=60).json()["state"] not in ("succeeded", "failed"):
        time.sleep(0.1)
    assert httpx.post(url + "/heads", json={"name": "h", "dataset": "d", "backbone": "tiny"},
                      timeout=120).status_code == 201
    one = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(one, "PNG")
    assert httpx.post(url + "/predict", data={"head": "h"}, files={"files": ("x.png", one.getvalue())},
                      timeout=60).status_code == 200  # warm: the backbone is loaded before the attack


def attack(url: str, kind: str) -> dict:
    per_request, requests = {"tiff": (8, 1), "png16": (8, 1), "png64": (16, 3)}[kind]
    payload = images("png64" if kind == "png64" else kind, per_request)
    waits, stop = [], threading.Event()

    def light() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                httpx.get(url + "/jobs", timeout=120)
                waits.append(time.perf_counter() - started)
            except httpx.HTTPError:
                waits.append(float("inf"))
            time.sleep(0.1)

    def heavy(_: int) -> int:
        files = [("files", (f"{i}.img", data)) for i, data in enumerate(payload)]
        try:
            return httpx.post(url + "/predict", data={"head": "h"}, files=files, timeout=600).status_code
        except httpx.HTTPError:
            return -1

    prober = threading.Thread(target=light, daemon=True)
    prober.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        codes = list(pool.map(heavy, range(requests)))
    seconds = time.perf_counter() - started
    stop.set()
    prober.join()
    return {"codes": codes, "seconds": round(seconds, 2), "jobs_wait_max_s": round(max(waits, default=0), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout that runs the server")
    parser.add_argument("--attacks", default="tiff,png16,png64")
    parser.add_argument("--kill-gb", type=float, default=16.0)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    rows = []
    for kind in args.attacks.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = serve(args.repo, Path(tmp) / "home", Path(tmp) / "data", env)
            try:
                prepare(url, Path(tmp) / "data")
                watch = Watch(proc.pid, int(args.kill_gb * 2**30))
                base = watch.rss()
                watch.start()
                result = attack(url, kind)
                watch.done = True
                hwm = watch.rss("VmHWM")
                rows.append({"attack": kind, "rss_before_mb": round(base / 2**20), "peak_rss_mb":
                             round(max(watch.peak, hwm) / 2**20), "killed_at_limit": watch.killed, **result})
                print(json.dumps(rows[-1]), flush=True)
            finally:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
