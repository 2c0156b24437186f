"""Modality hallucination (Hoffman, Gupta and Darrell, CVPR 2016) as L_F.

Hoffman et al. train, beside the RGB network, a *hallucination* network that sees only RGB and is
taught to reproduce the mid-level activations of the depth network (an L2 loss between the two
networks' features), so that at test time RGB alone stands in for depth. Here the student's own
encoder is the hallucination network: per chosen stage k, a training-only projector P_k
(3x3 conv -> BN -> ReLU -> 1x1 conv, dropped at export) maps the student feature S_k to the
teacher's channels, and must reproduce a teacher feature T_k:

* target `x_branch` (the paper's setting): the teacher's X encoder stage k, what the geometry branch
  alone computes from X (with intermediate fusion too: the X branch never sees RGB);
* target `fused`: the teacher's fused stage k, the feature its decoder reads (RGB + X).

The loss over the valid cells V (`feature_valid_mask` of the labels: crop padding and unlabelled
areas left out), with T_k detached and resized to the student's size:

    normalise true:   L_k = sum_V sum_c (P_k(S_k) - T_k)^2 / sum_V sum_c T_k^2
    normalise false:  L_k = 1 / (|V| C_t) sum_V sum_c (P_k(S_k) - T_k)^2      (the paper's plain L2)

The normalised form is a relative squared error: a zero prediction scores exactly 1 whatever the
teacher's activation scale, so one `distill.lambda_f` means the same at every stage and width
(the paper balanced its L2 by hand per layer). L_F is the sum over the chosen stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from lix_train.config import check_choice, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_pair, check_stages, labels_mask_at, masked_mean, resize_to

HALLUC_TARGETS = ("x_branch", "fused")
_EPS = 1e-12


@dataclass
class HallucConfig:
    """Settings of modality hallucination's feature loss L_F (method halluc)."""

    target: str = option("x_branch", "Teacher feature the student hallucinates: x_branch (the X encoder's stages, "
                         "Hoffman et al.) or fused (the fused stages the teacher's decoder reads).",
                         choices=HALLUC_TARGETS)
    stages: tuple[int, ...] = option((2, 3), "Feature stages to hallucinate (indices into strides 4, 8, 16, 32; "
                                     "the paper used mid-level features).")
    normalise: bool = option(True, "Divide each stage's squared error by the teacher feature's squared norm "
                             "(relative error: 1 for a zero prediction at any scale); false is the plain L2.")

    def __post_init__(self):
        check_choice("halluc.target", self.target, HALLUC_TARGETS)
        self.stages = check_stages("halluc.stages", self.stages)


def halluc_stage_loss(projected: torch.Tensor, teacher_feat: torch.Tensor, valid: torch.Tensor | None = None,
                      normalise: bool = True) -> torch.Tensor:
    """Squared error of the projected student feature to the detached teacher feature over valid cells.

    projected [B, C_t, h, w] (already in the teacher's channels); teacher_feat [B, C_t, h', w'] (resized
    to h x w); valid [B, h, w] bool or None (every cell). Exactly 0 (with a graph) when no cell is valid.
    """
    check_pair(projected, teacher_feat, what="features for halluc (after the projector)")
    target = resize_to(teacher_feat.detach(), tuple(projected.shape[-2:]))
    error = (projected - target).pow(2).mean(dim=1)
    if valid is None:
        valid = torch.ones_like(error, dtype=torch.bool)
    loss = masked_mean(error, valid)
    if not normalise:
        return loss
    return loss / masked_mean(target.pow(2).mean(dim=1), valid).clamp_min(_EPS)


def halluc_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    projectors: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    stages: Sequence[int],
    target: torch.Tensor | None = None,
    normalise: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Sum over `stages` of `halluc_stage_loss`; projectors[i] belongs to stages[i].

    `target` (labels [B, H, W]) leaves padded / unlabelled cells out; None counts every cell.
    """
    if len(projectors) != len(stages):
        raise ValueError(f"halluc_loss: {len(projectors)} projectors for {len(stages)} stages")
    total = None
    for project, k in zip(projectors, stages):
        if not (0 <= k < len(student_feats) and k < len(teacher_feats)):
            raise ValueError(f"halluc_loss: stage {k} out of range (student has {len(student_feats)}, "
                             f"teacher {len(teacher_feats)} stages)")
        projected = project(student_feats[k])
        term = halluc_stage_loss(projected, teacher_feats[k], labels_mask_at(target, projected, ignore_index),
                                 normalise)
        total = term if total is None else total + term
    return total


def hallucination_projector(in_channels: int, out_channels: int) -> nn.Sequential:
    """Student channels -> teacher channels: 3x3 conv -> BN -> ReLU -> 1x1 conv (training only)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.Conv2d(out_channels, out_channels, 1))


class HallucLoss(nn.Module):
    """`halluc_loss` with its projectors (training-only parts, not the student's).

    Args:
        cfg: target, stages and normalisation.
        student_channels / teacher_channels: channels of every stage (index = stage) of the student and of
            the teacher feature hallucinated (X branch or fused, per cfg.target).
        ignore_index: label value whose cells are left out.
    """

    def __init__(self, cfg: HallucConfig, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        for k in cfg.stages:
            if not (k < len(student_channels) and k < len(teacher_channels)):
                raise ValueError(f"halluc.stages: stage {k} out of range (student has {len(student_channels)}, "
                                 f"teacher {len(teacher_channels)} stages)")
        self.stages, self.normalise, self.ignore_index = tuple(cfg.stages), cfg.normalise, ignore_index
        self.project = nn.ModuleList(hallucination_projector(student_channels[k], teacher_channels[k])
                                     for k in self.stages)

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                target: torch.Tensor | None = None) -> torch.Tensor:
        return halluc_loss(student_feats, teacher_feats, self.project, self.stages, target, self.normalise,
                           self.ignore_index)
