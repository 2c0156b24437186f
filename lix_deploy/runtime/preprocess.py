"""Camera image -> model input: the ONLY preprocessing, shared by the runtime and calibration.

Calibration must feed the quantiser exactly what the deployed model will see, so both call
`to_model_input`. The exported graph folds mean/std normalisation in, so the input here is
plain RGB in 0..255 (float32, NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lix_common.interpolation import image_interpolation

__all__ = ["ENCODINGS", "Encoding", "to_rgb", "to_model_input", "image_from_buffer"]


@dataclass(frozen=True)
class Encoding:
    """How one ROS `sensor_msgs/Image` encoding lays out its bytes."""

    name: str
    channels: int
    rgb_order: tuple[int, ...]  # source channel index of R, G, B (mono: one index, replicated)


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding("rgb8", 3, (0, 1, 2)),
    "bgr8": Encoding("bgr8", 3, (2, 1, 0)),
    "rgba8": Encoding("rgba8", 4, (0, 1, 2)),
    "bgra8": Encoding("bgra8", 4, (2, 1, 0)),
    "mono8": Encoding("mono8", 1, (0,)),
}


def _encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ValueError(
            f"unsupported image encoding {name!r}: expected one of {', '.join(ENCODINGS)}"
        ) from None


def _validate(image: np.ndarray, encoding: Encoding) -> np.ndarray:
    """Return `image` as (H, W, C) uint8 (a view, never a copy), or raise ValueError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{encoding.name} image must be uint8, got dtype {image.dtype}")
    if image.size == 0:
        raise ValueError(f"empty image (shape {image.shape})")
    if encoding.channels == 1 and image.ndim == 2:
        image = image[:, :, None]
    expected = "(H, W) or (H, W, 1)" if encoding.channels == 1 else f"(H, W, {encoding.channels})"
    if image.ndim != 3 or image.shape[2] != encoding.channels:
        raise ValueError(f"{encoding.name} image must have shape {expected}, got {image.shape}")
    return image


def to_rgb(image: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """Any supported encoding -> contiguous (H, W, 3) uint8 RGB. Padded rows (ROS `step`) are fine."""
    spec = _encoding(encoding)
    image = _validate(image, spec)
    if spec.channels == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    if spec.rgb_order == (0, 1, 2) and spec.channels == 3:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(image[:, :, list(spec.rgb_order)])


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return height, width


def to_model_input(image: np.ndarray, encoding: str, size: tuple[int, int]) -> np.ndarray:
    """Camera image -> float32 [1, 3, H, W], RGB, 0..255, resized to `size` = (H, W).

    Converts to RGB first, then resizes with cv2 (INTER_AREA when shrinking, INTER_LINEAR
    otherwise), so every encoding of the same scene gives the same tensor.
    """
    height, width = _check_size(size)
    rgb = to_rgb(image, encoding)
    interpolation = image_interpolation(rgb.shape[:2], (height, width))
    if interpolation is not None:
        rgb = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


def image_from_buffer(data, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """A ROS Image's `data` bytes -> (H, W, C) uint8 view that honours the row padding in `step`.

    No copy: the result is a strided view of `data` (to_rgb / to_model_input accept it).
    """
    spec = _encoding(encoding)
    row_bytes = width * spec.channels
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image: height={height}, width={width}")
    if step < row_bytes:
        raise ValueError(f"step={step} is smaller than width*channels={row_bytes} for {encoding}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < step * (height - 1) + row_bytes:
        raise ValueError(
            f"image data has {buffer.size} bytes, {encoding} {width}x{height} with step {step} "
            f"needs {step * (height - 1) + row_bytes}"
        )
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    return rows.reshape(height, width, spec.channels)


# cv2.imdecode's channel count -> the encoding of what it returns (OpenCV decodes colour as BGR)
_DECODED_ENCODINGS = {1: "mono8", 3: "bgr8", 4: "bgra8"}


def decode_compressed(data, fmt: str = "") -> tuple[np.ndarray, str]:
    """A sensor_msgs/CompressedImage payload (JPEG, PNG, ...) -> (H, W, C) uint8 and its encoding.

    The one decoder of compressed camera frames (the ROS node, the bag tool, calibration from a bag).
    Raises ValueError naming the problem for a corrupt, truncated or non-8-bit image.
    """
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else \
        np.asarray(data, np.uint8)
    if buffer.size == 0:
        raise ValueError(f"empty compressed image (format {fmt!r})")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode compressed image (format {fmt!r}, {buffer.size} bytes)")
    if image.dtype != np.uint8:
        raise ValueError(f"compressed image (format {fmt!r}) decodes to {image.dtype}, expected 8-bit")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in _DECODED_ENCODINGS:
        raise ValueError(f"compressed image (format {fmt!r}) decodes to {channels} channels")
    return (image[:, :, None] if image.ndim == 2 else image), _DECODED_ENCODINGS[channels]

