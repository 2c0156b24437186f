"""Distiller base (mdistiller style): a student, a frozen teacher, and named losses.

A method file only says which logit loss (L_L) and/or feature loss (L_F) it adds; this base
runs the networks, adds L_H and the warm-up, and keeps the teacher frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from lix_train.distillers.registry import SCHEDULE_OPTIONS
from lix_train.losses.balance import balanced
from lix_train.losses.ce import pixel_cross_entropy
from lix_train.losses.common import pool_logits_and_labels

if TYPE_CHECKING:  # the config is built from the registered methods, this base among their imports
    from lix_train.distillers.config import DistillConfig

TeacherOutput = tuple[torch.Tensor | None, Sequence[torch.Tensor] | None]


class Distiller(nn.Module):
    """student(image) -> (logits, features); teacher(image, x) -> (logits, features).

    The teacher is put in eval mode with requires_grad False at construction and stays in eval
    mode whatever `train()` is called with (BatchNorm statistics and dropout must not move).
    """

    method_name = ""  # set by @register_distiller
    # Extra keyword arguments of __init__ that build_distiller supplies ("num_classes", "x_channels").
    build_options: tuple[str, ...] = ()
    uses_teacher_logits = False
    uses_teacher_features = False
    # A method whose L_F is `x_loss`: it reads the batch's X itself (e.g. an auxiliary head), never the teacher.
    uses_x = False
    # The distill options this method's own losses read (besides the method, ignore_index and
    # the lambda / warm-up of the terms it has): a study compares runs on these alone.
    reads: tuple[str, ...] = ()

    @classmethod
    def options_read(cls) -> tuple[str, ...]:
        """Every distill option that can change what this method trains."""
        weights = (("lambda_l",) if cls.uses_teacher_logits else ()) + (("lambda_f",) if cls.uses_teacher_features or cls.uses_x else ())
        logits = ("logit_stride",) if cls.uses_teacher_logits else ()
        return ("method", "ignore_index", *weights, *(SCHEDULE_OPTIONS if weights else ()), *logits, *cls.reads)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: DistillConfig):
        super().__init__()
        if self.uses_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher network, got None")
        self.student = student
        self.teacher = teacher
        self.cfg = cfg
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    @property
    def uses_teacher(self) -> bool:
        return self.uses_teacher_logits or self.uses_teacher_features

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def get_extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that are not the student's (e.g. the DWC); none by default."""
        return []

    def get_learnable_parameters(self) -> list[nn.Parameter]:
        """Everything the optimiser should update: the student's parameters plus the extras."""
        return list(self.student.parameters()) + self.get_extra_parameters()

    def logit_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """L_L before lambda and warm-up; None for methods without one."""
        return None

    def feature_loss(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                     target: torch.Tensor) -> torch.Tensor | None:
        """L_F before lambda and warm-up; None for methods without one.

        `target` is the label map: its ignore pixels (padding from scale < 1 augmentation, unlabelled
        areas) are left out of every feature loss through `losses.common.feature_valid_mask`.
        """
        return None

    def x_loss(self, student_logits: torch.Tensor, student_feats: Sequence[torch.Tensor], x: torch.Tensor,
               target: torch.Tensor) -> torch.Tensor | None:
        """A loss on the batch's X (methods with `uses_x`), weighted like L_F and added to it; None by default."""
        return None

    @torch.no_grad()
    def teacher_forward(self, image: torch.Tensor, x: torch.Tensor | None) -> TeacherOutput:
        if x is None:
            raise ValueError(f"{type(self).__name__}: the teacher needs the X modality, got x=None")
        return self.teacher(image, x)

    def forward_train(
        self,
        image: torch.Tensor,
        x: torch.Tensor | None,
        target: torch.Tensor,
        progress: float = 1.0,
        teacher_out: TeacherOutput | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(student logits, {"loss_h", "loss_l", "loss_f"}); the engine sums the dict.

        `teacher_out` = (logits, features) precomputed (e.g. cached when there is no
        augmentation) skips the teacher forward; a part this method does not use may be None.
        `progress` in [0, 1] drives the schedule of lambda_l and lambda_f (DistillConfig.ramp);
        with `balance`, each weighted term is rescaled against L_H (losses/balance.py).
        """
        ramp = self.cfg.ramp(progress)
        student_logits, student_feats = self.student(image)
        losses = {"loss_h": pixel_cross_entropy(student_logits, target, self.cfg.ignore_index)}
        zero = student_logits.new_zeros(())
        loss_l = loss_f = None
        if self.uses_teacher:
            teacher_logits, teacher_feats = teacher_out if teacher_out is not None else self.teacher_forward(image, x)
            if self.uses_teacher_logits:
                if teacher_logits is None:
                    raise ValueError(f"{type(self).__name__}: teacher_out has no logits")
                loss_l = self.logit_loss(*pool_logits_and_labels(student_logits, teacher_logits, target,
                                                                 self.cfg.logit_stride, self.cfg.ignore_index))
            if self.uses_teacher_features:
                if teacher_feats is None:
                    raise ValueError(f"{type(self).__name__}: teacher_out has no features")
                loss_f = self.feature_loss(student_feats, teacher_feats, target)
        if self.uses_x:
            if x is None:
                raise ValueError(f"{type(self).__name__}: this method's loss needs the X modality, got x=None")
            loss_x = self.x_loss(student_logits, student_feats, x, target)
            loss_f = loss_x if loss_f is None else loss_f + loss_x
        losses["loss_l"] = zero if loss_l is None else self.cfg.lambda_l * ramp * loss_l
        losses["loss_f"] = zero if loss_f is None else self.cfg.lambda_f * ramp * loss_f
        if self.cfg.balance != "none" and ramp > 0 and torch.is_grad_enabled():
            for key, wrt, term in (("loss_l", [student_logits], loss_l), ("loss_f", list(student_feats), loss_f)):
                if term is not None and term.requires_grad:
                    losses[key] = balanced(losses[key], losses["loss_h"], wrt, self.cfg.balance,
                                           self.cfg.balance_ratio)
        return student_logits, losses

    def forward_test(self, image: torch.Tensor) -> torch.Tensor:
        """Student logits only: the deployed network never sees X or the teacher."""
        return self.student(image)[0]

    def forward(self, image: torch.Tensor, x: torch.Tensor | None = None, target: torch.Tensor | None = None,
                progress: float = 1.0, teacher_out: TeacherOutput | None = None):
        if self.training:
            if target is None:
                raise ValueError(f"{type(self).__name__}: training forward needs target labels")
            return self.forward_train(image, x, target, progress, teacher_out)
        return self.forward_test(image)
