"""Joining or starting the Ray cluster the Ray engine (extractor.engine_ray) runs on, and hashing files in Ray
tasks; a missing Ray or an unreachable head is one line."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator

from extractor.errors import HeadstartError

ENGINES = ("local", "ray")
RAY_LEVEL_LINE = "Set ray log level from environment variable"
log = logging.getLogger(__name__)
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # 0: Ray's node address is 127.0.0.1 (see _loopback_only)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise HeadstartError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return engine


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (host:port of its head, `auto`, or ray://host:port), or start a local one
    when there is none; a missing Ray or an unreachable address is one line."""
    if _on_loopback(address):
        _loopback_only()
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
    local = {} if address else {"include_dashboard": False}  # a cluster of our own: no dashboard
    held = _HeldStderr()
    try:
        with held:
            ray.init(address=address or None, logging_level=logging.ERROR, log_to_driver=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        log.debug("Ray's log while joining %s:\n%s", address, held.text)
        where = f"cannot join the Ray cluster at {address or 'a local cluster'}"
        if "InvalidAuthToken" in held.text:
            raise HeadstartError(f"{where}: it wants its authentication token; set RAY_AUTH_MODE=token here, with "
                                 f"the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN (`ray get-auth-token` "
                                 f"on the head prints it)") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeadstartError(f"{where}: {first}; start one with `ray start --head`, or check --ray-address / "
                             f"HEADSTART_RAY_ADDRESS") from None
    held.pass_on()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _on_loopback(address: str | None) -> bool:
    """A cluster of our own (no address), or a head on this machine's loopback address."""
    if not address:
        return True
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _loopback_only() -> None:
    """Make the Ray node this process starts or joins use 127.0.0.1, so that a cluster of our own listens on the
    loopback interface only (GCS, raylet, workers, object manager), unreachable from other machines. Ray turns
    127.0.0.1 into the host's address unless told, by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, that this is no
    multi-machine cluster; Ray reads that variable when it is first imported, so the value it read is set too.
    A user who sets the variable keeps their value."""
    if LOOPBACK_ENV in os.environ:
        return
    os.environ[LOOPBACK_ENV] = "0"  # read by `import ray` below when not imported yet, and by Ray's processes
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


class _HeldStderr:
    """Holds what reaches file descriptor 2 while Ray starts. Ray's core worker (C++, in this process) writes its
    log lines there: on every start it announces the log level it took from RAY_BACKEND_LOG_LEVEL, and while it
    cannot join a cluster it repeats its retries (a head that wants its token: 20 lines). After a start, what was
    held is passed on less that announcement (`pass_on`); after a failure, the caller says it in one line."""

    def __enter__(self) -> "_HeldStderr":
        sys.stderr.flush()
        self.saved, self.file, self.text = os.dup(2), tempfile.TemporaryFile(), ""
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()

    def pass_on(self) -> None:
        kept = [line for line in self.text.splitlines(keepends=True) if RAY_LEVEL_LINE not in line]
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
