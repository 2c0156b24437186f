"""DWLD as L_L; in adversarial mode the DWC's parameters are extra learnable parameters."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import register_distiller
from lix_train.losses.dwld import DWLDLoss


@register_distiller("dwld")
class DWLD(Distiller):
    build_options = ("num_classes",)  # what build_distiller passes to __init__
    uses_teacher_logits = True
    reads = ("alpha", "beta", "temperature", "dwld")

    def __init__(self, student, teacher, cfg, num_classes: int | None = None):
        super().__init__(student, teacher, cfg)
        self.dwld = DWLDLoss(cfg.dwld, cfg.alpha, cfg.beta, cfg.temperature, num_classes, cfg.ignore_index)

    def get_extra_parameters(self):
        return list(self.dwld.parameters())

    def logit_loss(self, student_logits, teacher_logits, target):
        return self.dwld(student_logits, teacher_logits, target)
