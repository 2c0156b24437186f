"""Channel-wise distillation (CWD, Shu et al. 2021), the usual dense-prediction KD baseline.

Each channel's activation map is turned into a spatial distribution (softmax over positions
at temperature T) and the student's is pulled to the teacher's with KL. It transfers *where*
each class responds rather than per-pixel class posteriors. Labels play no part in the target,
but `valid` (e.g. `feature_valid_mask` of the labels) removes positions from both distributions:
the black padding of scale < 1 augmentation is not scene content and would otherwise take part
of every channel's spatial mass. A teacher map of another size is resized to the student's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from lix_train.config import check_positive, option
from lix_train.losses.common import check_pair, resize_to


# Added to the scaled logits of masked positions: exp() of it is exactly 0 in float32 and bfloat16.
_MASKED = -1e9


@dataclass
class CWDConfig:
    """Options of method cwd (distill.cwd)."""

    temperature: float = option(1.0, "Spatial-softmax temperature T of CWD (published segmentation configs use 4; "
                                "lix_train/study/tuned.yaml holds the val-chosen value).")

    def __post_init__(self):
        check_positive("cwd.temperature", self.temperature)


def cwd_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, temperature: float = 4.0,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 / (B C) * sum over images and channels of KL(softmax_hw(T-map / T) || softmax_hw(S-map / T)).

    `valid` [B, h, w] bool (the maps' size) restricts both softmaxes to the valid positions.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_pair(student_maps, teacher_maps, what="maps for CWD")
    teacher_maps = resize_to(teacher_maps.detach(), tuple(student_maps.shape[-2:]))
    b, c = student_maps.shape[:2]
    s = student_maps.reshape(b, c, -1) / temperature
    t = teacher_maps.reshape(b, c, -1) / temperature
    if valid is not None:
        if tuple(valid.shape) != (b, *student_maps.shape[-2:]):
            raise ValueError(f"CWD: valid mask {tuple(valid.shape)} does not match the maps' (B, h, w) "
                             f"{(b, *student_maps.shape[-2:])}")
        off = ~valid.reshape(b, 1, -1)
        s, t = s.masked_fill(off, _MASKED), t.masked_fill(off, _MASKED)
    log_ps = torch.log_softmax(s, dim=2)
    log_pt = torch.log_softmax(t, dim=2)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return temperature**2 * kl / (b * c)


class CWDLoss(nn.Module):
    """`cwd_loss` with its temperature bound."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_maps: torch.Tensor, teacher_maps: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        return cwd_loss(student_maps, teacher_maps, self.temperature, valid)
