"""Durability helpers: fsync, and publishing a finished temp file or folder under its final name."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from extractor.errors import HeadstartError, StorageFull

FULL = (errno.ENOSPC, errno.EDQUOT)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written `tmp` visible as `final`: fsync it, rename atomically, fsync the folder.

    A crash at any instant leaves either no `final` or a complete one.
    """
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def storage_error(exc: BaseException, doing: str) -> HeadstartError | None:
    """A one-line error for a write that failed because the disk is full or read-only (OSError from a file,
    or SQLite's OperationalError); None for other failures."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in FULL or "No space left" in text or "disk is full" in text \
            or "errno = 28" in text:
        return StorageFull(f"disk full while {doing}; nothing half-written was kept: free space and run again")
    if isinstance(exc, OSError) and exc.errno == errno.EROFS or "readonly database" in text \
            or "Read-only file system" in text:
        return StorageFull(f"the home is read-only while {doing}; make it writable and run again")
    if isinstance(exc, sqlite3.OperationalError) and "disk I/O error" in text:
        return StorageFull(f"the disk failed while {doing} (disk I/O error); check the disk and run again")
    return None


def cannot_write(path: Path, option: str, exc: OSError) -> HeadstartError:
    """One line for an output the user named that could not be written (the system's reason, not a library's)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return HeadstartError(f"cannot write {path}: {reason}; choose another {option} (a writable path)")


def output_file(path: Path, option: str, example: str) -> Path:
    """A file the user asked for (`option` names it), checked before any work: not a folder, its folder made."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise HeadstartError(f"{option} {path} is a folder; give a file path, e.g. {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, option, exc) from None
    return path


def output_folder(path: Path, option: str) -> Path:
    """A folder the user asked for outputs in, made now; one line when it is a file or cannot be made."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise HeadstartError(f"{option} {path} is a file; give a folder (it is made when missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, option, exc) from None
    return path
