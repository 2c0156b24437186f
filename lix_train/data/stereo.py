"""Stereo geometry for KITTI: calibration parsing and OpenCV SGBM disparity.

KITTI Semantics has no depth, but its frames are the KITTI stereo 2015 frames, so the right
image and the rectified calibration exist. Disparity d (pixels) from semi-global matching gives
depth = f * B / d, with f the rectified focal length and B the stereo baseline, both read from
the calibration:

    f = P_rect_02[0, 0]
    B = |P_rect_03[0, 3] - P_rect_02[0, 3]| / f      (P[0, 3] = f * t_x of each rectified camera)

Both the calib_cam_to_cam format ("P_rect_02: ...", "P_rect_03: ...") and the object / odometry
format ("P2: ...", "P3: ...") are read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from lix_train.data.errors import DatasetError
from lix_train.data.io import read_text_lines
from lix_train.data.modalities import disparity_to_depth

# OpenCV matching modes by name, so configs stay plain data.
SGBM_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}
_PROJECTION_KEYS = (("P_rect_02", "P_rect_03"), ("P2", "P3"))


@dataclass(frozen=True)
class StereoCalibration:
    """Rectified left camera K (3x3), focal length f (px) and baseline B (m) of a stereo pair."""

    intrinsics: np.ndarray
    focal_px: float
    baseline_m: float


def parse_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """A KITTI calibration text file ("key: v1 v2 ...") -> {key: float64 values}.

    Lines whose values are not numbers (e.g. "calib_time: 09-Jan-2012 13:57:47") are skipped.
    """
    out: dict[str, np.ndarray] = {}
    for _, line in read_text_lines(path):
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in rest.split()], np.float64)
        except ValueError:
            continue
    return out


def stereo_calibration(path: str | Path) -> StereoCalibration:
    """Focal length, baseline and K of the left colour camera (image_2) from a KITTI calib file."""
    calib = parse_kitti_calib(path)
    for left_key, right_key in _PROJECTION_KEYS:
        if left_key in calib and right_key in calib:
            break
    else:
        raise DatasetError(
            path,
            "expected rectified projection matrices P_rect_02 and P_rect_03 (or P2 and P3); "
            f"found keys: {', '.join(sorted(calib)) or 'none'}",
        )
    mats = []
    for key in (left_key, right_key):
        if calib[key].size != 12:
            raise DatasetError(path, f"{key} has {calib[key].size} values; expected 12 (a 3x4 matrix)")
        mats.append(calib[key].reshape(3, 4))
    p_left, p_right = mats
    focal = float(p_left[0, 0])
    if focal <= 0:
        raise DatasetError(path, f"{left_key}[0,0] = {focal}; expected a positive focal length")
    baseline = abs(float(p_right[0, 3] - p_left[0, 3])) / focal
    if baseline <= 0:
        raise DatasetError(path, f"{left_key} and {right_key} give a zero baseline; expected a stereo pair")
    return StereoCalibration(p_left[:, :3].copy(), focal, baseline)


def depth_from_disparity(disparity: np.ndarray, calib: StereoCalibration) -> np.ndarray:
    """depth = f * B / d in metres with this pair's f and B; 0 where the disparity is invalid (<= 0)."""
    return disparity_to_depth(np.asarray(disparity, np.float32), calib.focal_px, calib.baseline_m)


@dataclass(frozen=True)
class SGBMConfig:
    """OpenCV StereoSGBM parameters; the defaults suit KITTI (1242x375, f ~ 720 px, B ~ 0.54 m).

    num_disparities: search range in px (multiple of 16). 128 covers depths down to about
        f * B / 128 ~ 3 m on KITTI; the leftmost num_disparities columns stay invalid.
    block_size: odd matching window size.
    p1, p2: smoothness penalties for disparity changes of 1 px and > 1 px; None means OpenCV's
        usual 8 * 3 * block_size^2 and 32 * 3 * block_size^2 for colour input.
    uniqueness_ratio: % margin by which the best cost must beat the second best.
    speckle_window_size, speckle_range: drop connected blobs smaller than the window whose
        disparity varies by at most speckle_range px (0 window disables the filter).
    pre_filter_cap: clip of the x-derivative prefilter.
    mode: one of SGBM_MODES; "sgbm_3way" is OpenCV's fast 3-direction variant.
    lr_check: also match right-to-left and invalidate pixels whose two disparities differ by
        more than lr_max_diff px (removes occlusions; OpenCV's own disp12MaxDiff is not applied
        in sgbm_3way mode, so the check is done here).
    """

    num_disparities: int = 128
    block_size: int = 5
    p1: int | None = None
    p2: int | None = None
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    pre_filter_cap: int = 63
    mode: str = "sgbm_3way"
    lr_check: bool = False
    lr_max_diff: float = 1.0

    def __post_init__(self):
        if self.num_disparities <= 0 or self.num_disparities % 16:
            raise ValueError(f"num_disparities must be a positive multiple of 16, got {self.num_disparities}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and >= 1, got {self.block_size}")
        if self.mode not in SGBM_MODES:
            raise ValueError(f"mode must be one of {sorted(SGBM_MODES)}, got {self.mode!r}")
        if self.p1 is not None and self.p2 is not None and not 0 < self.p1 < self.p2:
            raise ValueError(f"p1 and p2 must satisfy 0 < p1 < p2, got p1={self.p1}, p2={self.p2}")
        if self.uniqueness_ratio < 0:
            raise ValueError(f"uniqueness_ratio must be >= 0, got {self.uniqueness_ratio}")
        if self.speckle_window_size < 0 or self.speckle_range < 0:
            raise ValueError("speckle_window_size and speckle_range must be >= 0")
        if self.lr_max_diff < 0:
            raise ValueError(f"lr_max_diff must be >= 0, got {self.lr_max_diff}")

    def cache_key(self) -> str:
        """Short hash of the parameters, so cached disparities from other settings are never reused."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def matcher(self) -> cv2.StereoSGBM:
        area = 3 * self.block_size**2
        return cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=self.num_disparities,
            blockSize=self.block_size,
            P1=self.p1 if self.p1 is not None else 8 * area,
            P2=self.p2 if self.p2 is not None else 32 * area,
            disp12MaxDiff=-1,
            preFilterCap=self.pre_filter_cap,
            uniquenessRatio=self.uniqueness_ratio,
            speckleWindowSize=self.speckle_window_size,
            speckleRange=self.speckle_range,
            mode=SGBM_MODES[self.mode],
        )


def _fixed_point_to_px(raw: np.ndarray) -> np.ndarray:
    """OpenCV's int16 disparity (px * 16, negative = invalid) -> float32 px, 0 = invalid."""
    disp = raw.astype(np.float32) / np.float32(16.0)
    disp[disp <= 0] = 0.0
    return disp


def compute_disparity(left: np.ndarray, right: np.ndarray, config: SGBMConfig | None = None) -> np.ndarray:
    """Disparity of the left image in px (float32, 0 = invalid) for a rectified colour pair.

    Values are multiples of 1/16 px (OpenCV's fixed point), so they survive the KITTI 16-bit
    PNG cache (value / 256) exactly.
    """
    config = config or SGBMConfig()
    if left.shape != right.shape or left.ndim != 3 or left.dtype != np.uint8:
        raise ValueError(
            f"left {left.shape} {left.dtype} and right {right.shape} {right.dtype} must be equal-size (H, W, 3) uint8"
        )
    matcher = config.matcher()
    disp = _fixed_point_to_px(matcher.compute(left, right))
    if config.lr_check:
        # Matching the mirrored pair gives the right image's disparity. Padding on the right first
        # lets OpenCV match the right view's last num_disparities columns too (otherwise left ones
        # would fail the check only for lack of a partner there).
        pad = config.num_disparities
        left_p, right_p = (cv2.copyMakeBorder(im, 0, 0, 0, pad, cv2.BORDER_REPLICATE) for im in (left, right))
        mirrored = matcher.compute(np.ascontiguousarray(right_p[:, ::-1]), np.ascontiguousarray(left_p[:, ::-1]))
        right_disp = _fixed_point_to_px(mirrored)[:, ::-1][:, : left.shape[1]]
        disp = _left_right_consistent(disp, right_disp, config.lr_max_diff)
    return disp


def _left_right_consistent(left_disp: np.ndarray, right_disp: np.ndarray, max_diff: float) -> np.ndarray:
    """Keep d_L(x) only where the right view agrees: |d_L(x) - d_R(x - d_L(x))| <= max_diff."""
    h, w = left_disp.shape
    cols = np.arange(w, dtype=np.float32)[None, :]
    target = np.rint(cols - left_disp).astype(np.int64)
    inside = (target >= 0) & (target < w)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    matched = right_disp[rows, np.clip(target, 0, w - 1)]
    keep = (left_disp > 0) & inside & (matched > 0) & (np.abs(matched - left_disp) <= max_diff)
    return np.where(keep, left_disp, np.float32(0.0)).astype(np.float32)
