"""Channel-wise distillation on the logit maps as L_L (the dense-prediction KD baseline), padding masked."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.common import feature_valid_mask
from lix_train.losses.cwd import CWDConfig, cwd_loss


@register_distiller("cwd", MethodOptions("cwd", CWDConfig, "Channel-wise distillation of the logit maps (method cwd)."))
class CWD(Distiller):
    uses_teacher_logits = True
    reads = ("cwd",)

    def logit_loss(self, student_logits, teacher_logits, target):
        valid = feature_valid_mask(target, tuple(student_logits.shape[-2:]), self.cfg.ignore_index)
        return cwd_loss(student_logits, teacher_logits, self.cfg.cwd.temperature, valid)
