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


def _pooled(m: nn.Module, *after: Callable) -> Callable:
    """The tail of a torchvision classifier forward: average pool, flatten, then `after` (what is left of the
    classifier once its last layer is identity)."""
    def tail(x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        for fn in after:
            x = fn(x)
        return x

    return tail


def _features(m: nn.Module, cuts: tuple[int, ...], names: tuple[str, ...], tail: Callable) -> list[Stage]:
    stages = [_seq(n, *m.features[a:b]) for n, a, b in zip(names, cuts, cuts[1:], strict=False)]
    name, modules, run_ = stages[-1]
    stages[-1] = (name, modules, lambda x: tail(run_(x)))
    return stages


def _mobilenet_v2(m: nn.Module) -> list[Stage]:
    return _features(m, (0, 2, 4, 7, 14, 17, 19), ("stem", "stage2", "stage3", "stage4", "stage5", "head"),
                     _pooled(m, m.classifier))


def _efficientnet_v2_s(m: nn.Module) -> list[Stage]:
    return _features(m, tuple(range(9)), ("stem", *(f"stage{i}" for i in range(1, 7)), "head"),
                     _pooled(m, m.classifier))


def _convnext(m: nn.Module) -> list[Stage]:
    def tail(x: torch.Tensor) -> torch.Tensor:
        return m.classifier(m.avgpool(x))

    stages = _features(m, (0, 1, 2, 4, 6, 8), ("stem", "stage1", "stage2", "stage3", "stage4"), tail)
    name, modules, run_ = stages[-1]
    return [*stages[:-1], (name, nn.ModuleList([modules, m.classifier]), run_)]


def _regnet(m: nn.Module) -> list[Stage]:
    blocks = list(m.trunk_output)
    return [_seq("stem", m.stem), *[_seq(f"block{i}", b) for i, b in enumerate(blocks[:-1], 1)],
            _seq(f"block{len(blocks)}", blocks[-1], after=lambda x: m.fc(torch.flatten(m.avgpool(x), 1)))]


class _Holder(nn.Module):
    """Modules and loose parameters of one stage (a ViT's class token and position embedding)."""

    def __init__(self, modules: list[nn.Module], params: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        for name, param in params.items():
            self.register_parameter(name, param)


def _vit(m: nn.Module) -> list[Stage]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = m._process_input(x)
        x = torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return m.encoder.dropout(x + m.encoder.pos_embedding)

    layers = m.encoder.layers
    step = max(1, len(layers) // 4)
    cuts = [*range(0, len(layers), step)][:4] + [len(layers)]
    stages = [("embed", _Holder([m.conv_proj, m.encoder.dropout], {"class_token": m.class_token,
                                                                  "pos_embedding": m.encoder.pos_embedding}), embed)]
    stages += [_seq(f"blocks{i + 1}", *layers[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    name, modules, run_ = stages[-1]
    stages[-1] = (name, nn.ModuleList([modules, m.encoder.ln]), lambda x: m.heads(m.encoder.ln(run_(x))[:, 0]))
    return stages


def _swin(m: nn.Module) -> list[Stage]:
    def tail(x: torch.Tensor) -> torch.Tensor:
        return m.head(m.flatten(m.avgpool(m.permute(m.norm(x)))))

    stages = _features(m, (0, 1, 2, 4, 6, 8), ("embed", "stage1", "stage2", "stage3", "stage4"), tail)
    name, modules, run_ = stages[-1]
    return [*stages[:-1], (name, nn.ModuleList([modules, m.norm]), run_)]


def _tiny(m: nn.Module) -> list[Stage]:
    return [_seq("block1", m[0], m[1]), _seq("block2", *m[2:])]


STAGES: dict[str, Callable[[nn.Module], list[Stage]]] = {
    "vgg16": _vgg16, "resnet50": _resnet50, "inception_v3": _inception_v3, "efficientnet_lite0": _lite0,
    "mobilenet_v2": _mobilenet_v2, "efficientnet_v2_s": _efficientnet_v2_s, "convnext_tiny": _convnext,
    "regnet_y_16gf": _regnet, "vit_b_16": _vit, "swin_v2_t": _swin, "tiny": _tiny,
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
