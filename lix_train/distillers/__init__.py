"""Distillers, one small file per method, and `build_distiller` to make one by name.

Each distiller returns (student_logits, {"loss_h", "loss_l", "loss_f"}) from `forward_train`
and exposes `get_learnable_parameters()` (student + extras such as the DWC).
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from lix_train.distillers.arfd import ARFD
from lix_train.distillers.at import AT
from lix_train.distillers.aux_x import AuxX
from lix_train.distillers.base import Distiller
from lix_train.distillers.baseline import Baseline
from lix_train.distillers.config import METHODS, DistillConfig
from lix_train.distillers.cwd import CWD
from lix_train.distillers.dkd import DKD
from lix_train.distillers.dwld import DWLD
from lix_train.distillers.kd import KD
from lix_train.distillers.lix import LIX
from lix_train.distillers.mgd import MGD

DISTILLERS: dict[str, type[Distiller]] = {
    "baseline": Baseline, "kd": KD, "dkd": DKD, "cwd": CWD, "at": AT, "dwld": DWLD, "arfd": ARFD, "lix": LIX,
    "mgd": MGD, "aux_x": AuxX,
}
_NEEDS_NUM_CLASSES = (DWLD, LIX)
_NEEDS_X_CHANNELS = (MGD, AuxX)
assert tuple(DISTILLERS) == METHODS, "DISTILLERS and config.METHODS must list the same methods"


def build_distiller(
    method: str | DistillConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    cfg: DistillConfig | None = None,
    *,
    num_classes: int | None = None,
    x_channels: int | None = None,
) -> Distiller:
    """Distiller for `method` (a name, or a DistillConfig carrying one).

    With a name and a cfg, the name wins over cfg.method. `num_classes` (the DWC's input width
    in adversarial DWLD) defaults to `student.num_classes` when the student has that attribute.
    `x_channels` (X's channels: aux_x's head output; MGD's probe of a teacher without `out_channels`)
    defaults to `teacher.x_channels` when the teacher has that attribute.
    """
    if isinstance(method, DistillConfig):
        cfg, name = method, method.method
    else:
        name = method
        if name not in DISTILLERS:
            raise ValueError(f"unknown distillation method {name!r}; valid: {', '.join(DISTILLERS)}")
        cfg = dataclasses.replace(cfg or DistillConfig(), method=name)
    cls = DISTILLERS[name]
    if issubclass(cls, _NEEDS_NUM_CLASSES):
        if num_classes is None:
            num_classes = getattr(student, "num_classes", None)
        return cls(student, teacher, cfg, num_classes=num_classes)
    if issubclass(cls, _NEEDS_X_CHANNELS):
        if x_channels is None:
            x_channels = getattr(teacher, "x_channels", None)
        return cls(student, teacher, cfg, x_channels=x_channels)
    return cls(student, teacher, cfg)


__all__ = ["DISTILLERS", "Distiller", "DistillConfig", "METHODS", "build_distiller"] + [c.__name__ for c in DISTILLERS.values()]
