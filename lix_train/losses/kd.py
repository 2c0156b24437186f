"""Classical pixel-wise knowledge distillation (Hinton KD applied to every labelled pixel)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from lix_train.config import check_positive, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import masked_mean, valid_mask
from lix_train.losses.dkd import prepare_logits


@dataclass
class KDConfig:
    """Options of method kd (distill.kd)."""

    temperature: float = option(1.0, "Softmax temperature T of KD (the loss is T^2-scaled).")

    def __post_init__(self):
        check_positive("kd.temperature", self.temperature)


def kd_pixel_map(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p^T || p^S) per pixel at temperature T, [B, h, w], not T^2-scaled (same-size inputs)."""
    log_ps = torch.log_softmax(student_logits / temperature, dim=1)
    log_pt = torch.log_softmax(teacher_logits / temperature, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """T^2 * mean over valid pixels of KL(p^T || p^S); labels only say which pixels count.

    Pixels labelled `ignore_index` are left out so that KD, DKD and DWLD average over the same
    pixels and their values are comparable.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_logits, teacher_logits = prepare_logits(student_logits, teacher_logits, target)
    valid, _ = valid_mask(target, ignore_index)
    return temperature**2 * masked_mean(kd_pixel_map(student_logits, teacher_logits, temperature), valid)


class KDLoss(nn.Module):
    """`kd_loss` with its temperature bound."""

    def __init__(self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.temperature, self.ignore_index = temperature, ignore_index

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, target, self.temperature, self.ignore_index)
