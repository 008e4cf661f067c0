"""Joining or starting the Ray cluster the Ray engine (extractor.engine_ray) runs on, and hashing files in Ray
tasks; a missing Ray or an unreachable head is one line."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from extractor.errors import HeadstartError

ENGINES = ("local", "ray")
RAY_LEVEL_LINE = "Set ray log level from environment variable"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise HeadstartError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return engine


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (host:port of its head, `auto`, or ray://host:port), or start a local one
    when there is none; a missing Ray or an unreachable address is one line."""
    try:
        import ray
    except ImportError:
        raise HeadstartError("--engine ray needs Ray, which is not installed here: pip install 'headstart[ray]' "
                             "(or pip install 'ray[data]'), or use --engine local") from None
    if ray.is_initialized():
        return
    if address and address != "auto":
        _probe(address)
    # the driver's own Ray logs stay in Ray's session logs; errors reach the user as one line each (below)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # a cluster of our own: no dashboard. (Ray binds its ports on every interface and has no loopback-only
    # setting: it resolves 127.0.0.1 to the host's address; recent Ray asks for its cluster token.)
    local = {} if address else {"include_dashboard": False}
    try:
        with _stderr_without(RAY_LEVEL_LINE):
            ray.init(address=address or None, logging_level=logging.ERROR, log_to_driver=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeadstartError(f"cannot join the Ray cluster at {address or 'a local cluster'}: {first}; start one "
                             f"with `ray start --head`, or check --ray-address / HEADSTART_RAY_ADDRESS") from None
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def _stderr_without(noise: str) -> Iterator[None]:
    """Ray's core worker (C++, in this process) announces on file descriptor 2 that it took its log level from
    RAY_BACKEND_LOG_LEVEL: a stray line on every `--engine ray` command. What reaches fd 2 meanwhile is held and
    passed on after, less the lines containing `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if noise not in line]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _probe(address: str) -> None:
    """Refuse an address nobody listens on at once (Ray itself waits minutes before it gives up)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise HeadstartError(f"--ray-address {address!r}: expected HOST:PORT of the Ray head (e.g. 10.0.0.5:6379), "
                             f"ray://HOST:PORT, or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise HeadstartError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                             f"`ray start --head` on the head node, or check --ray-address / "
                             f"HEADSTART_RAY_ADDRESS") from None


class RayMap:
    """extractor.datasets.hash_items' mapper on the cluster: one Ray task per chunk of files, results in order;
    closing the iterator cancels the tasks not yet done."""

    chunk = 256

    def __call__(self, fn: Callable[[list], list], chunks: list[list]) -> Iterator[list]:
        import ray

        remote = ray.remote(num_cpus=1, max_retries=3)(fn)
        refs = [remote.remote(chunk) for chunk in chunks]
        got = 0
        try:
            for ref in refs:
                yield ray.get(ref)
                got += 1
        finally:
            # on an early stop only: cancel what is still running (cancelling tasks that had finished crashed a
            # second driver on the same cluster in Ray 2.60: "Tried to complete task that was not pending")
            left = refs[got:]
            if left:
                _, running = ray.wait(left, num_returns=len(left), timeout=0)
                for ref in running:
                    ray.cancel(ref)
