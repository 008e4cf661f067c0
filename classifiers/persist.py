"""Safe head persistence: safetensors + a checksummed JSON manifest; versioned dirs switched atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from classifiers.heads import Head, device_param, get_head_class
from extractor import names
from extractor.durable import fsync_path, publish
from extractor.errors import HeadstartError, NotFound

FORMAT = "headstart-head/1"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
REQUIRED = {"format": str, "name": str, "kind": str, "params": dict, "classes": list, "dim": int,
            "fingerprint": dict, "weights": str, "backbone": str, "dataset": str, "metrics": dict,
            "created": str, "weights_sha256": str}


class HeadCorrupt(HeadstartError):
    """A stored head failed its integrity checks."""

    status = 422


def check_name(name: str) -> str:
    return names.check_name("head", name)


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(head: Head, info: dict, heads_dir: Path, name: str, keep: int = 2) -> dict:
    """Write a new version of head `name`; the old one stays loadable until CURRENT switches."""
    folder = Path(heads_dir) / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    version = f"v-{time.time_ns()}"
    tmp = folder / f".{version}.tmp"
    tmp.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in head.state().items()}, str(tmp / WEIGHTS))
    manifest = {**info, "format": FORMAT, "name": name, "kind": head.kind, "params": head.params,
                "classes": [str(c) for c in head.classes_], "history": head.history,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "weights_sha256": _sha256(tmp / WEIGHTS)}
    manifest = json.loads(json.dumps(manifest, default=float))  # plain JSON types, so the checksum round-trips
    manifest["checksum"] = _checksum(manifest)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=float))
    fsync_path(tmp / WEIGHTS)
    fsync_path(tmp / MANIFEST)
    publish(tmp, folder / version)
    link = folder / f".{CURRENT}.{version}.tmp"
    link.symlink_to(version)
    os.replace(link, folder / CURRENT)  # the atomic switch
    fsync_path(folder)
    _prune(folder, keep)
    return manifest


def _prune(folder: Path, keep: int) -> None:
    current = os.readlink(folder / CURRENT)
    versions = sorted(p.name for p in folder.iterdir() if p.name.startswith("v-") and p.is_dir())
    for old in versions[:-keep]:
        if old != current:
            shutil.rmtree(folder / old, ignore_errors=True)
    for leftover in folder.glob(".*.tmp"):  # a crash mid-save left these
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def head_dir(heads_dir: Path, name: str) -> Path:
    folder = Path(heads_dir) / check_name(name)
    if not (folder / CURRENT).exists():
        known = ", ".join(list_names(heads_dir)) or "none yet"
        raise NotFound(f"no head {name!r}; known heads: {known}. Train one with `headstart train`")
    return folder / os.readlink(folder / CURRENT)


def list_names(heads_dir: Path) -> list[str]:
    root = Path(heads_dir)
    return sorted(p.name for p in root.iterdir() if (p / CURRENT).exists()) if root.is_dir() else []


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
    cls = get_head_class(manifest["kind"])
    head = cls(**{**manifest["params"], **device_param(cls, device)})
    head.classes_ = np.array(manifest["classes"])
    head.history = manifest.get("history", [])
    head.set_state(load_file(str(weights)))
    return head, manifest


def delete(heads_dir: Path, name: str) -> None:
    head_dir(heads_dir, name)  # NotFound when absent
    shutil.rmtree(Path(heads_dir) / name)
