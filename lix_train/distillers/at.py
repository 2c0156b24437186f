"""Attention transfer on the chosen feature stages as L_F."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.at import ATConfig, at_loss


@register_distiller("at", MethodOptions("at", ATConfig, "Attention transfer (method at)."))
class AT(Distiller):
    uses_teacher_features = True
    reads = ("at",)

    def feature_loss(self, student_feats, teacher_feats, target):
        return at_loss(student_feats, teacher_feats, self.cfg.at.stages, target=target, ignore_index=self.cfg.ignore_index)
