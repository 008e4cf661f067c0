"""The page's speed (issue 15): how long /ui takes in headless Chromium to show the heads table and the first page
of the mistakes view, for a dataset of 10,000 images of which about 1,000 are mistakes of a head on its test split.

    python bench/bench_ui.py [--images 10000] [--runs 5] [--keep DIR]

Real images (48x48 JPEGs, 10 classes; every third one of a class filed under the next class, so a centroid head
gets them wrong), the shipped pipeline with the `tiny` backbone (random weights: the page does not care what the
features mean), a real `headstart serve` with an API key on 127.0.0.1, Debian's Chromium driven by Playwright with
a cold cache each run. Printed per run and as median: first contentful paint, heads table rendered, mistakes
grid rendered (first 100 of them), its visible thumbnails loaded, how many thumbnails were fetched (lazily: only
those scrolled into view), and beside the page the API answer alone (the ratio page / API is the page's cost)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_service import start_server  # noqa: E402
from classifiers.training import train_head  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402

KEY = "bench-key-0123456789"
CLASSES = 10


def make_images(folder: Path, total: int) -> None:
    """`total` images in CLASSES folders: colour by class, noise by image; every third filed under the next class."""
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 225, (CLASSES, 3))
    for c in range(CLASSES):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(total):
        c = i % CLASSES
        pixels = np.clip(colours[c] + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
        filed = (c + 1) % CLASSES if (i // CLASSES) % 3 == 0 else c
        Image.fromarray(pixels).save(folder / f"class_{filed}" / f"img_{i:05d}.jpg", quality=85)


def chromium() -> str:
    found = os.environ.get("HEADSTART_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("bench_ui needs Chromium: apt-get install chromium (or set HEADSTART_CHROMIUM)")
    return found


def mark(page, name: str, timeout: float = 30) -> float:
    """Milliseconds from navigation start to the page's performance mark `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = page.evaluate(f"performance.getEntriesByName({name!r}).map(e => e.startTime)")
        if found:
            return found[0]
        time.sleep(0.01)
    raise SystemExit(f"the page never reached {name}")


def one_run(browser, url: str, head: str) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('headstart.apiKey', {KEY!r})")
    page = context.new_page()
    thumbs = []
    page.on("request", lambda r: thumbs.append(r.url) if "/thumbnail" in r.url else None)
    page.goto(f"{url}/ui/#heads")
    heads = mark(page, "heads-table")
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0] ?? null")
    page.goto("about:blank")
    page.goto(f"{url}/ui/#mistakes")
    grid = mark(page, "mistakes-grid")
    rows = page.evaluate("document.querySelectorAll('#mistakes-grid figure').length")
    deadline = time.monotonic() + 30
    while not page.evaluate("(() => { const shown = [...document.querySelectorAll('#mistakes-grid img')].filter(i => "
                            "i.getBoundingClientRect().top < innerHeight); return shown.length > 0 && "
                            "shown.every(i => i.classList.contains('loaded')); })()"):
        if time.monotonic() > deadline:
            raise SystemExit("visible thumbnails did not load")
        time.sleep(0.01)
    visible = page.evaluate("performance.now()")
    count = page.evaluate("document.querySelector('#mistakes-count').textContent")
    context.close()
    return {"fcp": paint, "heads": heads, "grid": grid, "thumbs_visible": visible, "rows": rows,
            "thumbnails_fetched": len(set(thumbs)), "count": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the dataset here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-ui-"))
    data, home = work / "data", work / "home"
    store = FeatureStore(home)
    if not (data / "photos").exists():
        start = time.perf_counter()
        make_images(data / "photos", args.images)
        extract(ExtractOptions(data_dir=data / "photos", dataset="photos", backbone="tiny", weights="random",
                               split="0.6,0.1,0.3", device="cpu"), store)
        for kind in ("centroid", "logreg"):
            train_head(store, "photos", "tiny", kind, f"photos-{kind}")
        print(f"dataset of {args.images} images extracted and 2 heads trained in {time.perf_counter() - start:.1f} s")
    head = "photos-centroid"
    proc, url = start_server(home, data, "cpu", {"HEADSTART_API_KEY": KEY})
    try:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        total = client.get(f"/heads/{head}/mistakes", params={"limit": 1}).json()["total"]
        print(f"{head}: {total} mistakes on the test split of {args.images} images")
        runs = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            one_run(browser, url, head)  # warms the server; every run then makes its thumbnails anew
            for path in (home / "thumbnails").glob("*/*.jpg"):
                path.unlink()
            for i in range(args.runs):
                api = []
                for _ in range(3):  # the same two answers the page needs, asked by a plain client
                    t = time.perf_counter()
                    client.get("/heads")
                    client.get(f"/heads/{head}/mistakes", params={"split": "test", "limit": 100})
                    api.append(1000 * (time.perf_counter() - t))
                row = one_run(browser, url, head)
                if not row["count"].startswith(f"{total} mistakes of {head} "):  # the page shows this head first
                    raise SystemExit(f"the page showed another view of mistakes: {row['count']!r}")
                row["api"] = min(api)
                runs.append(row)
                print(f"run {i + 1}: first paint {row['fcp']:.0f} ms, heads table {row['heads']:.0f} ms, mistakes grid "
                      f"{row['grid']:.0f} ms ({row['rows']} rows), visible thumbnails {row['thumbs_visible']:.0f} ms, "
                      f"{row['thumbnails_fetched']} thumbnails fetched of {row['rows']} rows; API alone "
                      f"{row['api']:.0f} ms")
                for path in (home / "thumbnails").glob("*/*.jpg"):
                    path.unlink()
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in runs) for k in ("fcp", "heads", "grid", "thumbs_visible", "api")}
    print(f"median of {len(runs)}: first paint {med['fcp']:.0f} ms, heads table {med['heads']:.0f} ms, mistakes grid "
          f"{med['grid']:.0f} ms, visible thumbnails {med['thumbs_visible']:.0f} ms (target: first paint < 1000 ms)")
    print(f"page / API alone (mistakes grid): {med['grid'] / med['api']:.2f}x; thumbnails fetched per grid: "
          f"{statistics.median(r['thumbnails_fetched'] for r in runs):.0f} of {runs[0]['rows']} rows (lazy)")


if __name__ == "__main__":
    main()
