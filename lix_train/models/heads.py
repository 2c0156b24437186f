"""Segmentation head: per-pixel class logits at the input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationHead(nn.Module):
    """Optional dropout -> 1x1 convolution to `num_classes` -> bilinear upsampling to the input size.

    The upsampling uses align_corners=False and no antialiasing, the combination every ONNX /
    TensorRT resize implements identically.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        # Small weights: the first logits are near zero, so the initial cross-entropy is about
        # log(num_classes) and the first distillation steps compare near-uniform distributions.
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        logits = self.classifier(self.dropout(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
