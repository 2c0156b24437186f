"""ModelConfig: the validated model section of a training config (one for student and teacher).

The student ignores the teacher-only options (x_channels, fusion, late_fusion_mode), so one
section describes a matched teacher / student pair: `create_model(name, **cfg.kwargs_for(name))`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lix_train.config import ConfigError, check_choice, check_range, option

from .encoders import check_encoder_name
from .teacher import FUSIONS, LATE_FUSION_MODES


@dataclass
class ModelConfig:
    """Encoder family and size, classes, X channels and fusion of a teacher / student pair."""

    encoder: str = option(
        "resnet18",
        "Encoder family of the student and both teacher branches: resnet18, resnet34, resnet50, "
        "mobilenetv2, or timm:<name> when timm is installed.",
    )
    width: float = option(
        1.0, "Encoder channel multiplier (channels rounded to multiples of 8); 0.25 for tiny CPU runs."
    )
    num_classes: int = option(14, "Output classes (14 for vKITTI2, 19 for Cityscapes / KITTI Semantics).")
    x_channels: int = option(
        3, "Teacher X channels: 3 for surface normals, 1 for inverse depth / disparity / depth."
    )
    fusion: str = option(
        "intermediate",
        "Teacher fusion: X added to RGB after every encoder stage, or fused only at the decoder input.",
        choices=FUSIONS,
    )
    late_fusion_mode: str = option(
        "sum", "How late fusion merges a stage pair: sum, or concat + 1x1 conv.", choices=LATE_FUSION_MODES
    )
    decoder_channels: int = option(128, "Width of the FPN decoder.")
    dropout: float = option(0.0, "Dropout before the classifier (training only).")
    pretrained: Path | None = option(
        None, "Local .pth/.pt encoder weights (torchvision ResNet names accepted); never downloaded."
    )

    def __post_init__(self) -> None:
        try:
            check_encoder_name(self.encoder)
        except ValueError as err:
            raise ConfigError(f"model.encoder: {err}") from None
        check_range("model.width", self.width, low=1e-3)
        for name in ("num_classes", "x_channels", "decoder_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name}={value!r} must be a positive integer")
        check_choice("model.fusion", self.fusion, FUSIONS)
        check_choice("model.late_fusion_mode", self.late_fusion_mode, LATE_FUSION_MODES)
        if self.fusion == "intermediate" and self.encoder.startswith("timm:"):
            raise ConfigError(
                "model.fusion='intermediate' needs a stage-wise encoder; timm encoders support 'late' only"
            )
        check_range("model.dropout", self.dropout, low=0.0, high=0.999)
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise ConfigError(
                f"model.pretrained={str(self.pretrained)!r}: file not found (weights are never downloaded)"
            )

    def kwargs_for(self, name: str) -> dict[str, Any]:
        """The options of this config that `create_model(name, ...)` accepts."""
        from .registry import model_options

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: values[k] for k in model_options(name) if k in values}
