"""The web page at /ui (issue 15): static files shipped in the package, no build step, no CDN. The page and its
assets hold no data, so they are readable without the API key; the page asks for the key and sends it as a
header on every API call (never in a URL). A strict Content-Security-Policy is set on every response (see
security.HeadersMiddleware)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

UI = Path(__file__).parent / "ui"
ASSETS = "/ui/assets"


def mount(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=UI / "assets"), name="ui-assets")

    @app.get("/ui", include_in_schema=False)
    async def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/ui/", 308)

    @app.get("/ui/", include_in_schema=False)
    async def ui_page() -> FileResponse:
        return FileResponse(UI / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})


def is_open(path: str) -> bool:
    return path in ("/ui", "/ui/") or path.startswith(ASSETS + "/")
