"""DuplexTeacher: the RGB + X data-fusion teacher (X = depth, disparity or surface normals).

Two encoders of the same family, one per modality. Fusion is the only thing this class adds to
the student's architecture:

* intermediate (SNE-RoadSeg lineage): after every stage the X feature is added element-wise to
  the RGB feature and the sum continues down the RGB branch; the X branch continues on its own.
* late: both encoders run independently and each stage pair is fused only at the decoder input,
  by a sum or by concatenation + 1x1 conv-BN-ReLU.

The fused stage outputs go to the same FPN decoder and head as the student's, and are returned
as the teacher's features for distillation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import DEFAULT_NUM_CLASSES, check_input
from .decoders import FPNDecoder
from .encoders import build_encoder
from .encoders.base import ConvBNAct, init_weights
from .heads import SegmentationHead
from .weights import load_encoder_weights

FUSIONS = ("intermediate", "late")
LATE_FUSION_MODES = ("sum", "concat")


class DuplexTeacher(nn.Module):
    """RGB encoder + X encoder, fused per stage -> FPN decoder -> head.

    forward(image, x) -> (logits [B, C, H, W], fused stage features at strides 4, 8, 16, 32).

    Args:
        encoder: encoder family for both branches ("resnet18", ..., "mobilenetv2", "timm:<name>").
        x_channels: channels of X (3 for surface normals, 1 for inverse depth / disparity / depth).
        num_classes: number of output classes.
        fusion: "intermediate" or "late" (see the module docstring).
        width: encoder channel multiplier, the same for both branches.
        decoder_channels: width of the FPN decoder.
        late_fusion_mode: "sum" or "concat" (concat + 1x1 conv); used when fusion="late".
        dropout: dropout before the classifier (training only).
        in_channels: image channels (3 for RGB).
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        x_channels: int = 3,
        num_classes: int = DEFAULT_NUM_CLASSES,
        fusion: str = "intermediate",
        width: float = 1.0,
        decoder_channels: int = 128,
        late_fusion_mode: str = "sum",
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is not one of {', '.join(FUSIONS)}")
        if late_fusion_mode not in LATE_FUSION_MODES:
            raise ValueError(f"late_fusion_mode={late_fusion_mode!r} is not one of {', '.join(LATE_FUSION_MODES)}")
        self.rgb_encoder = build_encoder(encoder, in_channels, width)
        self.x_encoder = build_encoder(encoder, x_channels, width)
        if fusion == "intermediate" and not self.rgb_encoder.stagewise:
            raise ValueError(
                f"encoder {encoder!r} cannot run stage by stage, which intermediate fusion needs; use fusion='late'"
            )
        self.encoder_name, self.width = encoder, width
        self.fusion, self.late_fusion_mode = fusion, late_fusion_mode
        channels = self.rgb_encoder.out_channels
        self.fuse = nn.ModuleList()
        if fusion == "late" and late_fusion_mode == "concat":
            self.fuse.extend(ConvBNAct(2 * c, c, 1) for c in channels)
            init_weights(self.fuse)
        self.decoder = FPNDecoder(channels, decoder_channels, self.rgb_encoder.strides)
        self.head = SegmentationHead(decoder_channels, num_classes, dropout)

    def load_pretrained(self, path: str | Path) -> None:
        """Initialise both encoders from one local weights file (the X stem adapted to x_channels)."""
        load_encoder_weights(self.rgb_encoder, path)
        load_encoder_weights(self.x_encoder, path)

    @property
    def in_channels(self) -> int:
        return self.rgb_encoder.in_channels

    @property
    def x_channels(self) -> int:
        return self.x_encoder.in_channels

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def out_channels(self) -> list[int]:
        """Channels of the returned fused stage features (strides 4, 8, 16, 32)."""
        return list(self.rgb_encoder.out_channels)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.rgb_encoder.strides)

    def fused_features(self, image: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The fused stage outputs, shallowest first."""
        if self.fusion == "intermediate":
            fused = []
            rgb, geo = image, x
            for index in range(len(self.rgb_encoder.stages)):
                geo = self.x_encoder.forward_stage(index, geo)
                rgb = self.rgb_encoder.forward_stage(index, rgb) + geo
                fused.append(rgb)
            return fused
        rgb_features, x_features = self.rgb_encoder(image), self.x_encoder(x)
        if self.late_fusion_mode == "sum":
            return [r + g for r, g in zip(rgb_features, x_features)]
        return [fuse(torch.cat([r, g], dim=1)) for fuse, r, g in zip(self.fuse, rgb_features, x_features)]

    def x_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The X branch's stage outputs, shallowest first: what the geometry encoder computes from X alone.

        The same tensors as inside `fused_features` for either fusion (the X branch never sees RGB);
        modality hallucination (method halluc) distils them.
        """
        check_input(x, "x", self.x_channels)
        return self.x_encoder(x)

    @property
    def x_out_channels(self) -> list[int]:
        """Channels of the X branch's stage outputs (strides 4, 8, 16, 32)."""
        return list(self.x_encoder.out_channels)

    def forward(self, image: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_input(image, "image", self.in_channels)
        check_input(x, "x", self.x_channels)
        if image.shape[0] != x.shape[0] or image.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"image and x must share batch size and spatial size, got {tuple(image.shape)} and {tuple(x.shape)}"
            )
        features = self.fused_features(image, x)
        logits = self.head(self.decoder(features), image.shape[-2:])
        return logits, features

    def rgb_branch_state_dict(self) -> dict[str, torch.Tensor]:
        """The RGB encoder, decoder and head under the student's key names (RGBStudent loads it strictly)."""
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("rgb_encoder."):
                out["encoder." + key[len("rgb_encoder."):]] = value
            elif key.startswith(("decoder.", "head.")):
                out[key] = value
        return out
