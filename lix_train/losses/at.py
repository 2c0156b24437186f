"""Attention transfer (AT, Zagoruyko & Komodakis 2017) over chosen feature stages.

An attention map is the per-position mean of squared activations, L2-normalised per image. It
has one channel whatever the layer width, so student and teacher stages with different
channel counts compare directly; the teacher's map is resized to the student's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.config import option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_pair, labels_mask_at, resize_to


@dataclass
class ATConfig:
    """Options of method at (distill.at)."""

    stages: tuple[int, ...] = option((1, 2, 3), "Feature stages for AT (indices into strides 4, 8, 16, 32).")

    def __post_init__(self):
        self.stages = tuple(self.stages)
        if not self.stages or min(self.stages) < 0:
            raise ValueError(f"at.stages={self.stages!r} must be non-empty indices >= 0")


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, 1, h, w] mean of squares over channels (not yet normalised)."""
    return features.pow(2).mean(dim=1, keepdim=True)


def at_stage_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, valid: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Mean over images of || a_S / ||a_S|| - a_T / ||a_T|| ||_2^2 (a scale-free value in [0, 2]).

    `valid` [B, h, w] (the student's size) zeroes masked positions (crop padding) in both maps first.
    """
    check_pair(student_feat, teacher_feat, what="features for AT", same_channels=False)
    a_s = attention_map(student_feat)
    a_t = resize_to(attention_map(teacher_feat.detach()), tuple(a_s.shape[-2:]))
    if valid is not None:
        keep = valid[:, None].to(a_s.dtype)
        a_s, a_t = a_s * keep, a_t * keep
    b = a_s.shape[0]
    a_s = F.normalize(a_s.reshape(b, -1), dim=1)
    a_t = F.normalize(a_t.reshape(b, -1), dim=1)
    return (a_s - a_t).pow(2).sum(dim=1).mean()


def at_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    stages: Sequence[int],
    weights: Sequence[float] | None = None,
    target: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Weighted sum of `at_stage_loss` over the stage indices in `stages`; `target` labels mask the padding."""
    weights = [1.0] * len(stages) if weights is None else list(weights)
    if len(weights) != len(stages):
        raise ValueError(f"at_loss: {len(weights)} weights for {len(stages)} stages")
    for k in stages:
        if not (0 <= k < len(student_feats) and k < len(teacher_feats)):
            raise ValueError(
                f"at_loss: stage {k} out of range (student has {len(student_feats)}, teacher {len(teacher_feats)} stages)"
            )
    return sum(w * at_stage_loss(student_feats[k], teacher_feats[k],
                                 labels_mask_at(target, student_feats[k], ignore_index))
               for w, k in zip(weights, stages))


class ATLoss(nn.Module):
    """`at_loss` with its stages bound."""

    def __init__(self, stages: Sequence[int] = (1, 2, 3), weights: Sequence[float] | None = None):
        super().__init__()
        self.stages, self.weights = tuple(stages), weights

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return at_loss(student_feats, teacher_feats, self.stages, self.weights)
