"""The batch contract between data loaders and the engine.

A batch is a mapping with "image" (float [B, 3, H, W]), "label" (integer [B, H, W], ignore
pixels = IGNORE_INDEX) and, for RGB+X models, "x" (float [B, Cx, H, W]). Tuples
`(image, label)` and `(image, x, label)` are accepted too and converted, so a plain
TensorDataset works in tests and quick experiments.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

REQUIRED_KEYS = ("image", "label")


def as_batch(batch: Any) -> dict[str, torch.Tensor]:
    """Normalise a loader's output to {"image", "label"[, "x"], ...}; errors say what was expected."""
    if isinstance(batch, Mapping):
        missing = [k for k in REQUIRED_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing}; expected keys 'image', 'label' and optionally 'x', "
                           f"got {sorted(batch)}")
        return dict(batch)
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        if len(batch) == 2:
            return {"image": batch[0], "label": batch[1]}
        return {"image": batch[0], "x": batch[1], "label": batch[2]}
    raise TypeError(f"batch must be a mapping with 'image', 'label'[, 'x'] or a tuple (image[, x], label), "
                    f"got {type(batch).__name__}")


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move tensors to `device` (non-blocking); 4-D float tensors optionally to channels-last."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """Number of images in a normalised batch."""
    return int(batch["image"].shape[0])
