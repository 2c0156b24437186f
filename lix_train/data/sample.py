"""The one record every dataset source returns, before X encoding and transforms."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One frame as read from disk.

    rgb:        (H, W, 3) uint8, RGB order.
    label:      (H, W) uint8 train ids, IGNORE_INDEX where unlabelled.
    depth:      (H, W) float32 metres, 0 where unknown (stereo holes, no return); None if the
                dataset has no geometry for this frame.
    intrinsics: (3, 3) float64 pinhole matrix K of this image, None if unknown.
    name:       a stable id (e.g. "Scene01/clone/Camera_0/00012") used in logs and errors.
    """

    rgb: np.ndarray
    label: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        h, w = self.rgb.shape[:2]
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"{self.name}: rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.label.shape != (h, w):
            raise ValueError(f"{self.name}: label {self.label.shape} does not match rgb {(h, w)}")
        if self.depth is not None and self.depth.shape != (h, w):
            raise ValueError(f"{self.name}: depth {self.depth.shape} does not match rgb {(h, w)}")


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole K from focal lengths and principal point (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float64)


def scale_intrinsics(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of the same camera after resizing the image by (sx, sy) (pixel-centre convention)."""
    out = np.array(k, np.float64, copy=True)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return out
