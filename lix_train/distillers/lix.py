"""LIX: DWLD as L_L plus ARFD as L_F."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import register_distiller
from lix_train.distillers.arfd import arfd_loss_for
from lix_train.distillers.dwld import dwld_loss_for


@register_distiller("lix")
class LIX(Distiller):
    """Both terms; the extra learnable parts are the DWC (dwld.mode adversarial) and ARFD's projectors."""

    build_options = ("num_classes",)  # what build_distiller passes to __init__
    uses_teacher_logits = True
    uses_teacher_features = True
    reads = ("dwld", "arfd")

    def __init__(self, student, teacher, cfg, num_classes: int | None = None):
        super().__init__(student, teacher, cfg)
        self.dwld = dwld_loss_for(cfg, num_classes)
        self.arfd = arfd_loss_for(cfg, student, teacher)

    def get_extra_parameters(self):
        return list(self.dwld.parameters()) + list(self.arfd.parameters())

    def logit_loss(self, student_logits, teacher_logits, target):
        return self.dwld(student_logits, teacher_logits, target)

    def feature_loss(self, student_feats, teacher_feats, target):
        return self.arfd(student_feats, teacher_feats, target)
