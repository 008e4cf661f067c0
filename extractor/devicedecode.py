"""Decoding on the device (`--decode gpu`): the CPU side reads, verifies and sniffs bytes only; batches of JPEG
bytes are decoded (torchvision.io.decode_jpeg, nvJPEG on CUDA) and resized on the device. Files that are no
JPEG, or that the device decoder refuses, go through the CPU path (Pillow), one by one.

Its pixels are not the CPU path's (a full-resolution decode, then an antialiased bilinear resize, against
Pillow's reduced-scale DCT decode), so it has its own preprocessing identity, per device type: nvJPEG and
libjpeg-turbo differ in their last bits. On a CPU device the same code runs with libjpeg-turbo: that is how it
is tested without a GPU."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from extractor.decode import (
    DecodeError,
    Limits,
    decode_job,
    file_stat,
    jpeg_orientation,
    prepare,
    preprocess,
    read_verified,
)

METHOD = "tv-decode_jpeg-squash-bilinear-antialias/1"
HEAD_BYTES = 64 * 1024  # a JPEG's markers before its scan (EXIF, ICC, tables) nearly always fit; else all is read


def method(device: torch.device) -> str:
    return f"{METHOD}@{device.type}"


class ByteDataset(Dataset):
    """Item i: (i, "jpeg", EXIF orientation) for a JPEG the device decodes, (i, "pixels", HWC uint8) for a file
    that the CPU decoded instead, or (i, "error", DecodeError).

    A worker reads a JPEG's head only (its markers up to the scan): the main process reads each JPEG whole once,
    when its batch is decoded (to_batch), straight from the page cache. Sending the bytes from the workers cost
    more: a shared-memory segment per batch, filled in the worker, mapped and faulted in again in the main
    process."""

    def __init__(self, jobs: list[tuple[str, Path, tuple[int, int] | None]], size: int, limits: Limits) -> None:
        self.jobs, self.size, self.limits = jobs, size, limits

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        head = read_head(self.jobs[i], self.limits)
        if head is not None:
            try:
                return i, *jpeg_orientation(head, self.limits)
            except DecodeError:  # not a JPEG the device takes, or its head is longer: the whole file decides
                pass
        prepared, error = decode_job(self.jobs[i], self.limits, lambda data: prepare(data, self.size, self.limits))
        return (i, "error", error) if error else (i, *prepared)


def read_head(job: tuple[str, Path, tuple[int, int] | None], limits: Limits) -> bytes | None:
    """The first HEAD_BYTES of a member whose size and mtime are those its hash was taken with (the rule of
    decode.read_verified; the main process checks them again around its whole read), or None: read it whole."""
    _, path, stat = job
    if stat is None or file_stat(path) != stat or not 0 < stat[0] <= limits.max_bytes:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return None


def _as_tensor(data: bytes) -> torch.Tensor:
    """Bytes as a uint8 tensor without a copy (the decoder only reads them)."""
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def decode_batch(payloads: list[torch.Tensor | bytes], size: int, device: torch.device,
                 orientations: list[int] | None = None) -> list[torch.Tensor | None]:
    """JPEG bytes (with their EXIF orientations) -> size x size x 3 uint8 tensors on `device` (None for one the
    decoder refuses)."""
    import torchvision.io

    with warnings.catch_warnings():
        # torchvision 0.29 announces TorchCodec in every call; torch warns of tensors over read-only bytes
        warnings.simplefilter("ignore")
        tensors = [p if isinstance(p, torch.Tensor) else _as_tensor(p) for p in payloads]
        try:
            images = torchvision.io.decode_jpeg(tensors, mode=torchvision.io.ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the batch: decode one by one to find it
            images = []
            for t in tensors:
                try:
                    images.append(torchvision.io.decode_jpeg(t, mode=torchvision.io.ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    orientations = orientations or [1] * len(images)
    return _resize_all([None if img is None else _orient(img, o) for img, o in zip(images, orientations,
                                                                                   strict=True)], size)


def _resize_all(images: list[torch.Tensor | None], size: int) -> list[torch.Tensor | None]:
    """Resize images of one shape together (photos from one camera share theirs): a few kernels per batch, not
    a few per image. Each image's result is what `_resize` gives it alone."""
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for k, img in enumerate(images):
        if img is not None:
            groups.setdefault(tuple(img.shape), []).append(k)
    for members in groups.values():
        resized = _resize(torch.stack([images[k] for k in members]), size)
        for k, image in zip(members, resized, strict=True):
            out[k] = image
    return out


def _orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """CHW as stored -> CHW as meant to be seen (EXIF orientations 1-8, as torchvision and Pillow apply them)."""
    flip_w, flip_h = (-1,), (-2,)
    if orientation == 2:
        return image.flip(flip_w)
    if orientation == 3:
        return image.flip((-2, -1))
    if orientation == 4:
        return image.flip(flip_h)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip((-2, -1))
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """CHW (or NCHW) uint8 -> size x size HWC (NHWC) uint8, squash-resized with an antialiased bilinear filter."""
    batch = image if image.dim() == 4 else image[None]
    out = torch.nn.functional.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out if image.dim() == 4 else out[0]


class JpegReader:
    """Reads a batch's JPEGs whole, each checked to be the content its hash names (decode.read_verified), into
    one buffer kept from batch to batch. The bytes of one batch are views of it: valid until the next read (a
    batch is decoded before the next is read; torchvision's nvJPEG batch decode synchronises its stream before
    it returns, so the device has its bytes by then)."""

    def __init__(self, jobs: list[tuple[str, Path, tuple[int, int] | None]], limits: Limits) -> None:
        self.jobs, self.limits = jobs, limits
        self.buffer = bytearray()

    def __call__(self, indices: list[int]) -> list[bytes | memoryview | DecodeError]:
        sizes = [stat[0] if (stat := self.jobs[i][2]) else 0 for i in indices]
        if sum(sizes) > len(self.buffer):  # with room to spare: batches differ in size, each new buffer costs
            self.buffer = bytearray(sum(sizes) * 3 // 2)
        view, offset, out = memoryview(self.buffer), 0, []
        for i, size in zip(indices, sizes, strict=True):
            try:
                out.append(read_verified(*self.jobs[i], self.limits, view[offset:offset + size]))
            except DecodeError as exc:  # unreadable now, or changed since it was hashed
                out.append(exc)
            offset += size
        return out


def to_batch(items: list, size: int, device: torch.device, limits: Limits,
             read: Callable[[list[int]], list]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, DecodeError]]]:
    """One loader batch -> (item indices, NHWC uint8 on `device`, failures): JPEGs read whole (`read`: a
    JpegReader) and decoded together on the device, the files the device refuses decoded on the CPU instead."""
    good: dict[int, torch.Tensor] = {}
    bad: list[tuple[int, DecodeError]] = []
    wanted = [(i, orientation) for i, kind, orientation in items if kind == "jpeg"]
    jpegs = []
    for (i, orientation), data in zip(wanted, read([i for i, _ in wanted]) if wanted else [], strict=True):
        if isinstance(data, DecodeError):
            bad.append((i, data))
        else:
            jpegs.append((i, data, orientation))
    decoded = decode_batch([p for _, p, _ in jpegs], size, device, [o for *_, o in jpegs]) if jpegs else []
    for (i, data, _), image in zip(jpegs, decoded, strict=True):
        if image is not None:
            good[i] = image
            continue
        try:  # the device decoder refused it: the CPU path decides
            good[i] = torch.from_numpy(preprocess(data, size, limits)).to(device)
        except DecodeError as exc:
            bad.append((i, exc))
    for i, kind, payload in items:
        if kind == "pixels":
            good[i] = torch.tensor(payload, device=device)  # a copy: the decoded array may be read-only
        elif kind == "error":
            bad.append((i, payload))
    order = sorted(good)
    return order, (torch.stack([good[i] for i in order]) if order else None), bad


def device_of(method_name: str) -> torch.device:
    """The device a device-decode method decodes on; one line when this machine has none of that kind."""
    kind = method_name.rsplit("@", 1)[-1]
    if kind == "cuda" and not torch.cuda.is_available():
        from extractor.errors import HeadstartError

        raise HeadstartError("these features were decoded with nvJPEG on a GPU (extract --decode gpu on CUDA); "
                             "predicting needs a CUDA device to decode the same way, or extract again with "
                             "--decode cpu and retrain")
    return torch.device(kind)


def preprocess_on(data: bytes, size: int, limits: Limits, method_name: str) -> np.ndarray:
    """One image -> the pixels the device-decode path gives it (for predicting with heads trained on them)."""
    kind, payload = prepare(data, size, limits)
    if kind == "pixels":
        return payload
    image = decode_batch([data], size, device_of(method_name), [payload])[0]
    if image is None:
        return preprocess(data, size, limits)
    return image.cpu().numpy()
