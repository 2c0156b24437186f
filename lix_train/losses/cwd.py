"""Channel-wise distillation (CWD, Shu et al. 2021), the usual dense-prediction KD baseline.

Each channel's activation map is turned into a spatial distribution (softmax over positions
at temperature T) and the student's is pulled to the teacher's with KL. It transfers *where*
each class responds rather than per-pixel class posteriors. Labels play no part, so there is
no ignore mask; a teacher map of another size is resized to the student's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lix_train.losses.common import check_pair, resize_to


def cwd_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 / (B C) * sum over images and channels of KL(softmax_hw(T-map / T) || softmax_hw(S-map / T))."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_pair(student_maps, teacher_maps, what="maps for CWD")
    teacher_maps = resize_to(teacher_maps.detach(), tuple(student_maps.shape[-2:]))
    b, c = student_maps.shape[:2]
    log_ps = torch.log_softmax(student_maps.reshape(b, c, -1) / temperature, dim=2)
    log_pt = torch.log_softmax(teacher_maps.reshape(b, c, -1) / temperature, dim=2)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return temperature**2 * kl / (b * c)


class CWDLoss(nn.Module):
    """`cwd_loss` with its temperature bound."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_maps: torch.Tensor, teacher_maps: torch.Tensor) -> torch.Tensor:
        return cwd_loss(student_maps, teacher_maps, self.temperature)
