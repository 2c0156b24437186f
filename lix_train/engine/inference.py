"""Whole-image and sliding-window inference, for RGB students and RGB+X teachers alike.

A model function takes one or more aligned maps (`student(image)`, `teacher(image, x)`) and
returns logits, or `(logits, features)` as the project's models do. All inputs are cropped
and padded identically, so the same code serves both. Logits come back at the input
resolution, [B, C, H, W].
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

ModelFn = Callable[..., object]


def logits_of(output: object) -> torch.Tensor:
    """The logits of a model output: the tensor itself, or the first item of (logits, features)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise TypeError("model output must be logits [B, C, h, w] or (logits, features)")
    return output


def _check_inputs(inputs: Sequence[torch.Tensor]) -> tuple[int, int]:
    if not inputs:
        raise ValueError("inference needs at least one input map")
    sizes = {tuple(t.shape[-2:]) for t in inputs}
    batches = {t.shape[0] for t in inputs}
    if any(t.dim() != 4 for t in inputs) or len(sizes) != 1 or len(batches) != 1:
        raise ValueError(f"inference inputs must be [B, C, H, W] with the same B, H, W; got "
                         f"{[tuple(t.shape) for t in inputs]}")
    return sizes.pop()


def _pad_to(inputs: Sequence[torch.Tensor], height: int, width: int) -> list[torch.Tensor]:
    """Zero-pad every map at the bottom/right to (height, width)."""
    out = []
    for t in inputs:
        dh, dw = height - t.shape[-2], width - t.shape[-1]
        out.append(F.pad(t, (0, dw, 0, dh)) if dh or dw else t)
    return out


def _run(model_fn: ModelFn, inputs: Sequence[torch.Tensor], size_divisor: int) -> torch.Tensor:
    """One network call on maps padded to a multiple of `size_divisor`, logits cropped back."""
    height, width = inputs[0].shape[-2:]
    padded_h = -(-height // size_divisor) * size_divisor
    padded_w = -(-width // size_divisor) * size_divisor
    logits = logits_of(model_fn(*_pad_to(inputs, padded_h, padded_w)))
    if logits.shape[-2:] != (padded_h, padded_w):
        logits = F.interpolate(logits, size=(padded_h, padded_w), mode="bilinear", align_corners=False)
    return logits[..., :height, :width]


def whole_image_logits(model_fn: ModelFn, inputs: Sequence[torch.Tensor], size_divisor: int = 1) -> torch.Tensor:
    """Logits [B, C, H, W] from one pass over the full (padded) image."""
    _check_inputs(inputs)
    return _run(model_fn, inputs, size_divisor)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis: every `stride`, plus a last window flush with the end."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return starts + [length - crop]


def sliding_window_logits(
    model_fn: ModelFn,
    inputs: Sequence[torch.Tensor],
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    size_divisor: int = 1,
) -> torch.Tensor:
    """Logits [B, C, H, W] averaged over overlapping crop_size windows placed every `stride`.

    Windows are clipped to the image (an image smaller than a window is one window), so a
    window that covers the whole image gives exactly the whole-image result.
    """
    height, width = _check_inputs(inputs)
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    if min(crop_h, crop_w, stride_h, stride_w) < 1:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
    total = count = None
    for top in window_starts(height, crop_h, stride_h):
        for left in window_starts(width, crop_w, stride_w):
            window = [t[..., top:top + crop_h, left:left + crop_w] for t in inputs]
            logits = _run(model_fn, window, size_divisor)
            if total is None:
                batch, classes = logits.shape[:2]
                total = logits.new_zeros(batch, classes, height, width)
                count = logits.new_zeros(1, 1, height, width)
            h, w = logits.shape[-2:]
            total[..., top:top + h, left:left + w] += logits
            count[..., top:top + h, left:left + w] += 1
    return total / count


def predict_logits(
    model_fn: ModelFn,
    inputs: Sequence[torch.Tensor],
    mode: str = "whole",
    crop_size: tuple[int, int] = (384, 384),
    stride: tuple[int, int] = (256, 256),
    size_divisor: int = 1,
) -> torch.Tensor:
    """Dispatch on `mode` ("whole" or "slide"), as set by EvalConfig."""
    if mode == "whole":
        return whole_image_logits(model_fn, inputs, size_divisor)
    if mode == "slide":
        return sliding_window_logits(model_fn, inputs, crop_size, stride, size_divisor)
    raise ValueError(f"inference mode {mode!r} is not one of 'whole', 'slide'")
