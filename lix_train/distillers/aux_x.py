"""Auxiliary X prediction as L_F: no teacher; the student's features predict X through a training-only head."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.distillers.channels import DEFAULT_X_CHANNELS, stage_channels
from lix_train.losses.aux_x import AuxXConfig, AuxXLoss


@register_distiller("aux_x", MethodOptions("aux_x", AuxXConfig,
                                        "Auxiliary X prediction head, no teacher (method aux_x)."))
class AuxX(Distiller):
    """Multi-task learning with privileged information: X is a training target, never an input.

    `x_channels` (3 normals, 1 depth-like; default the teacher's `x_channels`, else 3) sizes the
    head's output; a batch whose X has another channel count is a clear error.
    """

    build_options = ("x_channels",)  # what build_distiller passes to __init__
    uses_x = True
    reads = ("aux_x",)

    def __init__(self, student, teacher, cfg, x_channels: int | None = None):
        super().__init__(student, teacher, cfg)
        if x_channels is None:
            x_channels = getattr(teacher, "x_channels", None) or DEFAULT_X_CHANNELS
        self.aux_x = AuxXLoss(cfg.aux_x, stage_channels(student), x_channels, cfg.ignore_index)

    def get_extra_parameters(self):
        return list(self.aux_x.parameters())

    def x_loss(self, student_logits, student_feats, x, target):
        return self.aux_x(student_feats, x, target)
