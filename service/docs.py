"""OpenAPI docs served from the package (Swagger UI's files from the swagger-ui-bundle distribution): they work
offline and behind a firewall, and they are readable without the API key (they hold no data)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
OPEN_PATHS = ("/docs", "/openapi.json")  # with ASSETS/*: no key needed


def mount(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="headstart API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    def schema() -> dict:
        """The generated schema, with the bearer key declared so that /docs can send it."""
        if app.openapi_schema is None:
            body = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            body.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "HEADSTART_API_KEY"}}
            body["security"] = [{"bearer": []}]
            app.openapi_schema = body
        return app.openapi_schema

    app.openapi = schema


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(ASSETS + "/")
