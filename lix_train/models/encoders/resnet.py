"""ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks) encoders with a width multiplier.

Layer names follow the usual ResNet layout (conv1/bn1/..., a `downsample` shortcut) so ImageNet
weights with torchvision key names map onto them by renaming only (see `models.weights`).
At width 1.0 and 3 input channels every tensor shape equals the torchvision reference.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import ConvBNAct, Encoder, check_in_channels, check_width, init_weights, round_channels

#: blocks per stage for each depth
RESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
}
BASE_WIDTHS = (64, 128, 256, 512)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 projection when the residual changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return ConvBNAct(in_channels, out_channels, 1, stride, act=None)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; the ResNet-18/34 block."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), with a residual; ResNet-50's block."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetStem(nn.Sequential):
    """7x7 stride-2 convolution and 3x3 stride-2 max-pool: the image at stride 4."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 7, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)


class ResNetEncoder(Encoder):
    """ResNet-style encoder; stage 0 is the stem plus the first block group (stride 4).

    Args:
        depth: "resnet18", "resnet34" or "resnet50".
        in_channels: input channels (3 for RGB; 1 or 3 for an X modality).
        width: channel multiplier; every width is rounded to a multiple of 8 (0.25 for tiny tests).
    """

    first_conv_key = "stages.0.stem.conv.weight"

    def __init__(self, depth: str = "resnet18", in_channels: int = 3, width: float = 1.0) -> None:
        if depth not in RESNET_LAYERS:
            raise ValueError(f"unknown ResNet depth {depth!r}; valid: {', '.join(RESNET_LAYERS)}")
        check_in_channels(in_channels)
        check_width(width)
        block = Bottleneck if depth == "resnet50" else BasicBlock
        widths = [round_channels(w * width) for w in BASE_WIDTHS]
        super().__init__(in_channels, [w * block.expansion for w in widths])
        self.depth, self.width = depth, width

        channels = widths[0]
        for index, (blocks, stage_width) in enumerate(zip(RESNET_LAYERS[depth], widths)):
            stride = 1 if index == 0 else 2
            group = []
            for b in range(blocks):
                group.append(block(channels, stage_width, stride if b == 0 else 1))
                channels = stage_width * block.expansion
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            if index == 0:
                parts["stem"] = ResNetStem(in_channels, widths[0])
            parts["blocks"] = nn.Sequential(*group)
            self.stages.append(nn.Sequential(parts))
        init_weights(self)
        zero_init_residuals(self)


def zero_init_residuals(module: nn.Module) -> None:
    """Start every residual block as the identity (last BN scale = 0).

    Without it, activations grow with depth at initialisation and the first logits are in the
    hundreds, which makes the first cross-entropy and distillation steps needlessly violent.
    """
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
