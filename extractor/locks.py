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


class _Users:
    """One path's state in this process: how many hold it shared, whether one holds it exclusively."""

    def __init__(self) -> None:
        self.cond, self.count, self.exclusive, self.fh = threading.Condition(), 0, False, None


_USERS: dict[str, _Users] = {}


class SharedLock:
    """Held shared by any number of users (across processes a lockf shared lock, within one process a count, as
    POSIX locks do not conflict there and the first close would drop them all), or by one alone, never waiting
    (`exclusive`): a dataset is used by its extractions, in any process, and removed only when none runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with _GUARD:
            self._users = _USERS.setdefault(os.path.abspath(self.path), _Users())

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.path, "a+")

    def __enter__(self) -> "SharedLock":
        u = self._users
        with u.cond:
            while u.exclusive:
                u.cond.wait()
            if u.count == 0:
                fh = self._open()
                fcntl.lockf(fh, fcntl.LOCK_SH)  # waits only while another process holds it exclusively (briefly)
                u.fh = fh
            u.count += 1
        return self

    def __exit__(self, *exc) -> None:
        u = self._users
        with u.cond:
            u.count -= 1
            if u.count == 0:
                fcntl.lockf(u.fh, fcntl.LOCK_UN)
                u.fh.close()
                u.fh = None

    def exclusive(self) -> "_Exclusive":
        """`with lock.exclusive():` raises Busy at once when anyone holds the lock."""
        return _Exclusive(self)


class _Exclusive:
    def __init__(self, lock: SharedLock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        u = self.lock._users
        with u.cond:
            if u.count or u.exclusive:
                raise Busy("this process")
            fh = self.lock._open()
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise Busy("another process") from None
            u.exclusive, u.fh = True, fh

    def __exit__(self, *exc) -> None:
        u = self.lock._users
        with u.cond:
            fcntl.lockf(u.fh, fcntl.LOCK_UN)
            u.fh.close()
            u.exclusive, u.fh = False, None
            u.cond.notify_all()
