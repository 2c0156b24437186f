"""Auxiliary X prediction (multi-task learning with privileged information): no teacher at all.

The student's own encoder features feed a light FPN-style head that predicts X (surface normals,
3 channels, or a 1-channel depth-like encoding) during training; the head is dropped at export,
so the deployed student is unchanged. The geometric prior reaches the encoder through the
gradient of this auxiliary loss alone.

Head: a 1x1 conv per chosen stage to `width` channels, every map upsampled (bilinear) to the
finest chosen stage and summed, 3x3 conv + ReLU, 1x1 conv to X's channels, bilinear upsampling
to X's size. Loss, averaged over pixels where X is known (X != 0 on some channel: 0 encodes
"unknown", e.g. sky and crop padding) and the label is not ignore_index:

    cosine:  1 - < p / |p|, x / |x| >      (normals; 0 for a perfect direction, 2 for the opposite)
    l1:      mean over channels of |p - x| (depth-like X)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.config import check_choice, check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.common import check_stages, masked_mean, resize_to

AUX_X_LOSSES = ("auto", "cosine", "l1")


@dataclass
class AuxXConfig:
    """Settings of the auxiliary X head and its loss (reported as L_F)."""

    loss: str = option("auto", "cosine (normals), l1 (1-channel X), or auto: cosine for 3-channel X, else l1.",
                       choices=AUX_X_LOSSES)
    stages: tuple[int, ...] = option((1, 2, 3), "Student stages the head reads (indices into strides 4, 8, 16, 32).")
    width: int = option(64, "Channels of the head's lateral 1x1 convs and its 3x3 conv.")

    def __post_init__(self):
        check_choice("aux_x.loss", self.loss, AUX_X_LOSSES)
        self.stages = check_stages("aux_x.stages", self.stages)
        check_range("aux_x.width", self.width, 1)

    def resolved_loss(self, x_channels: int) -> str:
        """The loss for X with `x_channels` channels (auto -> cosine for 3, else l1)."""
        loss = ("cosine" if x_channels == 3 else "l1") if self.loss == "auto" else self.loss
        if loss == "cosine" and x_channels < 2:
            raise ValueError(f"aux_x.loss=cosine needs a vector X (normals); X has {x_channels} channel(s): use l1")
        return loss


def known_x_mask(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W] bool: pixels where X is known (non-zero on some channel)."""
    return (x != 0).any(dim=1)


def aux_x_loss(prediction: torch.Tensor, x: torch.Tensor, target: torch.Tensor | None = None, loss: str = "cosine",
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean of the per-pixel X loss over pixels with known X and a valid label (exactly 0 if none).

    prediction [B, C, h, w] (resized to X's size); x [B, C, H, W]; target [B, H, W] labels or None.
    """
    if prediction.dim() != 4 or x.dim() != 4 or prediction.shape[:2] != x.shape[:2]:
        raise ValueError(f"aux_x_loss: prediction {tuple(prediction.shape)} and X {tuple(x.shape)} must be "
                         f"[B, C, H, W] with the same batch and channels")
    check_choice("aux_x_loss: loss", loss, ("cosine", "l1"))
    prediction = resize_to(prediction, tuple(x.shape[-2:]))
    valid = known_x_mask(x)
    if target is not None:
        if tuple(target.shape) != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f"aux_x_loss: labels {tuple(target.shape)} do not match X {tuple(x.shape)}")
        valid = valid & (target != ignore_index)
    x = x.detach()
    if loss == "cosine":
        error = 1.0 - (F.normalize(prediction, dim=1) * F.normalize(x, dim=1)).sum(dim=1)
    else:
        error = (prediction - x).abs().mean(dim=1)
    return masked_mean(error, valid)


class AuxXHead(nn.Module):
    """FPN-style head: chosen student stages -> X at X's resolution (training only)."""

    def __init__(self, in_channels: Sequence[int], x_channels: int, width: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, x_channels, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        if len(feats) != len(self.lateral):
            raise ValueError(f"AuxXHead: {len(feats)} feature maps for {len(self.lateral)} lateral convs")
        finest = tuple(max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1]))
        fused = sum(resize_to(conv(f), finest) for conv, f in zip(self.lateral, feats))
        return resize_to(self.out(self.fuse(fused)), tuple(size))


class AuxXLoss(nn.Module):
    """The head plus `aux_x_loss`; `x_channels` is X's channel count (3 normals, 1 depth-like)."""

    def __init__(self, cfg: AuxXConfig, student_channels: Sequence[int], x_channels: int,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        for k in cfg.stages:
            if k >= len(student_channels):
                raise ValueError(f"aux_x.stages: stage {k} out of range (the student has {len(student_channels)} stages)")
        self.stages, self.x_channels, self.ignore_index = tuple(cfg.stages), int(x_channels), ignore_index
        self.loss = cfg.resolved_loss(self.x_channels)
        self.head = AuxXHead([student_channels[k] for k in self.stages], self.x_channels, cfg.width)

    def forward(self, student_feats: Sequence[torch.Tensor], x: torch.Tensor | None,
                target: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("aux_x: the auxiliary head needs the X modality as its target, got x=None "
                             "(the training set must be built with data.modality)")
        if x.dim() != 4 or x.shape[1] != self.x_channels:
            raise ValueError(f"aux_x: the head predicts {self.x_channels}-channel X but the batch has X of shape "
                             f"{tuple(x.shape)}; build the distiller with x_channels={x.shape[1] if x.dim() == 4 else '?'}")
        if max(self.stages) >= len(student_feats):
            raise ValueError(f"aux_x.stages={self.stages!r}: the student returned {len(student_feats)} stages")
        prediction = self.head([student_feats[k] for k in self.stages], tuple(x.shape[-2:]))
        return aux_x_loss(prediction, x, target, self.loss, self.ignore_index)
