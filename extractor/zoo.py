"""Every torchvision classification model as a backbone: cut before its classifier's last layer (the pooled
penultimate features), input size and normalisation taken from its default weights' own transforms. Models are
built on the meta device to learn their shapes, so nothing is allocated until weights are loaded."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache

from extractor.errors import NotFound

FIXED_SIZE = ("vit_", "maxvit_")  # their position embeddings (or windows) fix the input size


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@contextmanager
def meta() -> Iterator[None]:
    """Build on the meta device. RegNet's constructor computes its widths with tensors, which need data: that one
    computation runs on the CPU inside the meta context."""
    import torch
    from torchvision.models import regnet

    original = regnet.BlockParams.__dict__["from_init_params"]

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(on_cpu)
    try:
        with torch.device("meta"):
            yield
    finally:
        regnet.BlockParams.from_init_params = original


def default_weights(name: str) -> str:
    from torchvision.models import get_model_weights

    return str(get_model_weights(name).DEFAULT)


@cache
def transforms_of(name: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) of the model's default weights."""
    from torchvision.models import get_model_weights

    t = get_model_weights(name).DEFAULT.transforms()
    return int(t.crop_size[0]), tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)


def cut(model) -> str:
    """Replace the classifier's last layer with identity; return where the cut is."""
    from torch import nn

    for attr in ("heads", "fc", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return f"{attr} removed (pre-logits)"
    head = model.classifier
    if not isinstance(head, nn.Sequential):
        model.classifier = nn.Identity()
        return "classifier removed (pooled penultimate)"
    last = max(i for i, layer in enumerate(head) if isinstance(layer, (nn.Linear, nn.Conv2d)))
    head[last] = nn.Identity()
    return f"classifier[{last}] removed (penultimate)"


def build(name: str):
    """The cut model, parameters uninitialised (meta); weights are loaded or initialised afterwards."""
    from torchvision.models import get_model

    kwargs = {}
    if name in ("inception_v3", "googlenet"):
        kwargs = {"aux_logits": False, "init_weights": False, "transform_input": True}
    if name.startswith("vit_"):
        kwargs = {"image_size": transforms_of(name)[0]}
    model = get_model(name, weights=None, **kwargs)
    cut(model)
    return model


@cache
def output_dim(name: str, size: int) -> int:
    import torch

    with meta():
        model = build(name).eval()
        return int(model(torch.empty(1, 3, size, size)).flatten(1).shape[1])


def describe(name: str) -> str:
    with meta():
        model = build(name)
    return f"torchvision {name}, {cut_of(model)}"


def cut_of(model) -> str:
    from torch import nn

    for attr in ("heads", "fc", "head"):
        if isinstance(getattr(model, attr, None), nn.Identity):
            return f"{attr} removed"
    return "classifier's last layer removed"


def check(name: str) -> None:
    """Raise NotFound with close matches when `name` is no registry backbone nor torchvision model."""
    from extractor.backbones import REGISTRY

    known = sorted({*REGISTRY, *names()})
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    raise NotFound(f"unknown backbone {name!r}{hint} Expected a registry name ({', '.join(sorted(REGISTRY))}) or "
                   f"any torchvision classification model (`headstart backbones --all` lists them)")


TABLE = "zoo_table.json"  # every model's default size, dim and weights, for listings (regenerate: --write)


@cache
def table() -> dict[str, dict]:
    import json
    from pathlib import Path

    path = Path(__file__).with_name(TABLE)
    return json.loads(path.read_text()) if path.is_file() else {}


def live_table() -> dict[str, dict]:
    """The table computed from the installed torchvision (about 15 s: every model is built on meta)."""
    out = {}
    for name in names():
        size, _, _ = transforms_of(name)
        out[name] = {"input_size": size, "dim": output_dim(name, size), "imagenet_weights": default_weights(name),
                     "resizable": not name.startswith(FIXED_SIZE)}
    return out


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m extractor.zoo --write   (regenerates extractor/zoo_table.json)")
    Path(__file__).with_name(TABLE).write_text(json.dumps(live_table(), indent=1, sort_keys=True) + "\n")
