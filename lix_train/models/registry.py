"""Models by name: `create_model("student", encoder="resnet18", num_classes=14, width=0.25)`.

Every entry is a builder function plus fixed options ("student_mobilenetv2" is "student" with
encoder="mobilenetv2"). Unknown names and unknown options fail with the valid choices listed,
so a typo in a config file never silently builds a different network.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .encoders import ENCODERS
from .student import RGBStudent
from .teacher import DuplexTeacher
from .weights import load_encoder_weights


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and the options the name fixes."""

    name: str
    builder: Callable[..., nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)

    def options(self) -> list[str]:
        """Keyword options `create_model` accepts for this name."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in self.fixed]


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, **fixed: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder under `name`, with `fixed` options the caller may not override."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, builder, dict(fixed))
        return builder

    return decorator


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """The options `create_model(name, ...)` accepts."""
    return _entry(name).options()


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build a registered model.

    Unknown names raise ValueError and unknown options TypeError, both listing the valid choices.
    """
    entry = _entry(name)
    valid = entry.options()
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise TypeError(
            f"create_model({name!r}): unknown option {unknown[0]!r}; valid options: {', '.join(valid)}"
        )
    return entry.builder(**entry.fixed, **cfg)


@register_model("student")
def build_student(
    encoder: str = "resnet18",
    num_classes: int = 14,
    width: float = 1.0,
    decoder_channels: int = 128,
    dropout: float = 0.0,
    pretrained: str | Path | None = None,
) -> RGBStudent:
    """RGB-only student; `pretrained` = local encoder weights file (.pth/.pt)."""
    model = RGBStudent(encoder, num_classes, width, decoder_channels, dropout)
    if pretrained is not None:
        load_encoder_weights(model.encoder, pretrained)
    return model


@register_model("teacher")
def build_teacher(
    encoder: str = "resnet18",
    x_channels: int = 3,
    num_classes: int = 14,
    fusion: str = "intermediate",
    width: float = 1.0,
    decoder_channels: int = 128,
    late_fusion_mode: str = "sum",
    dropout: float = 0.0,
    pretrained: str | Path | None = None,
) -> DuplexTeacher:
    """RGB + X teacher; `pretrained` initialises both encoders (the X stem adapted to x_channels)."""
    model = DuplexTeacher(encoder, x_channels, num_classes, fusion, width, decoder_channels, late_fusion_mode, dropout)
    if pretrained is not None:
        load_encoder_weights(model.rgb_encoder, pretrained)
        load_encoder_weights(model.x_encoder, pretrained)
    return model


for _encoder in ENCODERS:
    register_model(f"student_{_encoder}", encoder=_encoder)(build_student)
    register_model(f"teacher_{_encoder}", encoder=_encoder)(build_teacher)
