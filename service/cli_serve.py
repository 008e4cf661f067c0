"""`headstart serve`: the API under uvicorn; loopback unless an API key is set; one server per home."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

from extractor.errors import HeadstartError
from extractor.locks import Busy, FileLock


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the HTTP API (OpenAPI docs at /docs, pages at /ui)")
    p.add_argument("--host", help="bind address (default 127.0.0.1; others need HEADSTART_API_KEY)")
    p.add_argument("--port", type=int, help="(default 8000)")
    p.add_argument("--data-root", type=Path,
                   help="folder that dataset paths in requests are relative to (default: the current folder)")
    p.set_defaults(func=cmd_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one line, and nothing of the
    home (jobs, locks) was touched."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        raise HeadstartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             cli="choose another --port, or stop what uses it") from None
    sock.set_inheritable(True)
    return sock


def own_home(home: Path, host: str, port: int) -> FileLock:
    """One server per home: a second one on the same home would resume the first one's jobs."""
    lock = FileLock(home / "serve.lock", note=f"pid {os.getpid()} on {host}:{port} since {time.strftime('%c')}")
    try:
        return lock.acquire()
    except Busy as busy:
        raise HeadstartError(f"another headstart serve uses the home {home} ({busy.holder})",
                             cli="stop it, or give this server another --home") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import load_settings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "home": args.home,
                                   "data_root": args.data_root}.items() if v is not None}
    settings = load_settings(**overrides)
    if not is_loopback(settings.host) and settings.api_key is None:
        raise HeadstartError(f"refusing to listen on {settings.host} without an API key: set HEADSTART_API_KEY, "
                             f"or bind 127.0.0.1")
    if not settings.data_root.is_dir():
        raise HeadstartError(f"data root {settings.data_root} is not a folder; set HEADSTART_DATA_ROOT or --data-root")
    sock = bind(settings.host, settings.port)
    settings.home.mkdir(parents=True, exist_ok=True)
    lock = own_home(settings.home, settings.host, settings.port)
    app = create_app(settings)
    url = f"http://{settings.host}:{settings.port}"
    print(f"headstart: serving {settings.home}: the page at {url}/ui, the API docs at {url}/docs; dataset paths are "
          f"relative to {settings.data_root.resolve()}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="info", backlog=settings.backlog,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
                            timeout_keep_alive=settings.timeout_keep_alive_s,
                            limit_concurrency=settings.limit_concurrency)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        lock.release()
    return 0
