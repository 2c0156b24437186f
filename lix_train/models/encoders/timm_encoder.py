"""`timm:<name>` encoders: any timm backbone with features at strides 4..32, when timm is installed.

timm is an optional extra (it pulls torchvision, which must match the installed torch), so it is
imported only when such an encoder is asked for. A timm feature extractor runs as one piece, so
these encoders support late fusion only; intermediate fusion needs the plain-PyTorch encoders.
"""

from __future__ import annotations

import importlib

import torch

from .base import STRIDES, Encoder, check_in_channels

TIMM_PREFIX = "timm:"
TIMM_MISSING = "timm is not installed: pip install 'lix-seg[timm]'"


def import_timm():
    """The timm module, or ImportError with the install command."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ImportError(TIMM_MISSING) from None


class TimmEncoder(Encoder):
    """A timm `features_only` backbone exposing the stride 4, 8, 16, 32 features.

    Args:
        name: timm model name (without the `timm:` prefix), e.g. "efficientnet_b0".
        in_channels: input channels (timm adapts the stem).
        width: must be 1.0 (timm models carry their own width in the name).
    """

    stagewise = False

    def __init__(self, name: str, in_channels: int = 3, width: float = 1.0) -> None:
        check_in_channels(in_channels)
        if width != 1.0:
            raise ValueError(f"width={width} is not supported for timm encoders (choose a smaller timm model instead)")
        timm = import_timm()
        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels)
        reductions = list(probe.feature_info.reduction())
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise ValueError(
                f"timm model {name!r} has features at strides {reductions}; LIX-Seg needs {list(STRIDES)} "
                f"(missing {missing})"
            )
        out_indices = tuple(reductions.index(s) for s in STRIDES)
        model = timm.create_model(
            name, pretrained=False, features_only=True, in_chans=in_channels, out_indices=out_indices
        )
        super().__init__(in_channels, list(model.feature_info.channels()))
        self.name = name
        self.model = model

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"timm encoder {self.name!r} runs as one piece; use fusion='late' with timm encoders"
        )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))
