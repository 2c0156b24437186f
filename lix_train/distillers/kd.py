"""Classical pixel-wise KD as L_L."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.kd import KDConfig, kd_loss


@register_distiller("kd", MethodOptions("kd", KDConfig, "Pixel-wise KD (method kd)."))
class KD(Distiller):
    uses_teacher_logits = True
    reads = ("kd",)

    def logit_loss(self, student_logits, teacher_logits, target):
        return kd_loss(student_logits, teacher_logits, target, self.cfg.kd.temperature, self.cfg.ignore_index)
