"""Adaptively-recalibrated feature distillation (ARFD): kernel-regression recalibration + CKA.

Per distilled stage k:
1. student S [B, C_s, h, w] (optionally through a learned 1x1 projector to the teacher's C_t
   channels, FitNet-style; it lives in the distiller, never in the exported student) and teacher
   T [B, C_t, h', w'] -> same h x w (teacher resized to the student's size), then at most
   `max_tokens` tokens per image at the same positions for both. Tokens whose pixels are mostly
   unlabelled (the padding of scale < 1 augmentation) are dropped: they are not scene content.
2. recalibrate S by Nadaraya-Watson kernel regression (kernels.py):
   * ``channel`` (default): each teacher channel i gets sum_j a_ij S_j with a_ij proportional
     to k(t_i, s_j) between centred, unit-norm channel activation maps; O(n C_s C_t).
   * ``token``: the teacher's row-normalised token affinities pool the student tokens, so the
     student is averaged over regions the RGB-X teacher sees as one surface; O(n^2).
   * kernel ``none`` skips recalibration (CKA already copes with C_s != C_t).
   The bandwidth decides whether the recalibration carries information. At the median
   pairwise distance (``bandwidth median``, the first implementation) unit-norm channel maps
   are all about sqrt(2) apart, every row averages nearly all student channels, and the
   recalibrated features have effective rank close to 1: CKA then compares the teacher with a
   near-constant map. ``bandwidth perplexity`` (default) picks sigma per row so that each row
   averages `perplexity` keys (tests/losses/test_arfd.py measures the effective rank).
3. L_F = sum_k gamma_k (1 - CKA(S_rec, T)) (or an MSE, for the ablation), CKA over all valid
   tokens of the batch (``cka_scope batch``: 240 tokens at stride 32 for a batch of 8 96x320
   crops instead of 30 per image) or per image, averaged over images.

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

from lix_train.config import check_choice, check_positive, check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.cka import kernel_cka, linear_cka
from lix_train.losses.common import check_stages, labels_mask_at
from lix_train.losses.kernels import gaussian_kernel, kernel_regression

ARFD_MODES = ("channel", "token")
ARFD_KERNELS = ("laplace", "gaussian", "none")
FEATURE_LOSSES = ("cka", "mse")
CKA_KERNELS = ("linear", "rbf")
TOKEN_REDUCTIONS = ("pool", "sample")
BANDWIDTHS = ("perplexity", "median")
CKA_SCOPES = ("batch", "image")


@dataclass
class ARFDConfig:
    """Settings of the feature loss L_F."""

    stages: tuple[int, ...] = option((1, 2, 3), "Feature stages to distil (indices into strides 4, 8, 16, 32).")
    gammas: tuple[float, ...] = option((), "Per-stage weights gamma_k; empty = 1 for every stage.")
    mode: str = option("channel", "Recalibration: channel-space or token-space kernel regression.", choices=ARFD_MODES)
    kernel: str = option("laplace", "Recalibration kernel ('none' = no recalibration).", choices=ARFD_KERNELS)
    feature_loss: str = option("cka", "Consistency measure: 1 - CKA, or MSE (ablation).", choices=FEATURE_LOSSES)
    cka_kernel: str = option("linear", "CKA kernel: linear (O(n C^2)) or RBF (O(n^2), median bandwidth).", choices=CKA_KERNELS)
    bandwidth: str = option(
        "perplexity", "Bandwidth rule: per row, so that each recalibrated value averages `perplexity` keys, or "
        "bandwidth_scale x the median pairwise distance (nearly a plain mean over channels: effective rank ~1).",
        choices=BANDWIDTHS)
    perplexity: float = option(2.0, "Keys each recalibrated value averages (bandwidth perplexity); 1 = the nearest.")
    bandwidth_scale: float = option(
        1.0, "bandwidth median: sigma = this x the median pairwise distance; < 1 sharpens the recalibration."
    )
    projector: bool = option(True, "Learned 1x1 conv from the student's to the teacher's channels before the "
                             "recalibration (training only; not part of the exported student).")
    cka_scope: str = option("batch", "CKA over all valid tokens of the batch, or per image (averaged).",
                            choices=CKA_SCOPES)
    max_tokens: int = option(2000, "At most this many tokens per image and stage (pooled or sampled).")
    token_reduce: str = option(
        "pool", "How to cap tokens: deterministic adaptive average pooling, or random positions.", choices=TOKEN_REDUCTIONS
    )

    def __post_init__(self):
        self.stages = check_stages("arfd.stages", self.stages)
        self.gammas = tuple(self.gammas)
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
        check_positive("arfd.bandwidth_scale", self.bandwidth_scale)
        check_choice("arfd.bandwidth", self.bandwidth, BANDWIDTHS)
        check_range("arfd.perplexity", self.perplexity, 1.0)
        check_choice("arfd.cka_scope", self.cka_scope, CKA_SCOPES)

    def stage_weights(self) -> tuple[float, ...]:
        return self.gammas or (1.0,) * len(self.stages)


def pool_grid(h: int, w: int, max_tokens: int) -> tuple[int, int]:
    """Grid size after pooling h x w by the smallest integer factor that leaves <= max_tokens cells."""
    factor = max(1, math.ceil(math.sqrt(h * w / max_tokens)))
    while max(1, h // factor) * max(1, w // factor) > max_tokens:
        factor += 1
    return max(1, h // factor), max(1, w // factor)


def to_masked_tokens(
    student: torch.Tensor,
    teacher: torch.Tensor,
    max_tokens: int,
    reduce: str = "pool",
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, C_s, h, w], [B, C_t, h', w'] (+ valid [B, h, w] bool) -> tokens [B, n, C_s], [B, n, C_t], keep [B, n].

    The teacher is resized to the student's size. ``pool`` uses adaptive average pooling, which
    is exact non-overlapping windows when the sizes divide and area interpolation otherwise
    (deterministic, every pixel counts; a pooled token is kept when most of its cells are valid);
    ``sample`` picks the same random positions for both. `valid` None keeps every token.
    """
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"ARFD: expected student/teacher features [B, C, h, w] with equal B, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    b, h, w = student.shape[0], *student.shape[-2:]
    if valid is not None and tuple(valid.shape) != (b, h, w):
        raise ValueError(f"ARFD: valid mask {tuple(valid.shape)} does not match the features' (B, h, w) = {(b, h, w)}")
    if tuple(teacher.shape[-2:]) != (h, w):
        teacher = F.interpolate(teacher, size=(h, w), mode="bilinear", align_corners=False)
    keep = torch.ones(b, h, w, dtype=torch.bool, device=student.device) if valid is None else valid
    if h * w > max_tokens:
        if reduce == "pool":
            grid = pool_grid(h, w, max_tokens)
            student, teacher = F.adaptive_avg_pool2d(student, grid), F.adaptive_avg_pool2d(teacher, grid)
            keep = F.adaptive_avg_pool2d(keep[:, None].float(), grid)[:, 0] >= 0.5
        elif reduce == "sample":
            index = torch.randperm(h * w, generator=generator)[:max_tokens].to(student.device)
            return (student.flatten(2)[:, :, index].transpose(1, 2), teacher.flatten(2)[:, :, index].transpose(1, 2),
                    keep.flatten(1)[:, index])
        else:
            raise ValueError(f"token_reduce {reduce!r} is not one of {', '.join(TOKEN_REDUCTIONS)}")
    return student.flatten(2).transpose(1, 2), teacher.flatten(2).transpose(1, 2), keep.flatten(1)


def to_tokens(student: torch.Tensor, teacher: torch.Tensor, max_tokens: int, reduce: str = "pool",
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`to_masked_tokens` without a mask: tokens [B, n, C_s], [B, n, C_t] at the same positions."""
    s_tok, t_tok, _ = to_masked_tokens(student, teacher, max_tokens, reduce, generator)
    return s_tok, t_tok


def token_groups(s_tok: torch.Tensor, t_tok: torch.Tensor, keep: torch.Tensor, scope: str
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The token sets CKA compares, each ([1, n, C_s], [1, n, C_t]) with n >= 2 valid tokens.

    ``batch``: one set of every valid token of the batch; ``image``: one set per image.
    """
    if scope == "batch":
        groups = [(s_tok[keep], t_tok[keep])]
    elif scope == "image":
        groups = [(s_tok[i][keep[i]], t_tok[i][keep[i]]) for i in range(s_tok.shape[0])]
    else:
        raise ValueError(f"cka_scope {scope!r} is not one of {', '.join(CKA_SCOPES)}")
    return [(s[None], t[None]) for s, t in groups if s.shape[0] >= 2]


def unit_columns(tokens: torch.Tensor) -> torch.Tensor:
    """Centre each channel over the tokens and scale it to unit L2 norm: [B, n, C] -> [B, C, n] maps."""
    maps = tokens.transpose(1, 2)
    maps = maps - maps.mean(dim=-1, keepdim=True)
    return F.normalize(maps, dim=-1)


def _keys_perplexity(perplexity: float | None, keys: int) -> float | None:
    return None if perplexity is None else min(float(perplexity), float(keys))


def channel_recalibration(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, kernel: str, bandwidth_scale: float = 1.0,
    perplexity: float | None = None,
) -> torch.Tensor:
    """[B, n, C_s] -> [B, n, C_t]: teacher channel i <- kernel-weighted mean of student channels."""
    maps = kernel_regression(
        unit_columns(teacher_tokens), unit_columns(student_tokens), student_tokens.transpose(1, 2), kernel,
        sigma_scale=bandwidth_scale, perplexity=_keys_perplexity(perplexity, student_tokens.shape[-1]),
    )
    return maps.transpose(1, 2)


def token_recalibration(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, kernel: str, bandwidth_scale: float = 1.0,
    perplexity: float | None = None,
) -> torch.Tensor:
    """[B, n, C_s] -> [B, n, C_s]: each student token <- mean of student tokens weighted by teacher affinity."""
    return kernel_regression(teacher_tokens, teacher_tokens, student_tokens, kernel, sigma_scale=bandwidth_scale,
                             perplexity=_keys_perplexity(perplexity, teacher_tokens.shape[-2]))


def recalibrate(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, mode: str, kernel: str, bandwidth_scale: float = 1.0,
    perplexity: float | None = None,
) -> torch.Tensor:
    """Dispatch on (mode, kernel); kernel 'none' returns the student tokens unchanged.

    `perplexity` set: per-row bandwidths (kernels.perplexity_bandwidth); else bandwidth_scale x median.
    """
    if kernel == "none":
        return student_tokens
    if mode == "channel":
        return channel_recalibration(student_tokens, teacher_tokens, kernel, bandwidth_scale, perplexity)
    if mode == "token":
        return token_recalibration(student_tokens, teacher_tokens, kernel, bandwidth_scale, perplexity)
    raise ValueError(f"ARFD mode {mode!r} is not one of {', '.join(ARFD_MODES)}")


def effective_rank(tokens: torch.Tensor) -> torch.Tensor:
    """Participation ratio (sum var)^2 / sum var^2 of the principal variances of tokens [..., n, C] -> [...].

    1 when the features vary along one direction (the mean of all channels, say), C for C equally
    strong directions: how much of the student's information a recalibration passes on to CKA.
    Variance-weighted, so many tiny directions around one dominant one still count as about 1.
    """
    centred = tokens.double() - tokens.double().mean(dim=-2, keepdim=True)
    var = torch.linalg.svdvals(centred).pow(2)
    return var.sum(dim=-1).pow(2) / var.pow(2).sum(dim=-1).clamp_min(torch.finfo(var.dtype).tiny)


def rbf_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kernel CKA with Gaussian Gram matrices at the median-distance bandwidth; [B, n, *] -> [B]."""
    return kernel_cka(gaussian_kernel(x, x), gaussian_kernel(y, y))


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def arfd_stage_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, cfg: ARFDConfig, generator=None,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-stage loss: 1 - CKA(S_rec, T) (or MSE) over the cfg.cka_scope token sets; `valid` [B, h, w] masks tokens."""
    s_tok, t_tok, keep = to_masked_tokens(
        _at_least_float32(student_feat), _at_least_float32(teacher_feat.detach()), cfg.max_tokens, cfg.token_reduce,
        generator, valid,
    )
    perplexity = cfg.perplexity if cfg.bandwidth == "perplexity" else None
    losses = []
    for s_g, t_g in token_groups(s_tok, t_tok, keep, cfg.cka_scope):
        s_rec = recalibrate(s_g, t_g, cfg.mode, cfg.kernel, cfg.bandwidth_scale, perplexity)
        if cfg.feature_loss == "mse":
            if s_rec.shape[-1] != t_g.shape[-1]:
                raise ValueError(
                    f"ARFD: feature_loss 'mse' needs equal widths after recalibration, got {s_rec.shape[-1]} vs "
                    f"{t_g.shape[-1]}; use mode 'channel' with a kernel, arfd.projector, or feature_loss 'cka'"
                )
            losses.append(F.mse_loss(s_rec, t_g))
        else:
            cka = linear_cka(s_rec, t_g) if cfg.cka_kernel == "linear" else rbf_cka(s_rec, t_g)
            losses.append(1.0 - cka[0])
    if not losses:  # no token set with two valid tokens (e.g. an all-padding crop): nothing to distil
        return s_tok.sum() * 0.0
    return torch.stack(losses).mean()


def arfd_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], cfg: ARFDConfig, generator=None,
    target: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """L_F = sum_k gamma_k * stage loss over cfg.stages; `target` [B, H, W] labels mask out ignore pixels."""
    for k in cfg.stages:
        if k >= len(student_feats) or k >= len(teacher_feats):
            raise ValueError(
                f"ARFD: stage {k} requested but the student has {len(student_feats)} and the teacher "
                f"{len(teacher_feats)} feature stages"
            )
    return sum(
        g * arfd_stage_loss(student_feats[k], teacher_feats[k], cfg, generator,
                            labels_mask_at(target, student_feats[k], ignore_index))
        for g, k in zip(cfg.stage_weights(), cfg.stages)
    )


class ARFDLoss(nn.Module):
    """`arfd_loss` bound to its config, with the optional per-stage 1x1 projectors (trainable extras).

    `student_channels` / `teacher_channels` (per feature stage) are needed when cfg.projector is on.
    """

    def __init__(self, cfg: ARFDConfig | None = None, student_channels: Sequence[int] | None = None,
                 teacher_channels: Sequence[int] | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.cfg = cfg or ARFDConfig()
        self.ignore_index = ignore_index
        self.projectors = nn.ModuleDict()
        if self.cfg.projector:
            if student_channels is None or teacher_channels is None:
                raise ValueError("ARFD: arfd.projector needs the student's and the teacher's stage channels")
            for k in self.cfg.stages:
                if k >= len(student_channels) or k >= len(teacher_channels):
                    raise ValueError(f"ARFD: stage {k} requested but the networks have {len(student_channels)} and "
                                     f"{len(teacher_channels)} feature stages")
                self.projectors[str(k)] = nn.Conv2d(student_channels[k], teacher_channels[k], 1, bias=False)

    def project(self, student_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The student's stages, through their projectors where there is one."""
        return [self.projectors[str(k)](f) if str(k) in self.projectors else f for k, f in enumerate(student_feats)]

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                target: torch.Tensor | None = None) -> torch.Tensor:
        return arfd_loss(self.project(student_feats), teacher_feats, self.cfg, target=target,
                         ignore_index=self.ignore_index)
