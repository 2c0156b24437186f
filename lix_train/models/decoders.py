"""FPN decoder: four encoder stages (strides 4..32) -> one stride-4 map with `channels` channels.

Lateral 1x1 convolutions bring every stage to the same width, a top-down pass adds each coarser
level (nearest 2x upsampling) to the next finer one, 3x3 conv-BN-ReLU smooths every level, and
the levels are merged at stride 4 by bilinear upsampling and summation. Only convolutions,
nearest / bilinear resizes and additions: everything exports cleanly to ONNX and TensorRT.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders.base import STRIDES, ConvBNAct, init_weights


class FPNDecoder(nn.Module):
    """Feature pyramid over the encoder stages, merged to the finest (stride-4) level.

    Args:
        in_channels: channels of each encoder stage, shallowest first.
        channels: width of the pyramid and of the output map.
        strides: the stages' strides, shallowest first; each must be twice the previous one.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 128, strides: Sequence[int] = STRIDES) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"FPNDecoder got {len(in_channels)} in_channels for {len(strides)} strides")
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"FPNDecoder strides must double from level to level, got {list(strides)}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"decoder channels must be a positive integer, got {channels!r}")
        self.in_channels = list(in_channels)
        self.strides = tuple(strides)
        self.out_channels = channels
        self.output_stride = self.strides[0]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(ConvBNAct(channels, channels, 3) for _ in in_channels)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(f"FPNDecoder expects {len(self.lateral)} feature maps, got {len(features)}")
        level = self.lateral[-1](features[-1])
        pyramid = [level]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral[index](features[index])
            level = lateral + F.interpolate(level, size=lateral.shape[-2:], mode="nearest")
            pyramid.append(level)
        pyramid.reverse()  # finest first
        merged = self.smooth[0](pyramid[0])
        for smooth, level in zip(self.smooth[1:], pyramid[1:]):
            merged = merged + F.interpolate(smooth(level), size=merged.shape[-2:], mode="bilinear", align_corners=False)
        return merged
