"""MGD (masked generative distillation) as L_F; its align convs and generators are extra learnable parts."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import MethodOptions, register_distiller
from lix_train.distillers.channels import DEFAULT_X_CHANNELS, stage_channels
from lix_train.losses.mgd import MGDConfig, MGDLoss


@register_distiller("mgd", MethodOptions("mgd", MGDConfig, "Masked generative distillation (method mgd)."))
class MGD(Distiller):
    """The student's masked stage features must regenerate the teacher's; the generators are not exported.

    Stage channels come from the networks' `out_channels`; a teacher without it is probed once with
    `x_channels`-channel X (default its `x_channels`, else 3).
    """

    build_options = ("x_channels",)  # what build_distiller passes to __init__
    uses_teacher_features = True
    reads = ("mgd",)

    def __init__(self, student, teacher, cfg, x_channels: int | None = None):
        super().__init__(student, teacher, cfg)
        self.mgd = MGDLoss(cfg.mgd, stage_channels(student), stage_channels(teacher, x_channels or DEFAULT_X_CHANNELS), cfg.ignore_index)

    def get_extra_parameters(self):
        return list(self.mgd.parameters())

    def feature_loss(self, student_feats, teacher_feats, target):
        return self.mgd(student_feats, teacher_feats, target)
