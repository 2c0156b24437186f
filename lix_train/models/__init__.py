"""Segmentation networks in plain PyTorch: encoders -> FPN decoder -> head.

`create_model("student" | "teacher" | "student_<encoder>" | ..., **options)` builds the RGB
student or the RGB + X duplex teacher. Both return `(logits, features)`, the features being the
(fused) stage outputs at strides 4, 8, 16, 32, with channels in `model.out_channels`.
"""

from __future__ import annotations

from .base import SIZE_DIVISOR, SegmentationModel, check_input, pad_to_multiple, padded_size
from .config import ModelConfig
from .decoders import FPNDecoder
from .encoders import STRIDES, Encoder, MobileNetV2Encoder, ResNetEncoder, TimmEncoder, build_encoder, list_encoders
from .export import ExportWrapper, export_dynamic_shapes
from .heads import SegmentationHead
from .registry import create_model, list_models, model_options, register_model
from .student import RGBStudent
from .teacher import DuplexTeacher
from .weights import LoadReport, WeightsError, load_encoder_weights, read_state_dict


def count_parameters(model) -> int:
    """Number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "SIZE_DIVISOR", "STRIDES", "DuplexTeacher", "Encoder", "ExportWrapper", "FPNDecoder", "LoadReport",
    "MobileNetV2Encoder", "ModelConfig", "RGBStudent", "ResNetEncoder", "SegmentationHead", "SegmentationModel",
    "TimmEncoder", "WeightsError", "build_encoder", "check_input", "count_parameters", "create_model",
    "export_dynamic_shapes", "list_encoders", "list_models", "load_encoder_weights", "model_options",
    "pad_to_multiple", "padded_size", "read_state_dict", "register_model",
]
