"""What every encoder promises, and the small building blocks the plain-PyTorch encoders share.

An encoder is four stages at strides 4, 8, 16 and 32. They live in a `stages` ModuleList so a
caller can run them one at a time: the duplex teacher's intermediate fusion adds the X feature
to the RGB feature between stages, which needs exactly that.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

STRIDES: tuple[int, ...] = (4, 8, 16, 32)


def round_channels(channels: float, divisor: int = 8) -> int:
    """Width-scaled channel count rounded to a multiple of `divisor`.

    Never below `divisor`, and never more than 10 % under the requested count, so a small width
    multiplier shrinks a network without starving any layer (and stays SIMD / tensor-core friendly).
    """
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def check_width(width: float) -> None:
    """Raise ValueError unless the width multiplier is a positive number."""
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"width must be a positive number (1.0 = the reference network), got {width!r}")


def check_in_channels(in_channels: int) -> None:
    """Raise ValueError unless the input channel count is a positive integer."""
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer (3 for RGB, 1 or 3 for X), got {in_channels!r}")


class ConvBNAct(nn.Sequential):
    """Conv (no bias: the BN follows) -> BatchNorm -> optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        if act is not None:
            self.act = act(inplace=True)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU gain), BN at identity, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Base class: `stages` (4 modules) -> features at `strides`, with `out_channels` per stage."""

    strides: tuple[int, ...] = STRIDES
    #: state-dict key of the first convolution's weight; weight loading adapts its input channels.
    first_conv_key: str = ""
    #: False for encoders that cannot be run one stage at a time (intermediate fusion needs it).
    stagewise: bool = True

    def __init__(self, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels: list[int] = list(out_channels)
        self.stages = nn.ModuleList()

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage `index` alone (input: the previous stage's output, or the image for stage 0)."""
        return self.stages[index](x)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All stage outputs, shallowest first (strides 4, 8, 16, 32)."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(x)
