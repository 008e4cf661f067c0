"""Safe head persistence: safetensors + a checksummed JSON manifest; versioned dirs switched atomically."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from classifiers.heads import Head, device_param, get_head_class
from extractor import names
from extractor.durable import fsync_path, publish
from extractor.errors import HeadstartError, NotFound, StorageFull
from extractor.locks import Busy, FileLock

FORMAT = "headstart-head/1"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
REQUIRED = {"format": str, "name": str, "kind": str, "params": dict, "classes": list, "dim": int,
            "fingerprint": dict, "weights": str, "backbone": str, "dataset": str, "metrics": dict,
            "created": str, "weights_sha256": str}


def heads_dir(store) -> Path:
    """Where a store's heads live: `heads/` in its home."""
    return store.home / "heads"


class HeadCorrupt(HeadstartError):
    """A stored head failed its integrity checks."""

    status = 422


def check_name(name: str) -> str:
    return names.check_name("head", name)


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock(heads_dir: Path, name: str) -> FileLock:
    """Saves, rollbacks and deletes of one name are serialised, across threads and processes."""
    return FileLock(Path(heads_dir) / ".locks" / f"{name}.lock")


def save(head: Head, info: dict, heads_dir: Path, name: str, files: dict[str, Path] | None = None) -> dict:
    """Write a new version of head `name` and make it current; the version it replaces stays for a rollback.
    `files` (name in the version folder -> a file to copy there: a fine-tuned trunk) are part of the version
    and checked by their SHA-256 like the weights.

    Disk full while writing leaves the current version untouched and raises StorageFull."""
    folder = Path(heads_dir) / check_name(name)
    with _lock(heads_dir, name):
        folder.mkdir(parents=True, exist_ok=True)
        version = f"v-{time.time_ns()}"
        tmp = folder / f".{version}.tmp"
        try:
            manifest = _write_version(head, info, name, tmp, files or {})
            publish(tmp, folder / version)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"disk full while saving head {name!r} ({exc.strerror}); the current version "
                                  f"is unchanged: free space and train again") from None
            raise
        previous = _current(folder)
        _switch(folder, version)
        _prune(folder, keep={version, previous})
    return manifest


def _write_version(head: Head, info: dict, name: str, tmp: Path, files: dict[str, Path]) -> dict:
    tmp.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in head.state().items()}, str(tmp / WEIGHTS))
    for file_name, source in files.items():
        shutil.copyfile(source, tmp / file_name)
        fsync_path(tmp / file_name)
    info = {**info, "files": {f: _sha256(tmp / f) for f in files}} if files else info
    manifest = {**info, "format": FORMAT, "name": name, "kind": head.kind, "params": head.params,
                "classes": [str(c) for c in head.classes_], "history": head.history,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "weights_sha256": _sha256(tmp / WEIGHTS)}
    manifest = json.loads(json.dumps(manifest, default=float))  # plain JSON types, so the checksum round-trips
    manifest["checksum"] = _checksum(manifest)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=float))
    fsync_path(tmp / WEIGHTS)
    fsync_path(tmp / MANIFEST)
    return manifest


def _current(folder: Path) -> str | None:
    try:
        return os.readlink(folder / CURRENT)
    except OSError:
        return None


def _switch(folder: Path, version: str) -> None:
    """Point CURRENT at `version` atomically (a symlink renamed over the old one)."""
    link = folder / f".{CURRENT}.{version}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(version)
    os.replace(link, folder / CURRENT)
    fsync_path(folder)


def _versions(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("v-") and p.is_dir())


def _prune(folder: Path, keep: set[str | None]) -> None:
    """Remove versions other than `keep`, and temp files a crash left (under the name's lock: none is live)."""
    for old in _versions(folder):
        if old not in keep:
            shutil.rmtree(folder / old, ignore_errors=True)
    for leftover in folder.glob(".*.tmp"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def rollback(heads_dir: Path, name: str) -> dict:
    """Make the other kept version current (the one a save replaced); a second rollback undoes the first."""
    folder = Path(heads_dir) / check_name(name)
    with _lock(heads_dir, name):
        head_dir(heads_dir, name)
        current = _current(folder)
        others = [v for v in _versions(folder) if v != current]
        if not others:
            raise HeadstartError(f"head {name!r} has no earlier version to roll back to (one is kept after each "
                                 f"save, until the next save)")
        read_manifest(folder / others[-1])  # refuse to switch to a damaged version
        _switch(folder, others[-1])
        return read_manifest(folder / others[-1])


def head_dir(heads_dir: Path, name: str) -> Path:
    """The current version folder of head `name`: NotFound when there is no such head, HeadCorrupt when its
    CURRENT link points nowhere."""
    folder = Path(heads_dir) / check_name(name)
    current = _current(folder)
    if current is None:
        known = ", ".join(list_names(heads_dir)) or "none yet"
        raise NotFound(f"no head {name!r}; known heads: {known}", cli="train one with `headstart train`",
                       api="train one with POST /heads")
    if not (folder / current).is_dir():
        raise HeadCorrupt(f"head {name!r}: its current version {current} is missing",
                          cli=f"roll back with `headstart heads rollback {name}`, or delete it",
                          api=f"roll back with POST /heads/{name}/rollback, or delete it")
    return folder / current


def list_names(heads_dir: Path) -> list[str]:
    """Every head: a folder with a CURRENT link (also one that points nowhere); hidden folders are not heads."""
    root = Path(heads_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / CURRENT).is_symlink())


def list_heads(heads_dir: Path) -> list[dict]:
    """Every head's manifest; a head that fails its checks is listed as {"name", "error"} (never hides others)."""
    out = []
    for name in list_names(heads_dir):
        try:
            out.append(read_manifest(head_dir(heads_dir, name)))
        except HeadstartError as exc:
            out.append({"name": name, "error": str(exc)})
    return out


def read_manifest(version_dir: Path) -> dict:
    """The manifest, refused when it is not valid JSON, lacks fields, or its checksum does not match."""
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise HeadCorrupt(f"head manifest {version_dir / MANIFEST} is unreadable ({exc}); retrain the head") from None
    if not isinstance(manifest, dict):
        raise HeadCorrupt(f"head manifest {version_dir / MANIFEST} is not a JSON object; retrain the head")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise HeadCorrupt(f"head manifest lacks a valid {key!r} ({kind.__name__}); it was altered or "
                              f"truncated: retrain the head")
    if manifest["format"] != FORMAT:
        raise HeadCorrupt(f"head format {manifest['format']!r}; expected {FORMAT}")
    if manifest.get("checksum") != _checksum(manifest):
        raise HeadCorrupt(f"head manifest of {manifest['name']!r} was modified after saving (checksum mismatch); "
                          f"retrain the head rather than edit its manifest")
    return manifest


def load(heads_dir: Path, name: str, fingerprint: str | None = None, device: str | None = None) -> tuple[Head, dict]:
    """Load a head; refuse tampering, a missing weights file, or features of another fingerprint.

    `device` places a head that runs on one (mlp) there, whatever device it was trained on."""
    version_dir = head_dir(heads_dir, name)
    manifest = read_manifest(version_dir)
    if fingerprint is not None and manifest["fingerprint"]["id"] != fingerprint:
        raise HeadstartError(
            f"head {name!r} was trained on features {manifest['fingerprint']['id']} "
            f"({manifest['fingerprint'].get('spec', {}).get('weights', '?')}); this backbone gives {fingerprint}. "
            f"Use the backbone and weights the head was trained with, or retrain it")
    weights = version_dir / WEIGHTS
    if not weights.is_file():
        raise HeadCorrupt(f"head {name!r} is missing its weights file {weights}; retrain the head")
    if _sha256(weights) != manifest["weights_sha256"]:
        raise HeadCorrupt(f"head {name!r}: weights file does not match its manifest (sha256); retrain the head")
    for file_name, sha in (manifest.get("files") or {}).items():
        path = version_dir / file_name
        if not path.is_file() or _sha256(path) != sha:
            raise HeadCorrupt(f"head {name!r}: {file_name} is missing or does not match its manifest (sha256); "
                              f"fine-tune the head again")
    cls = get_head_class(manifest["kind"])
    values = dict(manifest["params"])
    values.pop("device", None)  # heads saved before device stopped being a parameter
    head = cls(**values, **device_param(cls, device))
    head.classes_ = np.array(manifest["classes"])
    head.history = manifest.get("history", [])
    head.set_state(load_file(str(weights)))
    return head, manifest


def delete(heads_dir: Path, name: str) -> None:
    """Remove a head whole: its folder is renamed aside first (atomic), then removed; a crash in between leaves
    a hidden folder that `clean_leftovers` removes, never a half-deleted head."""
    folder = Path(heads_dir) / check_name(name)
    with _lock(heads_dir, name):
        if _current(folder) is None:
            head_dir(heads_dir, name)  # NotFound
        aside = Path(heads_dir) / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(folder, aside)
        fsync_path(Path(heads_dir))
        shutil.rmtree(aside)


def clean_leftovers(heads_dir: Path) -> int:
    """Remove what crashes left: folders deleted halfway, temp versions of saves (skipping names being saved)."""
    root, removed = Path(heads_dir), 0
    if not root.is_dir():
        return 0
    for path in root.glob(".deleted-*"):
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    for folder in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        lock = _lock(root, folder.name)
        try:
            lock.acquire()
        except Busy:  # a save of this name is running: its temp folder is live
            continue
        try:
            leftovers = list(folder.glob(".*.tmp"))
            _prune(folder, keep=set(_versions(folder)))
            removed += len(leftovers)
        finally:
            lock.release()
    return removed
