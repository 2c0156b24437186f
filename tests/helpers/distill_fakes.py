"""The tiny networks the distiller tests build distillers from, and a batch for them.

TinyStudent / TinyTeacher follow the real networks' interface (logits and four stage features at strides
4..32, `feature_channels`, the teacher's X branch) at a few channels, so every method runs in milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.distillers import DistillConfig, build_distiller

C = 4


class TinyNet(nn.Module):
    """Four strided convs (strides 4, 8, 16, 32) and a 1x1 head; optional X branch added at the stem."""

    def __init__(self, widths, x_channels=0, num_classes=C):
        super().__init__()
        self.num_classes = num_classes
        self.feature_channels = list(widths)  # as the real networks report them (ARFD's projectors read it)
        self.stem = nn.Conv2d(3, widths[0], 4, stride=4)
        self.x_stem = nn.Conv2d(x_channels, widths[0], 4, stride=4) if x_channels else None
        self.stages = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.bn = nn.BatchNorm2d(widths[0])
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(widths[0] + widths[1], num_classes, 1)

    def run(self, image, x=None):
        h = self.stem(image)
        if self.x_stem is not None:
            h = h + self.x_stem(x)
        feats = [torch.relu(self.bn(h))]
        for conv in self.stages:
            feats.append(torch.relu(conv(feats[-1])))
        up = F.interpolate(feats[1], size=feats[0].shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(self.drop(torch.cat([feats[0], up], 1)))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False), feats


class TinyStudent(TinyNet):
    def __init__(self):
        super().__init__((4, 6, 8, 10))

    def forward(self, image):
        return self.run(image)


class TinyTeacher(TinyNet):
    def __init__(self):
        super().__init__((5, 7, 9, 12), x_channels=3)
        self.calls = 0

    def forward(self, image, x):
        self.calls += 1
        return self.run(image, x)

    def x_features(self, x):
        """The X branch alone (what modality hallucination distils): the X stem, then the stage convs."""
        feats = [torch.relu(self.x_stem(x))]
        for conv in self.stages:
            feats.append(torch.relu(conv(feats[-1])))
        return feats


def tiny_batch(seed=0):
    """(image, x, labels): two 64x64 frames, a 3-channel X, labels with the top 4 rows ignored (255)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, 64, 64, generator=g)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.randint(0, C, (2, 64, 64), generator=g)
    y[:, :4] = 255
    return image, x, y


def tiny_distiller(method, **cfg):
    """`method` over a fresh (seeded) TinyStudent / TinyTeacher pair, with DistillConfig(**cfg)."""
    torch.manual_seed(0)
    return build_distiller(method, TinyStudent(), TinyTeacher(), DistillConfig(**cfg))
