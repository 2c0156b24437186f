"""Decoupled knowledge distillation (DKD) per pixel, in the fast NCHW form.

KD's per-pixel KL splits exactly into a binary target/non-target part (TCKD) and a KL among
the non-target classes (NCKD): KD = TCKD + (1 - p^T_t) NCKD. DKD replaces the coupling weight
(1 - p^T_t) by constants (alpha, beta); DWLD (dwld.py) replaces them by per-pixel weights, so
both build on `dkd_terms`.

Speed: per-pixel losses at label resolution touch B x C x H x W values many times, so the
terms are one autograd Function with the closed-form gradients of lix-method.md 2.1:

    d TCKD / d z = (p^S_t - p^T_t) / T * (onehot_t - q^S)       (unscaled KL at temperature T)
    d NCKD / d z = (q^S - q^T) / T

Forward and backward stay in [B, C, h, w] with gather/scatter (no boolean-masked reshapes, no
logsumexp over the strided class axis, both slow on CPU). Numerics: the non-target mass
1 - p_t is summed from the non-target probabilities (never 1 - p_t, which cancels as p_t -> 1)
and floored at the smallest normal float, so a teacher with p_t == 1 stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from lix_train.config import check_positive, check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_logits, check_pair, check_target, masked_mean, resize_to, valid_mask


@dataclass
class DKDConfig:
    """Options of method dkd (distill.dkd); DWLD's section extends them (its weights' means)."""

    temperature: float = option(1.0, "Softmax temperature T of TCKD and NCKD (the loss is T^2-scaled).")
    alpha: float = option(1.0, "Weight of TCKD (the teacher's target-class probability).")
    beta: float = option(2.0, "Weight of NCKD (the teacher's distribution over the other classes; prototype: 2 beat 8).")

    SECTION = "dkd"  # the option group's name in messages (a class attribute, not an option)

    def __post_init__(self):
        section = type(self).SECTION
        check_positive(f"{section}.temperature", self.temperature)
        check_range(f"{section}.alpha", self.alpha, 0.0)
        check_range(f"{section}.beta", self.beta, 0.0)


class Confidences(NamedTuple):
    """Detached per-pixel by-products of the DKD forward, reused by DWLD's weight controller."""

    log_p_student: torch.Tensor  # [B, C, H, W] log-softmax at temperature T
    log_p_teacher: torch.Tensor
    p_target_student: torch.Tensor  # [B, H, W] p_t
    p_target_teacher: torch.Tensor


class _DecoupledKL(torch.autograd.Function):
    """(student logits, teacher logits, target) -> per-pixel (TCKD, NCKD) with analytic backward."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, index, temperature):
        tiny = torch.finfo(student_logits.dtype).tiny
        if temperature != 1.0:
            student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
        log_ps = torch.log_softmax(student_logits, dim=1)
        log_pt = torch.log_softmax(teacher_logits, dim=1)
        ps_nt = log_ps.exp().scatter_(1, index, 0.0)  # non-target probabilities
        pt_nt = log_pt.exp().scatter_(1, index, 0.0)
        s_rest = ps_nt.sum(dim=1, keepdim=True).clamp_min_(tiny)  # 1 - p_t, without cancellation
        t_rest = pt_nt.sum(dim=1, keepdim=True).clamp_min_(tiny)
        log_s_rest, log_t_rest = s_rest.log(), t_rest.log()
        log_ps_t, log_pt_t = log_ps.gather(1, index), log_pt.gather(1, index)
        ps_t, pt_t = log_ps_t.exp(), log_pt_t.exp()
        tckd = pt_t * (log_pt_t - log_ps_t) + t_rest * (log_t_rest - log_s_rest)
        # NCKD = sum_j q^T_j (log p^T_j - log p^S_j) - (log(1 - p^T_t) - log(1 - p^S_t)).
        nckd = (pt_nt * (log_pt - log_ps)).sum(dim=1, keepdim=True) / t_rest - (log_t_rest - log_s_rest)
        ctx.temperature = temperature
        ctx.save_for_backward(index, ps_nt, pt_nt, s_rest, t_rest, ps_t, pt_t)
        ctx.mark_non_differentiable(log_ps, log_pt, ps_t, pt_t)
        return tckd.squeeze(1), nckd.squeeze(1), log_ps, log_pt, ps_t.squeeze(1), pt_t.squeeze(1)

    @staticmethod
    def backward(ctx, grad_tckd, grad_nckd, *unused):
        index, ps_nt, pt_nt, s_rest, t_rest, ps_t, pt_t = ctx.saved_tensors
        g_tc = grad_tckd.unsqueeze(1) / ctx.temperature
        g_nc = grad_nckd.unsqueeze(1) / ctx.temperature
        a = g_tc * (ps_t - pt_t)
        # g_tc (p^S_t - p^T_t)(onehot - q^S) + g_nc (q^S - q^T), with q = p_nt / (1 - p_t)
        grad = ps_nt * ((g_nc - a) / s_rest) - pt_nt * (g_nc / t_rest)
        grad.scatter_add_(1, index, a)
        return grad, None, None, None


def prepare_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and bring both logit maps to the label size (see common.py for why)."""
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    check_pair(student_logits, teacher_logits)
    check_target(student_logits, target)
    size = tuple(target.shape[-2:])
    return resize_to(student_logits, size), resize_to(teacher_logits.detach(), size)


def decoupled_parts(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Confidences]:
    """`dkd_terms` plus the detached `Confidences`, so DWLD needs no second softmax."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_logits, teacher_logits = prepare_logits(student_logits, teacher_logits, target)
    valid, safe_target = valid_mask(target, ignore_index)
    tckd, nckd, log_ps, log_pt, ps_t, pt_t = _DecoupledKL.apply(
        student_logits, teacher_logits, safe_target.unsqueeze(1), float(temperature)
    )
    return tckd, nckd, valid, Confidences(log_ps, log_pt, ps_t, pt_t)


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel (TCKD, NCKD, valid), each [B, H, W] at the label size.

    TCKD and NCKD are plain KL divergences at temperature T, *not* T^2-scaled (the losses
    apply T^2). Ignored pixels get finite values; callers exclude them with `valid`. The
    teacher's logits are detached: the teacher is the target distribution, never trained here.
    """
    tckd, nckd, valid, _ = decoupled_parts(student_logits, teacher_logits, target, temperature, ignore_index)
    return tckd, nckd, valid


def weighted_decoupled_loss(
    tckd: torch.Tensor,
    nckd: torch.Tensor,
    valid: torch.Tensor,
    w_tc: torch.Tensor | float,
    w_nc: torch.Tensor | float,
    temperature: float,
) -> torch.Tensor:
    """T^2 / |valid| * sum_n [w_tc(n) TCKD_n + w_nc(n) NCKD_n]; weights are scalars or [B, H, W] maps.

    DKD (scalar weights) and DWLD (per-pixel weights) both reduce through this one function, so
    DWLD with fixed weights is DKD bit for bit.
    """
    return temperature**2 * masked_mean(w_tc * tckd + w_nc * nckd, valid)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """DKD for segmentation: (alpha TCKD + beta NCKD) T^2, averaged over valid pixels (0 if none)."""
    tckd, nckd, valid = dkd_terms(student_logits, teacher_logits, target, temperature, ignore_index)
    return weighted_decoupled_loss(tckd, nckd, valid, alpha, beta, temperature)


class DKDLoss(nn.Module):
    """`dkd_loss` with its hyper-parameters bound; no parameters of its own."""

    def __init__(self, alpha: float = 1.0, beta: float = 2.0, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.alpha, self.beta, self.temperature, self.ignore_index = alpha, beta, temperature, ignore_index

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dkd_loss(student_logits, teacher_logits, target, self.alpha, self.beta, self.temperature, self.ignore_index)
