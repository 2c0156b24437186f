"""ARFD (kernel-regression recalibration + CKA) as L_F."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.losses.arfd import ARFD as ARFDLoss


class ARFD(Distiller):
    uses_teacher_features = True
    reads = ("arfd",)

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.arfd = ARFDLoss(cfg.arfd)

    def feature_loss(self, student_feats, teacher_feats):
        return self.arfd(student_feats, teacher_feats)
