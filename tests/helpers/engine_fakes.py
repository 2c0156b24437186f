"""Tiny stand-ins for models, distillers and datasets, so engine tests run in seconds on a CPU.

They follow the project's interfaces (models return (logits, features); distillers have
forward_train / forward_test / get_learnable_parameters / get_extra_parameters) without
depending on the real implementations.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lix_train.data.classes import IGNORE_INDEX
from lix_train.engine.checkpoint import model_signature
from lix_train.engine.config import TrainConfig

NUM_CLASSES = 3
SIG = model_signature("tiny", {"width": 8}, NUM_CLASSES)  # the signature the tiny runs' checkpoints carry


def train_config(**overrides) -> TrainConfig:
    """A 12-iteration CPU schedule (checkpoint every 4, validation every 6), with `overrides`."""
    base = dict(iters=12, batch_size=4, lr=0.02, warmup_iters=2, ckpt_every=4, log_every=2, eval_every=6,
                num_workers=0, tensorboard=False, progress=False, device="cpu")
    return TrainConfig(**{**base, **overrides})


class TinyNet(nn.Module):
    """conv-BN-ReLU-dropout-conv at full resolution; returns (logits, [features])."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Dropout2d(0.2))
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, *inputs: torch.Tensor):
        features = self.body(torch.cat(inputs, dim=1))
        return self.head(features), [features]


class FakeDistiller(nn.Module):
    """Student (RGB) + frozen teacher (RGB+X) + a trainable per-pixel weight net standing in for the DWC.

    `nan_at` makes "loss_l" NaN on that call of forward_train (1-based), to test the NaN stop.
    """

    def __init__(self, nan_at: int | None = None):
        super().__init__()
        self.student = TinyNet(3)
        self.teacher = TinyNet(4)
        self.dwc = nn.Conv2d(2 * NUM_CLASSES, 1, 1)
        self.nan_at = nan_at
        self.calls = 0

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward_train(self, image, x, target, progress):
        self.calls += 1
        logits, _ = self.student(image)
        with torch.no_grad():
            teacher_logits, _ = self.teacher(image, x)
        weight = torch.sigmoid(self.dwc(torch.cat([logits.detach(), teacher_logits], 1)))
        loss_l = (weight * (logits - teacher_logits) ** 2).mean()
        if self.nan_at is not None and self.calls == self.nan_at:
            loss_l = loss_l * float("nan")
        loss_h = F.cross_entropy(logits, target.long(), ignore_index=IGNORE_INDEX)
        return logits, {"loss_h": loss_h, "loss_l": 0.1 * loss_l}

    def forward_test(self, image):
        return self.student(image)[0]

    def get_learnable_parameters(self):
        return list(self.student.parameters())

    def get_extra_parameters(self):
        return list(self.dwc.parameters())


class SyntheticSegmentation(Dataset):
    """Random 16x16 images whose labels are a deterministic function of the pixels (learnable),
    with a band of ignored pixels; `x` is one extra channel. `delay` slows each item down."""

    def __init__(self, length: int = 12, size: int = 16, seed: int = 0, delay: float = 0.0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(length, 3, size, size, generator=gen)
        self.xs = torch.rand(length, 1, size, size, generator=gen)
        self.labels = self.images.argmax(1)
        self.labels[:, :, :2] = IGNORE_INDEX
        self.delay = delay

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        return {"image": self.images[i], "x": self.xs[i], "label": self.labels[i]}
