"""Safety at the edge: bearer-key auth, streaming body limits, data-root confinement, path-free error text."""

from __future__ import annotations

import hmac
import json
import re
from pathlib import Path
from urllib.parse import unquote

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service import docs, webui

OPEN_PATHS = {"/healthz"}  # and the docs (service.docs.is_open) and the page's static files (webui.is_open)

# The page: its own scripts and styles only, images from the API or blob: URLs made from API answers, requests to
# this origin only, never framed. Everything else (JSON, JPEGs) gets the strictest policy. The docs are left out:
# Swagger UI's page starts itself with an inline script.
UI_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


async def _send_json(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """With a key set, every path but /healthz needs `Authorization: Bearer <key>` (constant-time compare)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app, self.key = app, api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.key is None or path in OPEN_PATHS or docs.is_open(path) or \
                webui.is_open(path):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            return await _send_json(send, 401, "missing or wrong API key; send Authorization: Bearer <key>",
                                    [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class HeadersMiddleware:
    """Security headers on every HTTP response: no MIME sniffing, no referrer, never framed, and a CSP (the page's
    own on /ui, none at all allowed elsewhere but the docs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        csp = UI_CSP if webui.is_open(path) else None if docs.is_open(path) else API_CSP
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                 (b"x-frame-options", b"DENY")] + ([(b"content-security-policy", csp.encode())] if csp else [])

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class BodyLimitMiddleware:
    """Refuse bodies over the limit: by Content-Length up front, and by counting while streaming (chunked)."""

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int, upload_paths: set[str]) -> None:
        self.app, self.upload_limit, self.json_limit, self.upload_paths = app, upload_limit, json_limit, upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"] in self.upload_paths else self.json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _send_json(send, 413, f"request body over the {limit}-byte limit")
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body over the {limit}-byte limit")
            return message

        return await self.app(scope, counted, send)


class PathRefused(Exception):
    """A dataset path that is malformed (400) or leaves the data root (403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def confine(root: Path, relative: str) -> Path:
    """`relative` resolved inside `root`, or PathRefused. Symlinks are followed before the check."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise PathRefused(400, "path must be a non-empty relative path inside the data root, without NUL or '\\'")
    decoded = unquote(relative)
    if decoded != relative:  # %2e%2e and friends: never decoded, never guessed at
        raise PathRefused(400, "percent-encoded characters are not accepted in paths; send the plain relative path")
    if decoded.startswith("/") or re.match(r"^[A-Za-z]:", decoded):
        raise PathRefused(400, "absolute paths are not accepted; send a path relative to the data root")
    if ".." in Path(decoded).parts:
        raise PathRefused(400, "'..' is not accepted in paths; send a path inside the data root")
    base = root.resolve()
    target = (base / decoded).resolve()
    if not target.is_relative_to(base):
        raise PathRefused(403, "path leaves the data root (through a symlink); it is not readable from here")
    if not target.exists():
        raise PathRefused(404, f"no such file or folder in the data root: {decoded}{_near(base, decoded)}")
    return target


def _near(base: Path, asked: str) -> str:
    """What the data root holds where `asked` is missing, for the caller to pick from: the folders (and files) in
    the deepest folder of `asked` that exists, up to 20, none hidden and none leaving the root."""
    folder = base
    for part in Path(asked).parts[:-1]:
        if not (folder / part).is_dir() or not (folder / part).resolve().is_relative_to(base):
            break
        folder = folder / part
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return ""
    where = "the data root" if folder == base else f"{folder.relative_to(base).as_posix()}/"
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"; {where} holds {shown}" if names else f"; {where} is empty"


# an absolute path of two or more parts; one of this API's own routes right after an HTTP method ("roll back with
# POST /heads/pets/rollback") stays
SERVER_PATH = re.compile(r"(\b(?:GET|POST|PUT|DELETE) (?=/(?:heads|jobs|datasets)/))?(?<![\w<>])/(?:[\w.+-]+/)+"
                         r"[\w.+-]*")


class Scrubber:
    """Removes server paths from messages: known roots become placeholders, other absolute paths vanish."""

    def __init__(self, replacements: dict[Path, str]) -> None:
        self.pairs = sorted(((str(p.resolve()), name) for p, name in replacements.items()), key=lambda x: -len(x[0]))

    def __call__(self, text: str) -> str:
        for prefix, name in self.pairs:
            text = text.replace(prefix + "/", name + "/").replace(prefix, name)
        return SERVER_PATH.sub(lambda m: m[0] if m[1] else "<server path>", text)
