"""A real headless Chromium (Debian's package, driven by Playwright) against a real `headstart serve` on 127.0.0.1.

The browser is not optional: when it cannot be started these tests fail with the reason (`make test` installs it;
see the Makefile). Screenshots go to $HEADSTART_SCREENSHOTS when set (`make screenshots` writes the README's),
else to a temporary folder."""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import class_image, make_folder
from tests.service.server import KEY, Server

XSS = "<img src=x onerror=alert(1)>"
XSS_FILE = "<img src=y onerror=alert(2)>.jpg"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str:
    for candidate in (os.environ.get("HEADSTART_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("no Chromium found for the browser tests: install Debian's `chromium` (make test does: apt-get "
                "install chromium) or set HEADSTART_CHROMIUM to a Chromium binary", pytrace=False)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HEADSTART_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three classes, one of them named like an HTML tag; four circles filed as squares (the head's mistakes, one
    of them with a file name that is HTML too); a bigger folder for a job slow enough to cancel."""
    root = tmp_path_factory.mktemp("ui")
    shapes = root / "data" / "shapes"
    make_folder(shapes, {"circle": 16, "square": 16, XSS: 16})
    circles = sorted((shapes / "circle").iterdir())
    for i, path in enumerate(circles[:4]):
        path.rename(shapes / "square" / (XSS_FILE if i == 0 else f"filed_{path.name}"))
    make_folder(root / "data" / "big", {"a": 80, "b": 80}, size=(200, 150))
    server = Server(root / "home", root / "data").start()
    yield server
    assert server.stop()


def image_b64(label_index: int, seed: int) -> str:
    import numpy as np

    buf = io.BytesIO()
    class_image(label_index, np.random.default_rng(seed)).save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


class Watch:
    """What a page did that it must not: dialogs (an alert from injected HTML), script errors, CSP violations."""

    def __init__(self, page) -> None:
        self.dialogs, self.errors, self.requests = [], [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
        page.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))

    def clean(self) -> None:
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"
        assert self.errors == [], f"the page logged errors: {self.errors}"


def open_page(browser, server: Server, path: str = "/ui/"):
    """A new browser context on the page, the API key given once; returns (page, watch)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(page)
    page.goto(server.url + path)
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    return page, watch


def until(page, expression: str, timeout: float = 30) -> None:
    """Wait until a JavaScript expression is true in the page (Playwright's wait_for_function compiles strings
    with eval, which the page's CSP refuses, as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)
