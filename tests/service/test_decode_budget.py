"""The decode attack of issue 10.4, bounded: peak RSS stays within the decode budget and light requests do not
wait; an image that could never fit is refused at once."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_folder
from tests.service.server import Server

BUDGET_MB = 200


def rss(pid: int, field: str = "VmRSS") -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def float_tiff(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 0.5, np.float32)).save(buf, "TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    make_folder(root / "data" / "colors", {"blue": 6, "green": 6})
    server = Server(root / "home", root / "data", env={"HEADSTART_DECODE_MEMORY_MB": str(BUDGET_MB),
                                                       "HEADSTART_MAX_UPLOAD_PIXELS": "40000000",
                                                       "HEADSTART_DEVICE": "cpu"}).start()
    c = server.client
    job = c.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny", "weights": "random"})
    assert server.wait_job(job.json()["job_id"])["state"] == "succeeded"
    assert c.post("/heads", json={"name": "h", "dataset": "colors", "backbone": "tiny"}).status_code == 201
    small = next((root / "data" / "colors" / "blue").iterdir()).read_bytes()
    assert c.post("/predict", data={"head": "h"}, files={"files": ("s.jpg", small)}).status_code == 200  # warm
    yield server
    assert server.stop()


def test_concurrent_decodes_stay_within_the_budget_and_light_requests_do_not_wait(served):
    image = float_tiff(4000)  # 16 MP float: ~100 MB to decode, so the 200 MB budget holds one or two at once
    before, peak, waits, stop = rss(served.proc.pid), [0], [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(served.proc.pid))
            started = time.perf_counter()
            served.client.get("/jobs")
            waits.append(time.perf_counter() - started)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    files = [("files", (f"{i}.tif", image)) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:  # 18 decodes asked for at once
        codes = list(pool.map(lambda _: served.client.post("/predict", data={"head": "h"}, files=files).status_code,
                              range(3)))
    stop.set()
    watcher.join()
    grown = (max(peak[0], rss(served.proc.pid, "VmHWM")) - before) / 2**20
    print(f"decode budget {BUDGET_MB} MB: RSS grew {grown:.0f} MB; GET /jobs waited at most {max(waits):.3f} s")
    assert codes == [200, 200, 200]
    assert grown < BUDGET_MB * 1.5, grown  # without the budget these 18 decodes took several GB
    assert max(waits) < 2.0


def test_an_image_that_can_never_fit_is_refused_at_once(served):
    started = time.perf_counter()
    answer = served.client.post("/predict", data={"head": "h"}, files={"files": ("big.tif", float_tiff(6000))})
    assert answer.status_code == 413 and "HEADSTART_DECODE_MEMORY_MB" in answer.json()["detail"]
    assert time.perf_counter() - started < 2.0


def test_device_decode_uploads_are_budgeted_at_full_size():
    """A head trained on device-decoded features decodes uploads at full size (no JPEG draft) and resizes in
    float: the budget must count that, not the draft's reduced-scale cost."""
    import asyncio

    from extractor.decode import DecodeError, Limits, probe
    from extractor.devicedecode import METHOD
    from service.decoding import Decoder

    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (90, 120, 200)).save(buf, "JPEG", quality=60)
    data, limits = buf.getvalue(), Limits(max_pixels=64_000_000)
    assert probe(data, 32, limits) < 16 << 20  # the CPU path drafts at 1/8 scale: cheap
    assert probe(data, 32, limits, full=True) >= 4000 * 3000 * 15  # full RGB decode + its float copy

    async def ask(budget_mb: int, method: str | None):
        decoder = Decoder(1, budget_mb << 20)
        try:
            return await decoder.image(data, 32, limits, method)
        finally:
            decoder.close()

    assert asyncio.run(ask(64, None)).shape == (32, 32, 3)
    with pytest.raises(DecodeError, match="more than this server decodes at once") as refused:
        asyncio.run(ask(64, f"{METHOD}@cpu"))
    assert refused.value.status == 413
    assert asyncio.run(ask(400, f"{METHOD}@cpu")).shape == (32, 32, 3)
