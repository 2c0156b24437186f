"""Dynamically-weighted logit distillation (DWLD): DKD with a weight pair per pixel.

    L_L = T^2 / |valid| * sum_n [ w_tc(n) TCKD_n + w_nc(n) NCKD_n ]

A single (alpha, beta) can only be right where the best TCKD/NCKD balance is the same at every
pixel; it is not (see lix-method.md 2.2). The weights come from one of three modes:

* ``confidence`` (default): a closed-form rule, no parameters. w_tc grows with the student's
  error on the target, (1 - p^S_t); w_nc with KD's own coupling factor, (1 - p^T_t). Both are
  mapped into the same bounded range as the DWC's raw output and mean-normalised to (alpha, beta).
* ``adversarial``: a small per-pixel MLP, the dynamic weight controller (DWC), reads detached
  logits and confidences (on a grid pooled by `stride`, weights upsampled back). Its weights
  are renormalised so their mean over valid pixels is (alpha, beta) - plain minimisation would
  collapse them - and it is trained through a gradient-reversal layer, so it *raises* the loss
  the student lowers (CTKD-style): weight moves to the pixels the student still gets wrong.
  With an RGB+X teacher those are largely the pixels only geometry resolves, where the student
  cannot follow; on the synthetic benchmark it cost several mIoU (docs/studies/v1/results.md), hence not
  the default.
* ``fixed``: (alpha, beta) everywhere; reduces through the same code as `dkd_loss`, so it equals
  DKD exactly.

Teacher gate (`gate`): an RGB+X teacher is still wrong on some pixels, and every rule above
pushes the student toward it there too (the confidence rule even gives its largest NCKD weight
where p^T_t is lowest). ``correct`` multiplies both weights by 1[argmax teacher = label],
``confidence`` by p^T_t, ``none`` keeps the first implementation. `renormalise` (confidence rule)
rescales the weights so their mean over valid pixels is (alpha, beta) after the gate; off, the
gate simply removes weight. The adversarial DWC is always renormalised (its weights collapse
otherwise).

Bounds: raw weights lie in [m / r, m * r] for mean m in {alpha, beta} and `weight_range` r, so
after mean renormalisation no pixel can carry more than r^2 times the weight of another - a
bound that a plain `w_max * sigmoid` loses once renormalised (near-zero weights elsewhere would
blow one pixel up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.config import check_choice, check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import masked_mean, valid_mask
from lix_train.losses.dkd import Confidences, DKDConfig, decoupled_parts, weighted_decoupled_loss

DWLD_MODES = ("adversarial", "confidence", "fixed")
GATES = ("none", "correct", "confidence")
DWC_INPUTS = ("logits_confidence", "confidence")
NUM_CONFIDENCE_FEATURES = 6


@dataclass
class DWLDConfig(DKDConfig):
    """Options of DWLD (distill.dwld, read by methods dwld and lix): DKD's T and the weights' means
    alpha, beta, plus how the per-pixel weights are made (the rule, the controller, the gate)."""

    SECTION = "dwld"

    mode: str = option(
        "confidence", "How per-pixel weights are made: the closed-form confidence rule, the adversarial DWC (the "
        "paper's learned controller; 3.9 mIoU below it in docs/studies/v1/results.md), or fixed (= DKD).",
        choices=DWLD_MODES)
    layers: int = option(3, "DWC depth: number of 1x1 conv layers (1..5); an ablation axis.")
    hidden: int = option(64, "DWC hidden width.")
    inputs: str = option(
        "logits_confidence",
        "DWC inputs (detached): student and teacher logits / T plus 6 confidence features "
        "(p_t, max-prob, normalised entropy, each for student and teacher), or the confidences alone.",
        choices=DWC_INPUTS,
    )
    weight_range: float = option(4.0, "r: raw weights lie in [m / r, m * r] around their mean m; > 1.")
    reverse_scale: float = option(
        1.0, "Gradient-reversal strength: the DWC ascends L_L with this factor (adversarial, CTKD-style). A negative "
        "value makes it cooperative: it descends L_L, so weight moves to the pixels the student already follows.")
    gate: str = option(
        "correct", "Teacher gate on both weights: 1[teacher argmax = label] (correct), p^T of the label (confidence), "
        "or none (the teacher is followed where it is wrong too).", choices=GATES)
    renormalise: bool = option(
        False, "Confidence rule: rescale the (gated) weights to mean (alpha, beta) over valid pixels; off = the gate "
        "removes weight instead of moving it.")
    stride: int = option(
        4, "The DWC runs on inputs average-pooled by this factor and its weights are upsampled bilinearly "
        "(1 = every pixel; 4 costs 1/16 and keeps L_L within budget, see benchmarks/bench_losses.py)."
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("dwld.mode", self.mode, DWLD_MODES)
        check_choice("dwld.inputs", self.inputs, DWC_INPUTS)
        check_choice("dwld.gate", self.gate, GATES)
        check_range("dwld.layers", self.layers, 1, 5)
        check_range("dwld.hidden", self.hidden, 1)
        if not self.weight_range > 1:
            raise ValueError(f"dwld.weight_range={self.weight_range!r} must be > 1")
        check_range("dwld.stride", self.stride, 1)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -scale on the way back (a min-max in one step)."""
    return _GradientReversal.apply(x, scale)


def dwc_inputs(c: Confidences, valid: torch.Tensor, with_logits: bool, stride: int = 1) -> torch.Tensor:
    """The DWC's detached input map on a grid pooled by `stride`: [B, 6 (+ 2C), ceil(H/s), ceil(W/s)].

    Per network (student, then teacher): the pooled p_t, and the max-probability and entropy / log C
    of the cell's distribution (the renormalised mean of its log-probabilities; at stride 1 this
    is the pixel's own distribution). With logits, the same log-probabilities are appended:
    they stand in for logits / T (equal up to a per-pixel shift, but bounded). Pooling first
    means one full-resolution pass per network; the pooling averages valid pixels only, so
    ignored pixels cannot move their neighbours' weights.
    """
    log_c = math.log(c.log_p_student.shape[1])
    if stride == 1:
        pool = lambda x: x  # noqa: E731 - ignored pixels' weights are masked out later anyway
    else:
        size = tuple(valid.shape[-2:])
        grid = (-(-size[0] // stride), -(-size[1] // stride))
        mask = valid.unsqueeze(1).to(c.log_p_student.dtype)
        count = F.adaptive_avg_pool2d(mask, grid).clamp_min(torch.finfo(mask.dtype).tiny)
        pool = lambda x: F.adaptive_avg_pool2d(x * mask, grid) / count  # noqa: E731
    conf, logs = [], []
    for log_p, p_target in ((c.log_p_student, c.p_target_student), (c.log_p_teacher, c.p_target_teacher)):
        log_p = log_p.detach()
        if stride > 1:
            log_p = torch.log_softmax(pool(log_p), dim=1)
        p = log_p.exp()
        entropy = -(p * log_p).sum(dim=1, keepdim=True) / log_c
        conf += [pool(p_target.detach().unsqueeze(1)), p.amax(dim=1, keepdim=True), entropy]
        logs.append(log_p.clamp_min(-30.0))
    return torch.cat((logs + conf) if with_logits else conf, dim=1)


def bounded(unit: torch.Tensor, mean: float, weight_range: float) -> torch.Tensor:
    """Map values in [0, 1] to [mean / r, mean * r]."""
    low, high = mean / weight_range, mean * weight_range
    return low + (high - low) * unit


def upsample_weights(w_tc: torch.Tensor, w_nc: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize of [B, h, w] weight maps to `size`; a convex combination, so bounds survive."""
    if tuple(w_tc.shape[-2:]) == tuple(size):
        return w_tc, w_nc
    w = F.interpolate(torch.stack([w_tc, w_nc], 1), size=tuple(size), mode="bilinear", align_corners=False)
    return w[:, 0], w[:, 1]


def renormalise_mean(weights: torch.Tensor, valid: torch.Tensor, mean: float) -> torch.Tensor:
    """Scale a [B, H, W] weight map so its mean over valid pixels is exactly `mean` (gradient kept)."""
    current = masked_mean(weights, valid)
    return weights * (mean / current.clamp_min(torch.finfo(weights.dtype).tiny))


def teacher_gate(c: Confidences, target: torch.Tensor, gate: str) -> torch.Tensor | None:
    """[B, H, W] factor in [0, 1] for how far the teacher may be followed at each pixel (None = everywhere).

    `target` holds class ids at valid pixels (any id at ignored ones, which are masked later).
    """
    if gate == "none":
        return None
    if gate == "correct":  # label logit = the maximum; amax is ~50x faster than argmax over NCHW classes on CPU
        label = c.log_p_teacher.gather(1, target.long().unsqueeze(1))[:, 0]
        return (label >= c.log_p_teacher.amax(dim=1)).to(c.p_target_teacher.dtype)
    if gate == "confidence":
        return c.p_target_teacher.detach()
    raise ValueError(f"DWLD gate {gate!r} is not one of {', '.join(GATES)}")


def confidence_weights(
    c: Confidences, valid: torch.Tensor, alpha: float, beta: float, weight_range: float,
    gate: torch.Tensor | None = None, renormalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form per-pixel weights: w_tc from (1 - p^S_t), w_nc from (1 - p^T_t), times the gate.

    With `renormalise` the weights are then scaled to mean (alpha, beta) over valid pixels.
    """
    w_tc = bounded(1.0 - c.p_target_student.detach(), alpha, weight_range)
    w_nc = bounded(1.0 - c.p_target_teacher.detach(), beta, weight_range)
    if gate is not None:
        w_tc, w_nc = w_tc * gate, w_nc * gate
    if renormalise:
        w_tc, w_nc = renormalise_mean(w_tc, valid, alpha), renormalise_mean(w_nc, valid, beta)
    return w_tc, w_nc


class DynamicWeightController(nn.Module):
    """Per-pixel MLP -> two weights in [m / r, m * r], starting at exactly (alpha, beta).

    A 1x1-convolution network, written as Linear layers on channels-last pixels (the same
    operator, about twice as fast on CPU). The last layer's weights are zero and its bias is the
    logit that puts the sigmoid at the (alpha, beta) point, so training starts as DKD; gradient
    still reaches the last layer through the hidden activations, and from there the rest.
    """

    def __init__(
        self,
        in_channels: int,
        alpha: float,
        beta: float,
        layers: int = 3,
        hidden: int = 64,
        weight_range: float = 4.0,
    ):
        super().__init__()
        self.in_channels = in_channels
        if not 1 <= layers <= 5:
            raise ValueError(f"DynamicWeightController: layers={layers} must be in 1..5")
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers - 1):
            blocks += [nn.Linear(channels, hidden), nn.ReLU(inplace=True)]
            channels = hidden
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, 2)
        self.alpha, self.beta, self.weight_range = float(alpha), float(beta), float(weight_range)
        nn.init.zeros_(self.head.weight)
        # bounded(u) = mean  <=>  u = (1 - 1/r) / (r - 1/r) = 1 / (r + 1)  <=>  logit(u) = -log r
        nn.init.constant_(self.head.bias, -math.log(weight_range))

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, F, H, W] -> (w_tc, w_nc), each [B, H, W] (not yet mean-normalised)."""
        unit = torch.sigmoid(self.head(self.body(inputs.permute(0, 2, 3, 1))))
        w_tc = bounded(unit[..., 0], self.alpha, self.weight_range)
        w_nc = bounded(unit[..., 1], self.beta, self.weight_range)
        return w_tc, w_nc


class DWLDLoss(nn.Module):
    """DWLD loss; holds the DWC in ``adversarial`` mode (its parameters go to the optimiser)."""

    def __init__(self, cfg: DWLDConfig, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.cfg, self.ignore_index = cfg, ignore_index  # T and the weights' means live in cfg (DKDConfig)
        self.controller: DynamicWeightController | None = None
        if cfg.mode == "adversarial":
            with_logits = cfg.inputs == "logits_confidence"
            if with_logits and not num_classes:
                raise ValueError("DWLD: adversarial mode with logit inputs needs num_classes (the DWC's input width)")
            in_channels = NUM_CONFIDENCE_FEATURES + (2 * num_classes if with_logits else 0)
            self.controller = DynamicWeightController(
                in_channels, cfg.alpha, cfg.beta, cfg.layers, cfg.hidden, cfg.weight_range
            )

    def pixel_weights(self, c: Confidences, valid: torch.Tensor, target: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(w_tc, w_nc) for this batch: scalars in fixed mode without a gate, [B, H, W] maps otherwise.

        `target` (class ids at valid pixels) is needed by the gates.
        """
        gate = None
        if self.cfg.gate != "none":
            if target is None:
                raise ValueError(f"DWLD: dwld.gate={self.cfg.gate!r} needs the labels")
            gate = teacher_gate(c, target, self.cfg.gate)
        if self.cfg.mode == "fixed":
            return (self.cfg.alpha, self.cfg.beta) if gate is None else (self.cfg.alpha * gate, self.cfg.beta * gate)
        if self.cfg.mode == "confidence":
            return confidence_weights(c, valid, self.cfg.alpha, self.cfg.beta, self.cfg.weight_range, gate,
                                      self.cfg.renormalise)
        inputs = dwc_inputs(c, valid, self.cfg.inputs == "logits_confidence", self.cfg.stride)
        if inputs.shape[1] != self.controller.in_channels:
            raise ValueError(
                f"DWLD: the DWC was built for {self.controller.in_channels} input channels "
                f"(num_classes={(self.controller.in_channels - NUM_CONFIDENCE_FEATURES) // 2}), "
                f"got {inputs.shape[1]}; check num_classes"
            )
        w_tc, w_nc = upsample_weights(*self.controller(inputs), valid.shape[-2:])
        if gate is not None:
            w_tc, w_nc = w_tc * gate, w_nc * gate
        w_tc = renormalise_mean(w_tc, valid, self.cfg.alpha)
        w_nc = renormalise_mean(w_nc, valid, self.cfg.beta)
        return grad_reverse(w_tc, self.cfg.reverse_scale), grad_reverse(w_nc, self.cfg.reverse_scale)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tckd, nckd, valid, conf = decoupled_parts(
            student_logits, teacher_logits, target, self.cfg.temperature, self.ignore_index
        )
        w_tc, w_nc = self.pixel_weights(conf, valid, valid_mask(target, self.ignore_index)[1])
        return weighted_decoupled_loss(tckd, nckd, valid, w_tc, w_nc, self.cfg.temperature)
