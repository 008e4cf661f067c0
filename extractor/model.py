"""A loaded frozen backbone: uint8 batches in, feature vectors out (inference_mode, channels_last, AMP on CUDA).
Resolving a backbone to its fingerprint imports no torch (predicting from the cache needs none): the functions
that compute import it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from extractor.backbones import (
    PREPROCESS_METHOD,
    BackboneSpec,
    Fingerprint,
    Preprocess,
    get_spec,
    make_fingerprint,
    resolve_size,
)
from extractor.errors import HeadstartError
from extractor.weights import WeightsChoice, identity, init_random, load_into, load_state_dict, parse_weights

if TYPE_CHECKING:
    import torch

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class Resolved:
    """Backbone + weights + input size, resolved to a fingerprint without loading anything heavy."""

    spec: BackboneSpec
    size: int
    weights: WeightsChoice
    fingerprint: Fingerprint

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess(self.size, self.fingerprint.spec["preprocess"]["method"])

    @property
    def device_decode(self) -> bool:
        """Whether JPEGs are decoded on the device (extractor.devicedecode) for this fingerprint."""
        return self.preprocess.method.startswith("tv-decode_jpeg")


def resolve(backbone: str, weights: str = "imagenet", size: int | None = None,
            method: str = PREPROCESS_METHOD) -> Resolved:
    spec = get_spec(backbone)
    size = resolve_size(spec, size)
    choice = parse_weights(weights)
    fingerprint = replace(make_fingerprint(spec, size, identity(choice, spec), method), source=choice.label)
    return Resolved(spec, size, choice, fingerprint)


DECODE_CHOICES = ("auto", "cpu", "gpu")


def check_decode(decode: str) -> str:
    if decode not in DECODE_CHOICES:
        raise HeadstartError(f"--decode {decode!r}: expected one of {', '.join(DECODE_CHOICES)}")
    return decode


def decode_method(decode: str, device: str) -> str:
    """The preprocessing method of a decode choice. `auto` is the path measured faster end to end: today the CPU
    path everywhere (on an H100, vgg16@150 extracted 1.2-1.5x faster with it than with nvJPEG; README,
    Benchmarks); `gpu` decodes JPEGs on the device."""
    check_decode(decode)
    target = resolve_device(device)
    if decode in ("cpu", "auto"):
        return PREPROCESS_METHOD
    from extractor.devicedecode import method

    return method(target)


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise HeadstartError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HeadstartError(f"device {device!r} requested but CUDA is not available here; choose cpu or auto")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise HeadstartError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise HeadstartError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return chosen


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Mixed precision only on CUDA (bf16 on CPUs without AMX is several times slower)."""
    if amp not in AMP_CHOICES:
        raise HeadstartError(f"amp {amp!r}: expected one of {', '.join(AMP_CHOICES)}")
    if device.type != "cuda" or amp == "off":
        return None
    import torch

    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class LoadedBackbone:
    """Holds the frozen trunk on its device; `setup()` does the heavy work once."""

    def __init__(self, resolved: Resolved, device: str = "auto", amp: str = "auto") -> None:
        self.resolved = resolved
        self.device = resolve_device(device)
        self.amp = amp_dtype(self.device, amp)
        self.model: torch.nn.Module | None = None

    @property
    def fingerprint(self) -> Fingerprint:
        return self.resolved.fingerprint

    def setup(self) -> "LoadedBackbone":
        import torch

        spec, choice = self.resolved.spec, self.resolved.weights
        from extractor.zoo import meta

        with meta():  # parameters are allocated by to_empty, then loaded or initialised
            model = spec.build()
        model = model.to_empty(device="cpu")
        if choice.kind == "random":
            init_random(model, choice.seed)
        else:
            load_into(model, load_state_dict(choice, spec), spec, choice.label)
        model.eval().requires_grad_(False)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        pre = self.resolved.preprocess
        std = torch.tensor(pre.std, device=self.device).view(1, 3, 1, 1)
        mean = torch.tensor(pre.mean, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = mean / std
        return self

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """NHWC uint8 -> normalised float NCHW in channels_last memory (the permute is free)."""
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x.mul_(self._scale).sub_(self._shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float batch -> float32 features on the device."""
        import torch

        if self.model is None:
            self.setup()
        with torch.inference_mode():
            if self.amp is not None:
                with torch.autocast(device_type="cuda", dtype=self.amp):
                    out = self.model(x)
            else:
                out = self.model(x)
            return out.flatten(1).float()

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """NHWC uint8 batch -> (N, dim) float32 numpy vectors."""
        import torch

        if self.model is None:
            self.setup()
        with torch.inference_mode():
            return self.forward(self.normalize(batch)).cpu().numpy()

    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        return self.embed(torch.from_numpy(np.stack(images)))
