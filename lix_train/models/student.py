"""RGBStudent: the RGB-only network that runs on the vehicle.

It is the duplex teacher's RGB branch plus the same FPN decoder and head, built from the same
arguments, so its stage features have the teacher's strides and channels and feature
distillation can pair them stage by stage.
"""

from __future__ import annotations

from .base import DEFAULT_NUM_CLASSES, SegmentationModel
from .encoders import build_encoder


class RGBStudent(SegmentationModel):
    """RGB encoder -> FPN decoder -> head; forward(image) -> (logits, stage features).

    Args:
        encoder: encoder name ("resnet18", "resnet34", "resnet50", "mobilenetv2", "timm:<name>").
        num_classes: number of output classes.
        width: encoder channel multiplier (0.25 for tiny CPU runs).
        decoder_channels: width of the FPN decoder.
        dropout: dropout before the classifier (training only).
        in_channels: image channels (3 for RGB).
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        num_classes: int = DEFAULT_NUM_CLASSES,
        width: float = 1.0,
        decoder_channels: int = 128,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__(build_encoder(encoder, in_channels, width), num_classes, decoder_channels, dropout)
        self.encoder_name = encoder
        self.width = width
