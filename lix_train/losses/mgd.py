"""Masked Generative Distillation (MGD; Yang et al., ECCV 2022) over chosen feature stages.

Per distilled stage k, the student feature S_k is aligned to the teacher's channels by a 1x1
convolution (none when the channel counts already match, as in the paper), a random spatial
mask M zeroes a fraction `mask_ratio` of its positions (all channels of a position at once),
and a generation block G (3x3 conv -> ReLU -> 3x3 conv) must regenerate the *full* teacher
feature T_k from what is left:

    L_k = 1 / (|valid| * C_t) * sum_{valid (i, j)} sum_c ( G(align(S_k) * M) - T_k )^2

The teacher is detached and resized to the student's size. Cells of padding and unlabelled
areas (`feature_valid_mask` of the labels) are left out; the mask itself is drawn over every
cell from torch's global RNG (the trainer saves and restores it, so seeded runs are
reproducible and resume exactly).

Mapping to the paper: the official code sums the squared error over C, H and W, divides by the
batch size N and multiplies by alpha (2e-5 for segmentation, with mask ratio 0.75). With every
cell valid, alpha * sum / N = alpha * C_t * H * W * L_k, so `distill.lambda_f` = alpha * C_t * h * w
reproduces the paper's weighting for one stage of size h x w (e.g. 2e-5 * 512 * 12 * 40 ~ 4.9
for a 512-channel stride-16 stage of a 192x640 crop). The mean keeps one lambda_f meaningful
across widths, stages and crop sizes, which a sum does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from lix_train.config import check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_pair, check_stages, labels_mask_at, masked_mean, resize_to


@dataclass
class MGDConfig:
    """Settings of MGD's feature loss L_F."""

    stages: tuple[int, ...] = option((2, 3), "Feature stages to distil (indices into strides 4, 8, 16, 32).")
    mask_ratio: float = option(0.75, "Fraction of student feature positions zeroed before generation "
                                     "(the paper's segmentation setting: 0.75).")

    def __post_init__(self):
        self.stages = check_stages("mgd.stages", self.stages)
        check_range("mgd.mask_ratio", self.mask_ratio, 0.0)
        if not self.mask_ratio < 1.0:
            raise ValueError(f"mgd.mask_ratio={self.mask_ratio!r} must be < 1 (1 would leave the generator nothing)")


def random_keep_mask(feature: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """[B, C, h, w] -> [B, 1, h, w] float mask, 0 at a fraction `mask_ratio` of positions (global RNG)."""
    b, _, h, w = feature.shape
    draw = torch.rand((b, 1, h, w), device=feature.device)
    return (draw >= mask_ratio).to(feature.dtype)


def mgd_stage_loss(
    aligned_student: torch.Tensor,
    teacher_feat: torch.Tensor,
    generator: Callable[[torch.Tensor], torch.Tensor],
    keep: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of G(aligned_student * keep) to the detached teacher over valid cells and channels.

    aligned_student [B, C_t, h, w] (already in the teacher's channels); teacher_feat [B, C_t, h', w']
    (resized to h x w); keep [B, 1, h, w]; valid [B, h, w] bool or None (every cell).
    """
    check_pair(aligned_student, teacher_feat, what="features for MGD (after alignment)")
    target = resize_to(teacher_feat.detach(), tuple(aligned_student.shape[-2:]))
    generated = generator(aligned_student * keep)
    if generated.shape != target.shape:
        raise ValueError(f"MGD: the generator returned {tuple(generated.shape)}, expected {tuple(target.shape)}")
    error = (generated - target).pow(2).mean(dim=1)
    return error.mean() if valid is None else masked_mean(error, valid)


def mgd_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    aligns: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    generators: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    stages: Sequence[int],
    mask_ratio: float,
    target: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Sum over `stages` of `mgd_stage_loss`; aligns[i] / generators[i] belong to stages[i].

    `target` (labels [B, H, W]) leaves padded / unlabelled cells out; None counts every cell.
    """
    if not (len(aligns) == len(generators) == len(stages)):
        raise ValueError(f"mgd_loss: {len(aligns)} aligns and {len(generators)} generators for {len(stages)} stages")
    total = None
    for align, generate, k in zip(aligns, generators, stages):
        if not (0 <= k < len(student_feats) and k < len(teacher_feats)):
            raise ValueError(
                f"mgd_loss: stage {k} out of range (student has {len(student_feats)}, teacher {len(teacher_feats)} stages)"
            )
        student = align(student_feats[k])
        term = mgd_stage_loss(student, teacher_feats[k], generate, random_keep_mask(student, mask_ratio),
                              labels_mask_at(target, student, ignore_index))
        total = term if total is None else total + term
    return total


def generation_block(channels: int) -> nn.Sequential:
    """MGD's generator: 3x3 conv -> ReLU -> 3x3 conv, channels -> channels."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1)
    )


class MGDLoss(nn.Module):
    """`mgd_loss` with its align convolutions and generation blocks (training-only parts, not the student's).

    Args:
        cfg: stages and mask ratio.
        student_channels / teacher_channels: channels of every stage (index = stage).
        ignore_index: label value whose cells are left out.
    """

    def __init__(self, cfg: MGDConfig, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        for k in cfg.stages:
            if not (k < len(student_channels) and k < len(teacher_channels)):
                raise ValueError(f"mgd.stages: stage {k} out of range (student has {len(student_channels)}, "
                                 f"teacher {len(teacher_channels)} stages)")
        self.stages, self.mask_ratio, self.ignore_index = tuple(cfg.stages), cfg.mask_ratio, ignore_index
        self.align = nn.ModuleList(
            nn.Identity() if student_channels[k] == teacher_channels[k] else nn.Conv2d(student_channels[k], teacher_channels[k], 1)
            for k in self.stages
        )
        self.generate = nn.ModuleList(generation_block(teacher_channels[k]) for k in self.stages)

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                target: torch.Tensor | None = None) -> torch.Tensor:
        return mgd_loss(student_feats, teacher_feats, self.align, self.generate, self.stages, self.mask_ratio,
                        target, self.ignore_index)
