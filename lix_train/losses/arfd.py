"""Adaptively-recalibrated feature distillation (ARFD): kernel-regression recalibration + CKA.

Per distilled stage k, per image:
1. student S [C_s, h, w] and teacher T [C_t, h', w'] -> same h x w (teacher resized to the
   student's size), then at most `max_tokens` tokens at the same positions for both;
2. recalibrate S by Nadaraya-Watson kernel regression (kernels.py):
   * ``channel`` (default): each teacher channel i gets sum_j a_ij S_j with a_ij proportional
     to k(t_i, s_j) between centred, unit-norm channel activation maps. C_s may differ from
     C_t and there is no learned projector; cost O(n C_s C_t).
   * ``token``: the teacher's row-normalised token affinities pool the student tokens, so the
     student is averaged over regions the RGB-X teacher sees as one surface; O(n^2).
   * kernel ``none`` skips recalibration (CKA already copes with C_s != C_t).
3. L_F = sum_k gamma_k (1 - CKA(S_rec, T)), averaged over images (or an MSE, for the ablation).

The teacher side is detached; gradients reach the student through the recalibrated features
(the values and the kernel weights; the bandwidth is detached). Computed in float32 so CKA's
fourth-power sums cannot overflow under mixed precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.config import check_choice, check_range, option
from lix_train.losses.cka import kernel_cka, linear_cka
from lix_train.losses.kernels import gaussian_kernel, kernel_regression

ARFD_MODES = ("channel", "token")
ARFD_KERNELS = ("laplace", "gaussian", "none")
FEATURE_LOSSES = ("cka", "mse")
CKA_KERNELS = ("linear", "rbf")
TOKEN_REDUCTIONS = ("pool", "sample")


@dataclass
class ARFDConfig:
    """Settings of the feature loss L_F."""

    stages: tuple[int, ...] = option((1, 2, 3), "Feature stages to distil (indices into strides 4, 8, 16, 32).")
    gammas: tuple[float, ...] = option((), "Per-stage weights gamma_k; empty = 1 for every stage.")
    mode: str = option("channel", "Recalibration: channel-space or token-space kernel regression.", choices=ARFD_MODES)
    kernel: str = option("laplace", "Recalibration kernel ('none' = no recalibration).", choices=ARFD_KERNELS)
    feature_loss: str = option("cka", "Consistency measure: 1 - CKA, or MSE (ablation).", choices=FEATURE_LOSSES)
    cka_kernel: str = option("linear", "CKA kernel: linear (O(n C^2)) or RBF (O(n^2), median bandwidth).", choices=CKA_KERNELS)
    bandwidth_scale: float = option(
        1.0, "Kernel bandwidth sigma = this x the median pairwise distance; < 1 sharpens the recalibration."
    )
    max_tokens: int = option(2000, "At most this many tokens per image and stage (pooled or sampled).")
    token_reduce: str = option(
        "pool", "How to cap tokens: deterministic adaptive average pooling, or random positions.", choices=TOKEN_REDUCTIONS
    )

    def __post_init__(self):
        self.stages = tuple(self.stages)
        self.gammas = tuple(self.gammas)
        if not self.stages:
            raise ValueError("arfd.stages must name at least one stage")
        if len(set(self.stages)) != len(self.stages) or min(self.stages) < 0:
            raise ValueError(f"arfd.stages={self.stages!r} must be distinct indices >= 0")
        if self.gammas and len(self.gammas) != len(self.stages):
            raise ValueError(f"arfd.gammas has {len(self.gammas)} values for {len(self.stages)} stages")
        if any(g < 0 for g in self.gammas):
            raise ValueError(f"arfd.gammas={self.gammas!r} must be >= 0")
        check_choice("arfd.mode", self.mode, ARFD_MODES)
        check_choice("arfd.kernel", self.kernel, ARFD_KERNELS)
        check_choice("arfd.feature_loss", self.feature_loss, FEATURE_LOSSES)
        check_choice("arfd.cka_kernel", self.cka_kernel, CKA_KERNELS)
        check_choice("arfd.token_reduce", self.token_reduce, TOKEN_REDUCTIONS)
        check_range("arfd.max_tokens", self.max_tokens, 2)
        if not self.bandwidth_scale > 0:
            raise ValueError(f"arfd.bandwidth_scale={self.bandwidth_scale!r} must be > 0")

    def stage_weights(self) -> tuple[float, ...]:
        return self.gammas or (1.0,) * len(self.stages)


def pool_grid(h: int, w: int, max_tokens: int) -> tuple[int, int]:
    """Grid size after pooling h x w by the smallest integer factor that leaves <= max_tokens cells."""
    factor = max(1, math.ceil(math.sqrt(h * w / max_tokens)))
    while max(1, h // factor) * max(1, w // factor) > max_tokens:
        factor += 1
    return max(1, h // factor), max(1, w // factor)


def to_tokens(
    student: torch.Tensor,
    teacher: torch.Tensor,
    max_tokens: int,
    reduce: str = "pool",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C_s, h, w], [B, C_t, h', w'] -> tokens [B, n, C_s], [B, n, C_t] at the same positions.

    The teacher is resized to the student's size. ``pool`` uses adaptive average pooling, which
    is exact non-overlapping windows when the sizes divide and area interpolation otherwise
    (deterministic, every pixel counts); ``sample`` picks the same random positions for both.
    """
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"ARFD: expected student/teacher features [B, C, h, w] with equal B, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    h, w = student.shape[-2:]
    if tuple(teacher.shape[-2:]) != (h, w):
        teacher = F.interpolate(teacher, size=(h, w), mode="bilinear", align_corners=False)
    if h * w > max_tokens:
        if reduce == "pool":
            grid = pool_grid(h, w, max_tokens)
            student, teacher = F.adaptive_avg_pool2d(student, grid), F.adaptive_avg_pool2d(teacher, grid)
        elif reduce == "sample":
            keep = torch.randperm(h * w, generator=generator)[:max_tokens].to(student.device)
            return student.flatten(2)[:, :, keep].transpose(1, 2), teacher.flatten(2)[:, :, keep].transpose(1, 2)
        else:
            raise ValueError(f"token_reduce {reduce!r} is not one of {', '.join(TOKEN_REDUCTIONS)}")
    return student.flatten(2).transpose(1, 2), teacher.flatten(2).transpose(1, 2)


def unit_columns(tokens: torch.Tensor) -> torch.Tensor:
    """Centre each channel over the tokens and scale it to unit L2 norm: [B, n, C] -> [B, C, n] maps."""
    maps = tokens.transpose(1, 2)
    maps = maps - maps.mean(dim=-1, keepdim=True)
    return F.normalize(maps, dim=-1)


def channel_recalibration(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, kernel: str, bandwidth_scale: float = 1.0
) -> torch.Tensor:
    """[B, n, C_s] -> [B, n, C_t]: teacher channel i <- kernel-weighted mean of student channels."""
    maps = kernel_regression(
        unit_columns(teacher_tokens), unit_columns(student_tokens), student_tokens.transpose(1, 2), kernel,
        sigma_scale=bandwidth_scale,
    )
    return maps.transpose(1, 2)


def token_recalibration(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, kernel: str, bandwidth_scale: float = 1.0
) -> torch.Tensor:
    """[B, n, C_s] -> [B, n, C_s]: each student token <- mean of student tokens weighted by teacher affinity."""
    return kernel_regression(teacher_tokens, teacher_tokens, student_tokens, kernel, sigma_scale=bandwidth_scale)


def recalibrate(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, mode: str, kernel: str, bandwidth_scale: float = 1.0
) -> torch.Tensor:
    """Dispatch on (mode, kernel); kernel 'none' returns the student tokens unchanged."""
    if kernel == "none":
        return student_tokens
    if mode == "channel":
        return channel_recalibration(student_tokens, teacher_tokens, kernel, bandwidth_scale)
    if mode == "token":
        return token_recalibration(student_tokens, teacher_tokens, kernel, bandwidth_scale)
    raise ValueError(f"ARFD mode {mode!r} is not one of {', '.join(ARFD_MODES)}")


def rbf_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kernel CKA with Gaussian Gram matrices at the median-distance bandwidth; [B, n, *] -> [B]."""
    return kernel_cka(gaussian_kernel(x, x), gaussian_kernel(y, y))


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def arfd_stage_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, cfg: ARFDConfig, generator=None) -> torch.Tensor:
    """Per-stage loss, averaged over images: 1 - CKA(S_rec, T) or MSE(S_rec, T)."""
    s_tokens, t_tokens = to_tokens(
        _at_least_float32(student_feat), _at_least_float32(teacher_feat.detach()), cfg.max_tokens, cfg.token_reduce,
        generator,
    )
    s_rec = recalibrate(s_tokens, t_tokens, cfg.mode, cfg.kernel, cfg.bandwidth_scale)
    if cfg.feature_loss == "mse":
        if s_rec.shape[-1] != t_tokens.shape[-1]:
            raise ValueError(
                f"ARFD: feature_loss 'mse' needs equal widths after recalibration, got {s_rec.shape[-1]} vs "
                f"{t_tokens.shape[-1]}; use mode 'channel' with a kernel, or feature_loss 'cka'"
            )
        return F.mse_loss(s_rec, t_tokens)
    cka = linear_cka(s_rec, t_tokens) if cfg.cka_kernel == "linear" else rbf_cka(s_rec, t_tokens)
    return (1.0 - cka).mean()


def arfd_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], cfg: ARFDConfig, generator=None
) -> torch.Tensor:
    """L_F = sum_k gamma_k * stage loss over cfg.stages (indices into the feature lists)."""
    for k in cfg.stages:
        if k >= len(student_feats) or k >= len(teacher_feats):
            raise ValueError(
                f"ARFD: stage {k} requested but the student has {len(student_feats)} and the teacher "
                f"{len(teacher_feats)} feature stages"
            )
    return sum(
        g * arfd_stage_loss(student_feats[k], teacher_feats[k], cfg, generator)
        for g, k in zip(cfg.stage_weights(), cfg.stages)
    )


class ARFD(nn.Module):
    """`arfd_loss` bound to its config; no parameters (no learned projector)."""

    def __init__(self, cfg: ARFDConfig | None = None):
        super().__init__()
        self.cfg = cfg or ARFDConfig()

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return arfd_loss(student_feats, teacher_feats, self.cfg)
