"""Distillers, one small file per method, and `build_distiller` to make one by name.

Each distiller returns (student_logits, {"loss_h", "loss_l", "loss_f"}) from `forward_train`
and exposes `get_learnable_parameters()` (student + extras such as the DWC).
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import METHODS, MethodOptions, register_distiller, registered

# The methods register themselves (registry.py); importing them here, in this order, is the
# table's and the study's order. A new method is one file plus its line here (a method with settings
# of its own declares their group in its decorator, and DistillConfig, imported below, gains it).
from lix_train.distillers.baseline import Baseline  # noqa: E402,I001
from lix_train.distillers.kd import KD  # noqa: E402
from lix_train.distillers.dkd import DKD  # noqa: E402
from lix_train.distillers.cwd import CWD  # noqa: E402
from lix_train.distillers.at import AT  # noqa: E402
from lix_train.distillers.dwld import DWLD  # noqa: E402
from lix_train.distillers.arfd import ARFD  # noqa: E402
from lix_train.distillers.lix import LIX  # noqa: E402
from lix_train.distillers.mgd import MGD  # noqa: E402
from lix_train.distillers.aux_x import AuxX  # noqa: E402
from lix_train.distillers.halluc import Halluc  # noqa: E402

from lix_train.distillers.config import DistillConfig  # noqa: E402 - built from the groups registered above

DISTILLERS: dict[str, type[Distiller]] = registered()


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
        if name not in METHODS:
            raise ValueError(f"unknown distillation method {name!r}; valid: {', '.join(METHODS)}")
        cfg = dataclasses.replace(cfg or DistillConfig(), method=name)
    cls = registered()[name]
    known = {"num_classes": num_classes if num_classes is not None else getattr(student, "num_classes", None),
             "x_channels": x_channels if x_channels is not None else getattr(teacher, "x_channels", None)}
    return cls(student, teacher, cfg, **{option: known[option] for option in cls.build_options})


__all__ = ["DISTILLERS", "Distiller", "DistillConfig", "METHODS", "MethodOptions", "build_distiller",
           "register_distiller"] + [c.__name__ for c in DISTILLERS.values()]
