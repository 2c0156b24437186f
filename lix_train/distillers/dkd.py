"""DKD with fixed (alpha, beta) as L_L."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.dkd import DKDConfig, dkd_loss


@register_distiller("dkd", MethodOptions("dkd", DKDConfig, "Decoupled KD (method dkd)."))
class DKD(Distiller):
    uses_teacher_logits = True
    reads = ("dkd",)

    def logit_loss(self, student_logits, teacher_logits, target):
        d = self.cfg.dkd
        return dkd_loss(student_logits, teacher_logits, target, d.alpha, d.beta, d.temperature, self.cfg.ignore_index)
