"""Every backbone declares its stages, and running them in order is the trunk's forward."""

from __future__ import annotations

import pytest
import torch

from extractor.backbones import REGISTRY
from extractor.errors import HeadstartError
from extractor.model import LoadedBackbone, resolve
from extractor.stages import run, split, stages


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_stages_compose_to_the_trunks_forward(name):
    resolved = resolve(name, "random", REGISTRY[name].min_size if name in ("vgg16", "resnet50") else None)
    model = LoadedBackbone(resolved, "cpu").setup().model
    size = resolved.size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = model(x).flatten(1)
        staged = run(stages(name, model), x)
    assert torch.allclose(whole, staged, rtol=1e-4, atol=1e-5), name
    names = [s[0] for s in stages(name, model)]
    assert len(names) >= 2 and len(set(names)) == len(names)
    params = {id(p) for _, modules, _ in stages(name, model) for p in modules.parameters()}
    assert params == {id(p) for p in model.parameters()}  # every parameter belongs to exactly one stage


def test_unfreeze_counts_from_the_end_and_is_checked():
    model = LoadedBackbone(resolve("vgg16", "random", 32), "cpu").setup().model
    frozen, trainable = split("vgg16", model, 2)
    assert [s[0] for s in frozen] == ["block1", "block2", "block3"] and [s[0] for s in trainable] == ["block4",
                                                                                                      "block5"]
    with pytest.raises(HeadstartError, match="vgg16 has 5 stages .*expected 1 to 5"):
        split("vgg16", model, 6)
