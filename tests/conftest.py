"""Shared fixtures: offline environment, generated image folders, a CLI runner."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30), (160, 40, 200), (30, 200, 200)]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No test touches the network or the user's caches."""
    monkeypatch.setenv("HEADSTART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("HEADSTART_HOME", raising=False)


def class_image(label_index: int, rng: np.random.Generator, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A noisy image whose dominant colour and stripe direction depend on the class: learnable."""
    w, h = size
    base = np.array(COLORS[label_index % len(COLORS)], dtype=np.float64)
    noise = rng.normal(0, 25, (h, w, 3))
    stripes = np.zeros((h, w, 1))
    if label_index % 2:
        stripes[:, ::8] = 60
    else:
        stripes[::8, :] = 60
    arr = np.clip(base + noise + stripes, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_folder(root: Path, counts: dict[str, int], seed: int = 0, fmt: str = "JPEG",
                size: tuple[int, int] = (64, 48), start: int = 0) -> list[Path]:
    """Class subfolders of generated images; returns the written paths."""
    rng = np.random.default_rng(seed)
    suffix = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    written = []
    for index, (label, n) in enumerate(sorted(counts.items())):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            path = root / label / f"{label}_{i:04d}{suffix}"
            class_image(index, rng, size).save(path, fmt)
            written.append(path)
    return written


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI's `main` in-process (same code path as the console script): (exit code, stdout, stderr)."""
    from service.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 1, err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m service ...` as a user would, offline."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the tests that use it, listening on 127.0.0.1 only (extractor.ray_cluster), stopped
    at the end; yields the GCS address (drivers in other processes join it with --ray-address)."""
    ray = pytest.importorskip("ray")
    from extractor import ray_cluster

    ray_cluster.connect(None)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def actor_pids() -> list[int]:
    """Processes of the Ray engine's forward actors (Ray titles them ray::MapWorker(MapBatches(ShardActor)))."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ShardActor" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", syntax: str = "1.2.840.10008.1.2.1",
                encapsulated: bytes | None = None, **elements) -> bytes:
    """A DICOM file (preamble, DICM, file meta) of one frame of `pixels` (rows x columns, x 3 for colour), stored
    as they are (Explicit VR Little Endian) or as the `encapsulated` frame under `syntax`; `elements` are set on
    the dataset (WindowCenter, RescaleSlope, NumberOfFrames, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = 12 if pixels.dtype == np.uint16 else 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for name, value in elements.items():
        setattr(ds, name, value)
    ds.PixelData = encapsulate([encapsulated]) if encapsulated is not None else pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
