"""Weights: ImageNet (torchvision cache), explicit seeded random, or a local file; never a silent fallback."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from extractor.backbones import BackboneSpec
from extractor.errors import HeadstartError, WeightsUnavailable

RANDOM_INIT = "headstart-kaiming/1"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class WeightsChoice:
    """What the user asked for: kind is imagenet, random or file."""

    kind: str
    seed: int = 0
    path: Path | None = None

    @property
    def label(self) -> str:
        if self.kind == "random":
            return f"random:{self.seed}"
        return str(self.path) if self.kind == "file" else self.kind


def parse_weights(text: str) -> WeightsChoice:
    """`imagenet`, `random`, `random:SEED`, or a path to a .safetensors/.pth/.pt file."""
    if text == "imagenet":
        return WeightsChoice("imagenet")
    if text == "random" or text.startswith("random:"):
        seed_text = text.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise HeadstartError(f"weights {text!r}: expected random or random:SEED with an integer seed")
        return WeightsChoice("random", seed=int(seed_text))
    path = Path(text).expanduser()
    if path.suffix not in (".safetensors", ".pth", ".pt"):
        raise HeadstartError(
            f"weights {text!r}: expected imagenet, random[:SEED] or a .safetensors/.pth/.pt file"
        )
    if not path.is_file():
        raise HeadstartError(f"weights file {path} does not exist; give an existing file, imagenet or random")
    return WeightsChoice("file", path=path.resolve())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(choice: WeightsChoice, spec: BackboneSpec) -> str:
    """The weights part of the fingerprint; random and ImageNet features can never share one."""
    if choice.kind == "imagenet":
        if spec.imagenet is None:
            hint = f" ({spec.weights_hint})" if spec.weights_hint else ""
            raise HeadstartError(f"backbone {spec.name} has no ImageNet weights in torchvision; use --weights random "
                                 f"or a weights file{hint}")
        return f"imagenet:{spec.imagenet}"
    if choice.kind == "random":
        return f"random:seed={choice.seed}:init={RANDOM_INIT}"
    return f"file:sha256={_file_sha256(choice.path)}"


def _imagenet_url(spec: BackboneSpec) -> str:
    import torchvision

    return torchvision.models.get_weight(spec.imagenet).url


def cache_file(spec: BackboneSpec) -> Path:
    """Where torchvision's cache (TORCH_HOME) keeps this backbone's ImageNet weights."""
    import torch

    url = _imagenet_url(spec)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _offline() -> bool:
    return os.environ.get("HEADSTART_OFFLINE", "").lower() in ("1", "true", "yes")


def fetch(spec: BackboneSpec) -> Path:
    """Download the ImageNet weights into the cache (for image builds); return the file."""
    import torch

    if spec.imagenet is None:
        raise HeadstartError(f"backbone {spec.name} has no ImageNet weights to fetch")
    target = cache_file(spec)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = _imagenet_url(spec)
    hash_prefix = target.stem.rsplit("-", 1)[-1]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix, progress=False)
    except Exception as exc:  # network, DNS, TLS or hash failure: one clear line
        raise WeightsUnavailable(_missing_message(spec, target, f"download failed: {exc}")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target


def _missing_message(spec: BackboneSpec, target: Path, why: str) -> str:
    return (
        f"ImageNet weights for {spec.name} are not cached ({why}); expected the file {target}. "
        f"Run `headstart weights fetch {spec.name}` where there is network, copy the file there "
        f"(TORCH_HOME sets the cache root), or choose --weights random or --weights PATH"
    )


def load_state_dict(choice: WeightsChoice, spec: BackboneSpec) -> dict:
    """Tensors for the trunk; raises WeightsUnavailable offline with nothing cached."""
    if choice.kind == "imagenet":
        target = cache_file(spec)
        if not target.is_file():
            if _offline():
                raise WeightsUnavailable(_missing_message(spec, target, "offline mode (HEADSTART_OFFLINE)"))
            fetch(spec)
        return _read_tensors(target)
    if choice.kind == "file":
        return _read_tensors(choice.path)
    raise ValueError(f"no state dict for weights kind {choice.kind}")


def _read_tensors(path: Path) -> dict:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HeadstartError(f"cannot read weights file {path}: {exc}; expected a state dict of tensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HeadstartError(f"weights file {path} holds {type(state).__name__}; expected a dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def init_random(model, seed: int) -> None:
    """Deterministic Kaiming init of every parameter and buffer (the model comes from meta)."""
    import math

    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)
            ):
                if isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight":
                    # per group: a depthwise conv's fan-out is its kernel's size (no earlier backbone had groups)
                    fan_out = tensor.shape[0] // getattr(module, "groups", 1) * math.prod(tensor.shape[2:])
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_out))
                elif tensor.ndim >= 2 and "running" not in name:  # attention projections, tokens, embeddings
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.02)  # (no earlier backbone had any)
                elif name in ("weight", "running_var"):
                    tensor.fill_(1)
                else:
                    tensor.zero_()


def load_into(model, state: dict, spec: BackboneSpec, source: str) -> None:
    """Load the tensors the trunk needs; extra tensors (classifier, aux head) are ignored."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise HeadstartError(
            f"weights from {source} lack {len(missing)} of the {len(own)} tensors {spec.name} needs "
            f"(first: {missing[0]}); expected a {spec.name} checkpoint"
        )
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise HeadstartError(
            f"weights from {source}: tensor {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(own[k].shape)} for {spec.name}"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)


TRUNK = "trunk.safetensors"  # a fine-tuned head's trunk weights, in its current version folder


def head_weights(text: str | None, home: Path) -> str | None:
    """`head:NAME` -> the trunk weights file of fine-tuned head NAME in this home; anything else unchanged."""
    if not text or not text.startswith("head:"):
        return text
    name = text.removeprefix("head:")
    folder = Path(home) / "heads" / name
    trunk = folder / "CURRENT" / TRUNK
    if not (folder / "CURRENT").exists():
        raise HeadstartError(f"weights {text!r}: there is no head {name!r} in {home}",
                             cli="fine-tune one with `headstart finetune` first", api="POST /finetune first")
    if not trunk.is_file():
        raise HeadstartError(f"weights {text!r}: head {name!r} is not fine-tuned (it has no trunk weights); "
                             f"expected a head made by finetune")
    return str(trunk.resolve())
