"""Every backbone's forward as named stages, from input to output (vgg16: block1..block5; resnet50: stem,
layer1..layer4; inception_v3: stem, mixed5, mixed6, mixed7; efficientnet_lite0: stem, stage1..stage7, head;
tiny: block1, block2). Running the stages one after the other is the trunk's forward (in eval mode; tested
for every registry entry), so fine-tuning can run a frozen prefix without autograd and train the last N."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from extractor.errors import HeadstartError

Stage = tuple[str, nn.Module, Callable[[torch.Tensor], torch.Tensor]]  # name, its modules, what it computes


def _seq(name: str, *modules: nn.Module, after: Callable | None = None) -> Stage:
    holder = nn.ModuleList(modules)

    def run(x: torch.Tensor) -> torch.Tensor:
        for module in holder:
            x = module(x)
        return after(x) if after else x

    return name, holder, run


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def _vgg16(m: nn.Module) -> list[Stage]:
    cuts = (0, 5, 10, 17, 24, 31)  # each block ends with its max-pool; block5_pool is the cut
    out = [_seq(f"block{i + 1}", *m.features[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    out[-1] = _seq("block5", *m.features[24:31], after=_flat)
    return out


def _resnet50(m: nn.Module) -> list[Stage]:
    pool = lambda x: torch.flatten(m.avgpool(x), 1)  # noqa: E731
    return [_seq("stem", m.conv1, m.bn1, m.relu, m.maxpool), _seq("layer1", m.layer1), _seq("layer2", m.layer2),
            _seq("layer3", m.layer3), _seq("layer4", m.layer4, after=pool)]


def _inception_v3(m: nn.Module) -> list[Stage]:
    pool = lambda x: torch.flatten(m.avgpool(x), 1)  # noqa: E731
    stem = _seq("stem", m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1, m.Conv2d_3b_1x1,
                m.Conv2d_4a_3x3, m.maxpool2)
    name, modules, run = stem
    return [(name, modules, lambda x: run(m._transform_input(x))),
            _seq("mixed5", m.Mixed_5b, m.Mixed_5c, m.Mixed_5d),
            _seq("mixed6", m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e),
            _seq("mixed7", m.Mixed_7a, m.Mixed_7b, m.Mixed_7c, after=pool)]


def _lite0(m: nn.Module) -> list[Stage]:
    import torch.nn.functional as F

    blocks = m._blocks
    cuts = (0, 1, 3, 5, 8, 11, 15, 16)
    stem = _seq("stem", m._conv_stem, m._bn0, after=F.relu6)
    stages = [_seq(f"stage{i + 1}", *blocks[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    head = _seq("head", m._conv_head, m._bn1, after=lambda x: F.relu6(x).mean(dim=(2, 3)))
    return [stem, *stages, head]


def _tiny(m: nn.Module) -> list[Stage]:
    return [_seq("block1", m[0], m[1]), _seq("block2", *m[2:])]


STAGES: dict[str, Callable[[nn.Module], list[Stage]]] = {
    "vgg16": _vgg16, "resnet50": _resnet50, "inception_v3": _inception_v3, "efficientnet_lite0": _lite0,
    "tiny": _tiny,
}


def stages(backbone: str, model: nn.Module) -> list[Stage]:
    if backbone not in STAGES:
        raise HeadstartError(f"backbone {backbone} declares no stages, so it cannot be fine-tuned; "
                             f"expected one of: {', '.join(sorted(STAGES))}")
    return STAGES[backbone](model)


def split(backbone: str, model: nn.Module, unfreeze: int) -> tuple[list[Stage], list[Stage]]:
    """(frozen prefix, trainable suffix): the last `unfreeze` stages train."""
    all_stages = stages(backbone, model)
    if not 1 <= unfreeze <= len(all_stages):
        names = ", ".join(s[0] for s in all_stages)
        raise HeadstartError(f"--unfreeze {unfreeze}: {backbone} has {len(all_stages)} stages ({names}); expected "
                             f"1 to {len(all_stages)}")
    return all_stages[:-unfreeze], all_stages[-unfreeze:]


def run(stage_list: list[Stage], x: torch.Tensor) -> torch.Tensor:
    for _, _, fn in stage_list:
        x = fn(x)
    return x
