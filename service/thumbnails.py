"""Small JPEGs of a dataset's member images, for looking at them (issue 15, item 2): only images that belong to
the dataset, read inside the data root, checked against their content hash, decoded with the same limits as
everything else, and kept on disk in the home (`thumbnails/<sha[:2]>/<sha>-<size>.jpg`)."""

from __future__ import annotations

import io
from pathlib import Path

from extractor.decode import Limits, decode, read_verified
from extractor.definition import member_path
from extractor.durable import publish
from extractor.errors import NotFound
from extractor.store import FeatureStore
from service.security import PathRefused


def cached(store: FeatureStore, sha256: str, size: int) -> Path:
    return store.home / "thumbnails" / sha256[:2] / f"{sha256}-{size}.jpg"


def member_file(store: FeatureStore, data_root: Path, dataset: str, sha256: str) -> Path:
    """The file of the dataset's member with this content, inside the data root (else PathRefused 403)."""
    if store.catalog.dataset(dataset) is None:
        raise NotFound(f"no dataset {dataset!r}")
    row = store.catalog.member_of(dataset, sha256)
    if row is None:
        raise NotFound(f"dataset {dataset!r} has no image with content {sha256}")
    path, source = row
    target = member_path(store.catalog.sources(dataset)[source], path).resolve()
    if not target.is_relative_to(data_root.resolve()):
        raise PathRefused(403, "this image is not inside the server's data root; it cannot be shown")
    return target


def make(store: FeatureStore, file: Path, sha256: str, size: int, limits: Limits) -> bytes:
    """Read (hash-checked), decode at a reduced scale, shrink to fit size x size, keep on disk, return JPEG."""
    img = decode(read_verified(sha256, file, None, limits), limits, target=size)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    out = cached(store, sha256, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    publish(tmp, out)
    return buf.getvalue()
