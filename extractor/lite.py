"""EfficientNet-Lite0 (Tan & Le's EfficientNet-B0 layout without squeeze-excitation, ReLU6, a fixed stem and head),
with the parameter names of the widely used PyTorch port, so that its ImageNet checkpoints load as a weights file.
The weights were trained in TensorFlow: stride-2 convolutions pad the TensorFlow way ("SAME": the extra row and
column at the bottom and right), batch norm uses eps 1e-3, and inputs are (pixel - 127) / 128."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (expansion, kernel, stride of the first block, output channels, blocks) per stage
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
EPS = 1e-3


class SameConv(nn.Conv2d):
    """A convolution that pads like TensorFlow's SAME: symmetric at stride 1, bottom/right-heavy at stride 2."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups,
                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        k = self.kernel_size[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // 2) - 1) * 2 + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise, 1x1 project; a skip when the shape is kept."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=EPS)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The trunk up to global average pooling: 1280-d features (the classifier `_fc` is not built)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=EPS)
        blocks, cin = [], 32
        for expansion, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expansion, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
