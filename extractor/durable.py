"""Durability helpers: fsync, and publishing a finished temp file or folder under its final name."""

from __future__ import annotations

import os
from pathlib import Path


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
