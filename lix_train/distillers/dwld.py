"""DWLD as L_L; in adversarial mode the DWC's parameters are extra learnable parameters."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.losses.dwld import DWLDConfig, DWLDLoss


def dwld_loss_for(cfg, num_classes: int | None) -> DWLDLoss:
    """DWLD's loss module from the distill config (its own group: T, the weights' means, the rule)."""
    return DWLDLoss(cfg.dwld, num_classes, cfg.ignore_index)


@register_distiller("dwld", MethodOptions("dwld", DWLDConfig,
                                        "Dynamically-weighted logit distillation (methods dwld and lix)."))
class DWLD(Distiller):
    build_options = ("num_classes",)  # what build_distiller passes to __init__
    uses_teacher_logits = True
    reads = ("dwld",)

    def __init__(self, student, teacher, cfg, num_classes: int | None = None):
        super().__init__(student, teacher, cfg)
        self.dwld = dwld_loss_for(cfg, num_classes)

    def get_extra_parameters(self):
        return list(self.dwld.parameters())

    def logit_loss(self, student_logits, teacher_logits, target):
        return self.dwld(student_logits, teacher_logits, target)
