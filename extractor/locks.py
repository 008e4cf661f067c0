"""Exclusive locks on files: POSIX record locks across processes, plus a registry within this process.

POSIX record locks (lockf) are dropped by the kernel the instant the owning process dies, also while forked
workers still hold the file open (flock locks are inherited by forked children and outlive a killed parent).
They do not conflict within one process, so each lock also takes a per-path threading lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

_GUARD = threading.Lock()
_LOCAL: dict[str, threading.Lock] = {}


class Busy(Exception):
    """The lock is held; `holder` is what its holder wrote into the lock file (pid, since when, ...)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder or "another process")
        self.holder = holder or "another process"


class FileLock:
    """`with FileLock(path):` or `acquire(wait=...)`/`release()`; the holder's note is written into the file."""

    def __init__(self, path: Path, note: str | None = None) -> None:
        self.path, self.note = Path(path), note
        self._fh = None
        self._local: threading.Lock | None = None

    def acquire(self, wait: bool = False) -> "FileLock":
        with _GUARD:
            local = _LOCAL.setdefault(os.path.abspath(self.path), threading.Lock())
        if not local.acquire(blocking=wait):
            raise Busy(self.holder())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError:
                fh.close()
                raise Busy(self.holder()) from None
        except BaseException:
            local.release()
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(self.note or f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        self._fh, self._local = fh, local
        return self

    def holder(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            fcntl.lockf(self._fh, fcntl.LOCK_UN)
            self._fh.close()
        finally:
            self._fh = None
            self._local.release()

    def __enter__(self) -> "FileLock":
        return self.acquire(wait=True)

    def __exit__(self, *exc) -> None:
        self.release()
