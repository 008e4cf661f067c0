"""Decoding on the device (`--decode gpu`): the CPU side reads, verifies and sniffs bytes only; batches of JPEG
bytes are decoded (torchvision.io.decode_jpeg, nvJPEG on CUDA) and resized on the device. Files that are no
JPEG, or that the device decoder refuses, go through the CPU path (Pillow), one by one.

Its pixels are not the CPU path's (a full-resolution decode, then an antialiased bilinear resize, against
Pillow's reduced-scale DCT decode), so it has its own preprocessing identity, per device type: nvJPEG and
libjpeg-turbo differ in their last bits. On a CPU device the same code runs with libjpeg-turbo: that is how it
is tested without a GPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from extractor.decode import DecodeError, Limits, decode_job, open_image, preprocess

METHOD = "tv-decode_jpeg-squash-bilinear-antialias/1"


def method(device: torch.device) -> str:
    return f"{METHOD}@{device.type}"


class ByteDataset(Dataset):
    """Item i: (i, "jpeg", (raw bytes, EXIF orientation)) for a JPEG the device decodes, (i, "pixels", HWC uint8)
    for a file that the CPU decoded instead, or (i, "error", DecodeError)."""

    def __init__(self, jobs: list[tuple[str, Path, tuple[int, int] | None]], size: int, limits: Limits) -> None:
        self.jobs, self.size, self.limits = jobs, size, limits

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        prepared, error = decode_job(self.jobs[i], self.limits, lambda data: prepare(data, self.size, self.limits))
        return (i, "error", error) if error else (i, *prepared)


def prepare(data: bytes, size: int, limits: Limits) -> tuple[str, object]:
    """("jpeg", (bytes, EXIF orientation)) when the device can decode it (an RGB or greyscale JPEG within the
    limits: checked from the header), else ("pixels", the CPU path's array). The orientation is read here, in
    the worker: torchvision's own EXIF handling reads it image by image in the decoding thread."""
    img = open_image(data, limits)  # format by content, byte and pixel limits, from the header only
    if img.format == "JPEG" and img.mode in ("RGB", "L"):
        orientation = img.getexif().get(ORIENTATION, 1)
        return "jpeg", (data, orientation if orientation in range(1, 9) else 1)
    return "pixels", preprocess(data, size, limits)


def collate(items: list) -> tuple[list, torch.Tensor]:
    """A batch: its JPEG bytes packed into one tensor (one shared-memory segment crosses from the worker, not one
    per image), each JPEG item holding its (offset, length) in it."""
    total = sum(len(payload[0]) for _, kind, payload in items if kind == "jpeg")
    packed = torch.empty(total, dtype=torch.uint8)
    if torch.utils.data.get_worker_info() is not None:
        packed.share_memory_()  # filled in place: the batch crosses to the main process without another copy
    view, out, offset = packed.numpy(), [], 0
    for i, kind, payload in items:
        if kind == "jpeg":
            data, orientation = payload
            view[offset:offset + len(data)] = np.frombuffer(data, np.uint8)
            out.append((i, kind, (offset, len(data), orientation)))
            offset += len(data)
        else:
            out.append((i, kind, payload))
    return out, packed


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def decode_batch(payloads: list[torch.Tensor | bytes], size: int, device: torch.device,
                 orientations: list[int] | None = None) -> list[torch.Tensor | None]:
    """JPEG bytes (with their EXIF orientations) -> size x size x 3 uint8 tensors on `device` (None for one the
    decoder refuses)."""
    import torchvision.io

    tensors = [p if isinstance(p, torch.Tensor) else _as_tensor(p) for p in payloads]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 announces TorchCodec in every call
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


ORIENTATION = 0x0112  # the EXIF tag


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


def to_batch(batch: tuple[list, torch.Tensor], size: int, device: torch.device,
             limits: Limits) -> tuple[list[int], torch.Tensor | None, list[tuple[int, DecodeError]]]:
    """One loader batch -> (item indices, NHWC uint8 on `device`, failures): JPEGs decoded together on the device,
    the files the device refuses decoded on the CPU instead."""
    items, packed = batch
    good: dict[int, torch.Tensor] = {}
    bad: list[tuple[int, DecodeError]] = []
    jpegs = [(i, packed[start:start + length], o) for i, kind, (start, length, o) in
             ((i, kind, payload) for i, kind, payload in items if kind == "jpeg")]
    decoded = decode_batch([p for _, p, _ in jpegs], size, device, [o for *_, o in jpegs]) if jpegs else []
    for (i, payload, _), image in zip(jpegs, decoded, strict=True):
        if image is not None:
            good[i] = image
            continue
        try:  # the device decoder refused it: the CPU path decides
            good[i] = torch.from_numpy(preprocess(payload.numpy().tobytes(), size, limits)).to(device)
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
    image = decode_batch([payload[0]], size, device_of(method_name), [payload[1]])[0]
    if image is None:
        return preprocess(data, size, limits)
    return image.cpu().numpy()
