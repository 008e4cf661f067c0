"""`headstart serve`: the API under uvicorn; loopback unless an API key is set."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from extractor.errors import HeadstartError


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the HTTP API (OpenAPI docs at /docs)")
    p.add_argument("--host", help="bind address (default 127.0.0.1; others need HEADSTART_API_KEY)")
    p.add_argument("--port", type=int)
    p.add_argument("--data-root", type=Path, help="folder that dataset paths are relative to")
    p.set_defaults(func=cmd_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    return 0
