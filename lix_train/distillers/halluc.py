"""Modality hallucination (Hoffman et al., CVPR 2016) as L_F; its projectors are extra learnable parts."""

from __future__ import annotations

import torch

from lix_train.distillers.base import Distiller
from lix_train.distillers.channels import DEFAULT_X_CHANNELS, stage_channels, x_branch_channels
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.halluc import HallucConfig, HallucLoss


@register_distiller("halluc", MethodOptions("halluc", HallucConfig, "Modality hallucination of the teacher's "
                                                                   "X-branch or fused features (method halluc)."))
class Halluc(Distiller):
    """The student's stage features, through training-only projectors, regress the teacher's X-branch features
    (distill.halluc.target x_branch, the paper's setting) or its fused stage features (target fused).

    With target x_branch the teacher runs its X encoder only (`teacher.x_features`), so a step costs less than
    one full teacher forward; a precomputed `teacher_out` must then hold those X-branch features.
    """

    build_options = ("x_channels",)  # what build_distiller passes to __init__
    uses_teacher_features = True
    reads = ("halluc",)

    def __init__(self, student, teacher, cfg, x_channels: int | None = None):
        super().__init__(student, teacher, cfg)
        x_channels = x_channels or DEFAULT_X_CHANNELS
        target = (x_branch_channels(teacher, x_channels) if cfg.halluc.target == "x_branch"
                  else stage_channels(teacher, x_channels))
        self.halluc = HallucLoss(cfg.halluc, stage_channels(student), target, cfg.ignore_index)

    def get_extra_parameters(self):
        return list(self.halluc.parameters())

    @torch.no_grad()
    def teacher_forward(self, image, x):
        if self.cfg.halluc.target == "fused":
            return super().teacher_forward(image, x)
        if x is None:
            raise ValueError("Halluc: the teacher's X branch needs the X modality, got x=None")
        return None, self.teacher.x_features(x)

    def feature_loss(self, student_feats, teacher_feats, target):
        return self.halluc(student_feats, teacher_feats, target)
