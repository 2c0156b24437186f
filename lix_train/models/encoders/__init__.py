"""Encoders by name: plain-PyTorch ResNet / MobileNetV2 families, and `timm:<name>` when timm is installed."""

from __future__ import annotations

from .base import STRIDES, Encoder, round_channels
from .mobilenet import MobileNetV2Encoder
from .resnet import RESNET_LAYERS, ResNetEncoder
from .timm_encoder import TIMM_PREFIX, TimmEncoder

ENCODERS: tuple[str, ...] = (*RESNET_LAYERS, "mobilenetv2")


def list_encoders() -> list[str]:
    """Names `build_encoder` accepts (plus any `timm:<name>`)."""
    return list(ENCODERS)


def check_encoder_name(name: str) -> None:
    """Raise ValueError unless `name` is a known encoder or `timm:<name>` (timm itself is checked at build)."""
    is_timm = isinstance(name, str) and name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)
    if not (name in ENCODERS or is_timm):
        raise ValueError(f"unknown encoder {name!r}; valid: {', '.join(ENCODERS)}, or 'timm:<model name>'")


def build_encoder(name: str, in_channels: int = 3, width: float = 1.0) -> Encoder:
    """An encoder by name, e.g. build_encoder("resnet18", in_channels=1, width=0.25)."""
    check_encoder_name(name)
    if name.startswith(TIMM_PREFIX):
        return TimmEncoder(name[len(TIMM_PREFIX):], in_channels=in_channels, width=width)
    if name == "mobilenetv2":
        return MobileNetV2Encoder(in_channels=in_channels, width=width)
    return ResNetEncoder(name, in_channels=in_channels, width=width)


__all__ = [
    "STRIDES", "Encoder", "MobileNetV2Encoder", "ResNetEncoder", "TimmEncoder",
    "build_encoder", "check_encoder_name", "list_encoders", "round_channels",
]
