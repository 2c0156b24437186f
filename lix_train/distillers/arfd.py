"""ARFD (kernel-regression recalibration + CKA) as L_F."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.distillers.channels import stage_channels
from lix_train.losses.arfd import ARFDConfig, ARFDLoss


def arfd_loss_for(cfg, student, teacher) -> ARFDLoss:
    """ARFD's loss module for this pair of networks (their stage widths size the projectors, when on)."""
    widths = (stage_channels(student), stage_channels(teacher)) if cfg.arfd.projector else (None, None)
    return ARFDLoss(cfg.arfd, *widths, cfg.ignore_index)


@register_distiller("arfd", MethodOptions("arfd", ARFDConfig,
                                        "Adaptively-recalibrated feature distillation (methods arfd and lix)."))
class ARFD(Distiller):
    uses_teacher_features = True
    reads = ("arfd",)

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.arfd = arfd_loss_for(cfg, student, teacher)

    def get_extra_parameters(self):
        return list(self.arfd.parameters())  # the 1x1 projectors (arfd.projector): trained, never exported

    def feature_loss(self, student_feats, teacher_feats, target):
        return self.arfd(student_feats, teacher_feats, target)
