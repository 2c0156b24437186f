"""Pixel-wise cross-entropy on the labels (L_H), with ignore_index."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_logits, check_target, resize_to


def pixel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean CE over valid pixels, logits resized bilinearly to the label size.

    Unlike `F.cross_entropy(reduction="mean")`, a batch whose pixels are all ignored gives 0
    (with a graph) instead of NaN, so one empty crop cannot poison a run. With class weights
    the mean is weighted, as in `F.cross_entropy`.
    """
    check_logits("logits", logits)
    check_target(logits, target)
    logits = resize_to(logits, tuple(target.shape[-2:]))
    target = target.long()
    if class_weights is not None and class_weights.numel() != logits.shape[1]:
        raise ValueError(f"class_weights: {class_weights.numel()} values for {logits.shape[1]} classes")
    total = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if class_weights is None:
        count = valid.sum().clamp_min(1).to(logits.dtype)
    else:
        pixel_weights = class_weights.to(logits.dtype)[torch.where(valid, target, 0)]
        count = torch.where(valid, pixel_weights, 0).sum().clamp_min(torch.finfo(logits.dtype).tiny)
    return total / count

class PixelCrossEntropy(nn.Module):
    """`pixel_cross_entropy` as a module (class weights registered as a buffer)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pixel_cross_entropy(logits, target, self.ignore_index, self.class_weights)
