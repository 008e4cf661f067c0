"""A real `headstart serve` process on 127.0.0.1 for the API tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO

KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """Starts the service as a user would; `client` carries the API key when one is set."""

    def __init__(self, home: Path, data: Path, key: str | None = KEY, env: dict | None = None) -> None:
        self.home, self.data, self.key, self.env = home, data, key, env or {}
        self.proc: subprocess.Popen | None = None
        self.log = home.parent / f"server-{home.name}.log"

    def start(self, timeout: float = 90) -> "Server":
        self.port = free_port()
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HEADSTART_OFFLINE": "1", "HEADSTART_FLUSH_SECONDS": "0.2", **self.env}
        if self.key:
            env["HEADSTART_API_KEY"] = self.key
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), "--home", str(self.home),
             "--data-root", str(self.data)], cwd=REPO, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=120)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become healthy in time")

    def wait_job(self, job_id: str, states=("succeeded", "failed", "cancelled", "interrupted"),
                 timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")

    def children(self) -> list[int]:
        """Live processes whose parent is this server (its decode workers), read from /proc."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended while we looked
                continue
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM; True when uvicorn finished its graceful shutdown (it then re-raises the signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        own_log = self.log.read_bytes()[self.log_start:].decode(errors="replace")
        return code in (0, -signal.SIGTERM) and "Application shutdown complete" in own_log
