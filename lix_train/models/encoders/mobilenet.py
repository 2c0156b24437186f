"""MobileNetV2-style encoder (inverted residuals, linear bottlenecks) with a width multiplier.

The classification network's final 1x1 convolution to 1280 channels is left out: a dense
decoder reads the 320-channel stride-32 feature directly, which saves a quarter of the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ConvBNAct, Encoder, check_in_channels, check_width, init_weights, round_channels

#: (expand ratio t, output channels c, repeats n, first stride s), grouped by encoder stage.
MOBILENETV2_STAGES: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, 2, 2)),  # with the stride-2 stem: stride 4
    ((6, 32, 3, 2),),  # stride 8
    ((6, 64, 4, 2), (6, 96, 3, 1)),  # stride 16
    ((6, 160, 3, 2), (6, 320, 1, 1)),  # stride 32
)
STEM_CHANNELS = 32


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(Encoder):
    """MobileNetV2-style encoder; stage 0 is the stem plus the blocks up to stride 4.

    Args:
        in_channels: input channels (3 for RGB; 1 or 3 for an X modality).
        width: channel multiplier; every width is rounded to a multiple of 8.
    """

    first_conv_key = "stages.0.stem.conv.weight"

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        check_in_channels(in_channels)
        check_width(width)
        out_channels = [round_channels(stage[-1][1] * width) for stage in MOBILENETV2_STAGES]
        super().__init__(in_channels, out_channels)
        self.width = width

        stem_channels = channels = round_channels(STEM_CHANNELS * width)
        for index, stage in enumerate(MOBILENETV2_STAGES):
            blocks: list[nn.Module] = []
            for t, c, n, s in stage:
                block_out = round_channels(c * width)
                for b in range(n):
                    blocks.append(InvertedResidual(channels, block_out, s if b == 0 else 1, t))
                    channels = block_out
            seq = nn.Sequential()
            if index == 0:
                seq.add_module("stem", ConvBNAct(in_channels, stem_channels, 3, 2, act=nn.ReLU6))
            seq.add_module("blocks", nn.Sequential(*blocks))
            self.stages.append(seq)
        init_weights(self)
