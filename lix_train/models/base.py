"""SegmentationModel: encoder -> FPN decoder -> head, with input checks that say what to do.

`forward(image)` reads as the architecture and returns `(logits, features)`: logits at the input
resolution, and the encoder's stage outputs (strides 4, 8, 16, 32) for feature distillation, so
no loss ever has to reach into a model's internals.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lix_train.data.classes import VKITTI2_NUM_CLASSES

from .decoders import FPNDecoder
from .encoders import Encoder
from .heads import SegmentationHead
from .weights import load_encoder_weights

# The default class count: the vKITTI2 set of the embedded and synthetic data.
DEFAULT_NUM_CLASSES = VKITTI2_NUM_CLASSES

#: every encoder downsamples by 32, so inputs must be multiples of it
SIZE_DIVISOR = 32


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    """The smallest (H', W') >= (H, W) with both divisible by `divisor`."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_to_multiple(image: torch.Tensor, divisor: int = SIZE_DIVISOR, value: float = 0.0) -> torch.Tensor:
    """Pad a [..., H, W] tensor at the bottom and right to the next multiple of `divisor`."""
    height, width = image.shape[-2:]
    target_h, target_w = padded_size(int(height), int(width), divisor)
    if (target_h, target_w) == (height, width):
        return image
    return F.pad(image, (0, target_w - width, 0, target_h - height), value=value)


def check_input(tensor: torch.Tensor, name: str, channels: int, divisor: int = SIZE_DIVISOR) -> None:
    """Raise ValueError unless `tensor` is [B, channels, H, W] with H and W divisible by `divisor`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, {channels}, H, W], got {type(tensor).__name__}")
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be a 4-D tensor [B, {channels}, H, W], got shape {tuple(tensor.shape)}")
    if tensor.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1), got shape {tuple(tensor.shape)}")
    height, width = tensor.shape[2], tensor.shape[3]
    if not (isinstance(height, int) and isinstance(width, int)):
        return  # symbolic sizes (export with dynamic shapes): export_dynamic_shapes declares multiples of 32
    if height % divisor or width % divisor:
        ph, pw = padded_size(height, width, divisor)
        raise ValueError(
            f"{name} height and width must be divisible by {divisor} (the encoder's output stride), got "
            f"{height}x{width}; pad it to {ph}x{pw} (lix_train.models.pad_to_multiple) or resize it"
        )


class SegmentationModel(nn.Module):
    """encoder -> FPN decoder -> segmentation head.

    Args:
        encoder: any `Encoder` (four stages at strides 4..32 with `out_channels`).
        num_classes: number of output classes.
        decoder_channels: width of the FPN decoder.
        dropout: dropout before the classifier (training only).
    """

    def __init__(self, encoder: Encoder, num_classes: int, decoder_channels: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = FPNDecoder(encoder.out_channels, decoder_channels, encoder.strides)
        self.head = SegmentationHead(decoder_channels, num_classes, dropout)

    def load_pretrained(self, path: str | Path) -> None:
        """Initialise the encoder from a local weights file (.pth/.pt); the decoder and head stay as built."""
        load_encoder_weights(self.encoder, path)

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def out_channels(self) -> list[int]:
        """Channels of the returned stage features (strides 4, 8, 16, 32)."""
        return list(self.encoder.out_channels)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.encoder.strides)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_input(image, "image", self.in_channels)
        features = self.encoder(image)
        logits = self.head(self.decoder(features), image.shape[-2:])
        return logits, features
