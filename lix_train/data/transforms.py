"""Joint transforms over one training frame: RGB, its X channels and its labels move together.

The method needs two guarantees (lix-method.md section 1): geometric augmentation is applied
identically to RGB, X and labels, and photometric augmentation touches RGB only. So every
transform here takes and returns a whole `Frame`, geometric ones sample their parameters once
and apply them to all three arrays, and `ColorJitter` has no access path to `x` or `label`.

Layouts, fixed for the whole pipeline:
  image  (H, W, 3) uint8 or float32, RGB, values in [0, 255] until `Normalize`;
  x      (C, H, W) float32, the layout `encode_x` returns and the model consumes, 0 = unknown;
  label  (H, W) uint8 train ids, IGNORE_INDEX where not scored.

Randomness comes only from the numpy Generator passed to each call, so a pipeline is
reproducible from one seed and DataLoader workers never share a hidden generator state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, Sequence

import cv2
import numpy as np
import torch

from lix_common.interpolation import image_interpolation
from lix_train.config import ConfigError, check_range, option
from lix_train.data.classes import IGNORE_INDEX
from lix_train.data.modalities import MODALITY_CHANNELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# OpenCV's INTER_NEAREST maps output pixel i to input floor(i * scale), half a pixel off the
# centre-aligned grid INTER_LINEAR uses; NEAREST_EXACT is centre-aligned, so labels stay on the
# same pixels as the bilinearly resampled image and X.
_LABEL_INTERP = cv2.INTER_NEAREST_EXACT


@dataclass
class Frame:
    """One frame between loading and batching; see the module docstring for the layouts."""

    image: np.ndarray
    label: np.ndarray
    x: np.ndarray | None = None
    modality: str | None = None
    name: str = ""

    def __post_init__(self):
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"{self.name}: image must be (H, W, 3), got {self.image.shape}")
        h, w = self.image.shape[:2]
        if self.label.shape != (h, w) or self.label.dtype != np.uint8:
            raise ValueError(f"{self.name}: label must be ({h}, {w}) uint8, got {self.label.shape} {self.label.dtype}")
        if (self.x is None) != (self.modality is None):
            raise ValueError(f"{self.name}: x and modality go together, got x={'set' if self.x is not None else None} "
                             f"and modality={self.modality!r}")
        if self.x is not None:
            if self.modality not in MODALITY_CHANNELS:
                raise ValueError(f"{self.name}: modality={self.modality!r} is not one of {tuple(MODALITY_CHANNELS)}")
            expected = (MODALITY_CHANNELS[self.modality], h, w)
            if self.x.shape != expected or self.x.dtype != np.float32:
                raise ValueError(f"{self.name}: x must be {expected} float32 for {self.modality}, "
                                 f"got {self.x.shape} {self.x.dtype}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.image.shape[0], self.image.shape[1]

    def replace(self, **changes) -> "Frame":
        """A new Frame with some arrays replaced (transforms never modify their input)."""
        return dataclasses.replace(self, **changes)


class Transform(Protocol):
    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame: ...


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"{name} must be (H, W) positive integers, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def _resize_x(x: np.ndarray, modality: str, size: tuple[int, int]) -> np.ndarray:
    """Resize of X, resampled exactly as the image is, that keeps 0 meaning "unknown".

    Plain bilinear blending would average a known value with the 0 of an unknown neighbour and
    invent a half-way depth; instead values are averaged over known pixels only (weights =
    resampled known-mask) and outputs drawn mostly from unknown pixels stay unknown. Normals are
    re-normalised to unit length. Disparity is in pixels, so it scales with the image width.
    """
    h, w = size
    interpolation = image_interpolation(x.shape[1:], (h, w)) or cv2.INTER_LINEAR
    known = np.any(x != 0, axis=0).astype(np.float32)
    weight = cv2.resize(known, (w, h), interpolation=interpolation)
    # OpenCV wants channels last: cv2.merge interleaves the same bytes ~10x faster than a transpose copy.
    planes = [np.ascontiguousarray(c) for c in x]
    out = cv2.resize(cv2.merge(planes) if len(planes) > 1 else planes[0], (w, h), interpolation=interpolation)
    out = np.ascontiguousarray(out.reshape(h, w, -1).transpose(2, 0, 1))  # element-wise maths is layout-free
    keep = weight >= 0.5
    if modality == "normals":
        squares = out * out  # the norm summed in np.linalg.norm's order, (x^2 + y^2) + z^2, on planes: same bits
        total = squares[0]
        for square in squares[1:]:
            total = total + square
        norm = np.sqrt(total)
        keep &= norm > 0
        out = out / np.where(keep, norm, 1.0)
    else:
        out = out / np.where(keep, weight, 1.0)
        if modality == "disparity":
            out = out * np.float32(w / x.shape[2])
    return np.ascontiguousarray(out * keep, dtype=np.float32)


def resize_frame(frame: Frame, size: tuple[int, int]) -> Frame:
    """Image and X as the runtime resizes images (interpolation.py), labels nearest (ids are never interpolated)."""
    h, w = size
    if (h, w) == frame.size:
        return frame
    image = frame.image if frame.image.dtype == np.uint8 else frame.image.astype(np.float32)
    return frame.replace(
        image=cv2.resize(image, (w, h), interpolation=image_interpolation(frame.size, (h, w))),
        label=cv2.resize(frame.label, (w, h), interpolation=_LABEL_INTERP),
        x=None if frame.x is None else _resize_x(frame.x, frame.modality, (h, w)),
    )


class Resize:
    """Fixed-size resize (evaluation): every frame reaches the network at `size` = (H, W)."""

    def __init__(self, size: Sequence[int]):
        self.size = _check_size("size", size)

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None) -> Frame:
        return resize_frame(frame, self.size)


class RandomScale:
    """Resize by a factor drawn uniformly from `scale_range`.

    The factor multiplies `base_size` when given (so training scales are relative to the same
    network size evaluation uses, whatever the source resolution), else the frame's own size.
    """

    def __init__(self, scale_range: Sequence[float], base_size: Sequence[int] | None = None):
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)!r}")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.base_size = None if base_size is None else _check_size("base_size", base_size)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        scale = rng.uniform(*self.scale_range)
        h, w = self.base_size or frame.size
        return resize_frame(frame, (max(1, round(h * scale)), max(1, round(w * scale))))


class RandomCrop:
    """Crop `size` = (H, W) at a random position; pad first where the frame is smaller.

    Padding goes to the bottom and right: image 0, X 0 (unknown), label IGNORE_INDEX, so padded
    pixels are never scored and never distilled.
    """

    def __init__(self, size: Sequence[int]):
        self.size = _check_size("size", size)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        ch, cw = self.size
        h, w = frame.size
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        image, label, x = frame.image, frame.label, frame.x
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
            x = None if x is None else np.pad(x, ((0, 0), (0, ph), (0, pw)))
        top = int(rng.integers(0, h + ph - ch + 1))
        left = int(rng.integers(0, w + pw - cw + 1))
        rows, cols = slice(top, top + ch), slice(left, left + cw)
        return frame.replace(
            image=np.ascontiguousarray(image[rows, cols]),
            label=np.ascontiguousarray(label[rows, cols]),
            x=None if x is None else np.ascontiguousarray(x[:, rows, cols]),
        )


class RandomHorizontalFlip:
    """Mirror the frame with probability `prob`.

    Mirroring the image mirrors the scene about the camera's y-z plane, so a surface normal's x
    component changes sign; depth-like X channels are just mirrored.
    """

    def __init__(self, prob: float = 0.5):
        self.prob = _check_probability("prob", prob)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        if rng.random() >= self.prob:
            return frame
        x = None
        if frame.x is not None:
            x = np.ascontiguousarray(frame.x[:, :, ::-1])
            if frame.modality == "normals":
                x[0] *= -1.0
        return frame.replace(
            image=np.ascontiguousarray(frame.image[:, ::-1]),
            label=np.ascontiguousarray(frame.label[:, ::-1]),
            x=x,
        )


# Rec. 601 luma weights and the RGB <-> YIQ pair; a rotation of the (I, Q) plane shifts hue.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


class ColorJitter:
    """Random brightness, contrast, saturation and hue of the RGB image only.

    Factors are drawn uniformly from [1 - s, 1 + s] (hue: a rotation of the YIQ chroma plane by
    up to +-`hue` turns). X and labels are passed through untouched: X is geometry, not colour.
    Output image is float32 in [0, 255].
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] (turns), got {hue!r}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        b, c, s = (rng.uniform(1 - v, 1 + v) for v in (self.brightness, self.contrast, self.saturation))
        angle = 2 * np.pi * rng.uniform(-self.hue, self.hue)
        img = frame.image.astype(np.float32) * np.float32(b)
        mean = (img @ _LUMA).mean()
        img = (img - mean) * np.float32(c) + mean
        luma = (img @ _LUMA)[..., None]
        img = (img - luma) * np.float32(s) + luma
        if angle:
            cos, sin = np.cos(angle), np.sin(angle)
            rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
            img = img @ (_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ).T.astype(np.float32)
        return frame.replace(image=np.clip(img, 0.0, 255.0).astype(np.float32, copy=False))


class Normalize:
    """Image to (rgb / 255 - mean) / std; X to a modality-specific range around [0, 1].

    normals:       unchanged (already unit vectors in [-1, 1]);
    inverse_depth: min_depth_m / Z, clipped to [0, 1] (anything nearer than min_depth_m is 1);
    disparity:     d / disparity_max_px, clipped to [0, 1];
    depth:         Z / depth_max_m, clipped to [0, 1] (far range saturates).
    Unknown stays exactly 0 in every case.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        inverse_depth_min_m: float = 1.0,
        disparity_max_px: float = 256.0,
        depth_max_m: float = 80.0,
    ):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must have 3 values with std > 0, got mean={mean!r} std={std!r}")
        for name, value in (("inverse_depth_min_m", inverse_depth_min_m), ("disparity_max_px", disparity_max_px),
                            ("depth_max_m", depth_max_m)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(std, np.float32) * 255.0)
        self.x_scale = {"inverse_depth": inverse_depth_min_m, "disparity": 1.0 / disparity_max_px,
                        "depth": 1.0 / depth_max_m}

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None) -> Frame:
        image = (frame.image.astype(np.float32, copy=False) - self.mean) * self.inv_std  # a new array either way
        x = frame.x
        if x is not None and frame.modality in self.x_scale:
            x = np.clip(x * np.float32(self.x_scale[frame.modality]), 0.0, 1.0)
        return frame.replace(image=image.astype(np.float32, copy=False), x=x)


class ToTensor:
    """End of a pipeline: Frame -> {"image" [3,H,W] float32, "x" [C,H,W] float32 (if any),
    "label" [H,W] int64, "name" str}, the per-sample dict a DataLoader batches."""

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None) -> dict:
        out = {"image": torch.from_numpy(np.ascontiguousarray(frame.image.transpose(2, 0, 1), dtype=np.float32))}
        if frame.x is not None:
            out["x"] = torch.from_numpy(np.ascontiguousarray(frame.x, dtype=np.float32))
        out["label"] = torch.from_numpy(frame.label.astype(np.int64))
        out["name"] = frame.name
        return out


class Compose:
    """Apply transforms in order, all drawing from one Generator (fresh entropy if none given).

    `random=False` declares that no transform draws, so a dataset need not draw a seed for it
    (which would move the caller's generator: validation must not change a training run).
    """

    def __init__(self, transforms: Sequence[Transform], random: bool = True):
        self.transforms = list(transforms)
        self.random = random

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None):
        rng = np.random.default_rng() if rng is None else rng
        for transform in self.transforms:
            frame = transform(frame, rng)
        return frame

    def __repr__(self) -> str:
        return f"Compose([{', '.join(type(t).__name__ for t in self.transforms)}])"


def _pair(name: str, value, kind=float) -> None:
    if len(value) != 2:
        raise ConfigError(f"{name} must have 2 values, got {tuple(value)!r}")
    if kind is int and any(int(v) != v or v < 1 for v in value):
        raise ConfigError(f"{name} must be (H, W) positive integers, got {tuple(value)!r}")


@dataclass
class TransformConfig:
    """Augmentation and normalisation for training and evaluation frames."""

    size: tuple[int, ...] = option((192, 640), "Network input (H, W): evaluation frames are resized to it; training scales are relative to it.")
    scale_range: tuple[float, ...] = option((0.75, 1.5), "Training scale factor range (low, high) relative to `size`.")
    crop_size: tuple[int, ...] = option((192, 640), "Training crop (H, W); smaller frames are padded (labels with the ignore index).")
    hflip_prob: float = option(0.5, "Probability of a horizontal flip (normals get n_x negated).")
    brightness: float = option(0.25, "Brightness jitter strength: factor in [1-s, 1+s]. RGB only.")
    contrast: float = option(0.25, "Contrast jitter strength: factor in [1-s, 1+s]. RGB only.")
    saturation: float = option(0.25, "Saturation jitter strength: factor in [1-s, 1+s]. RGB only.")
    hue: float = option(0.03, "Hue jitter: rotation of the chroma plane by up to this many turns. RGB only.")
    mean: tuple[float, ...] = option(IMAGENET_MEAN, "RGB mean (0-1 scale) subtracted from the image.")
    std: tuple[float, ...] = option(IMAGENET_STD, "RGB std (0-1 scale) the image is divided by.")
    inverse_depth_min_m: float = option(1.0, "X=inverse_depth is scaled to min_depth/Z in [0, 1]: depth at or below this reads 1.")
    disparity_max_px: float = option(256.0, "X=disparity is divided by this and clipped to [0, 1].")
    depth_max_m: float = option(80.0, "X=depth is divided by this and clipped to [0, 1].")

    def __post_init__(self):
        self.size, self.crop_size = tuple(self.size), tuple(self.crop_size)
        self.scale_range, self.mean, self.std = tuple(self.scale_range), tuple(self.mean), tuple(self.std)
        _pair("size", self.size, int)
        _pair("crop_size", self.crop_size, int)
        _pair("scale_range", self.scale_range)
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range!r}")
        check_range("hflip_prob", self.hflip_prob, 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            check_range(f"{name}", getattr(self, name), 0.0, 1.0)
        check_range("hue", self.hue, 0.0, 0.5)
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"{name} must have 3 values (R, G, B), got {getattr(self, name)!r}")
        if min(self.std) <= 0:
            raise ConfigError(f"std must be positive, got {self.std!r}")
        for name in ("inverse_depth_min_m", "disparity_max_px", "depth_max_m"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")

    def normalize(self) -> Normalize:
        return Normalize(self.mean, self.std, self.inverse_depth_min_m, self.disparity_max_px, self.depth_max_m)


def build_train_transforms(cfg: TransformConfig) -> Compose:
    """Scale -> crop -> flip (geometric, joint) -> colour jitter (RGB) -> normalise -> tensors."""
    return Compose([
        RandomScale(cfg.scale_range, base_size=cfg.size),
        RandomCrop(cfg.crop_size),
        RandomHorizontalFlip(cfg.hflip_prob),
        ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
        cfg.normalize(),
        ToTensor(),
    ])


def build_eval_transforms(cfg: TransformConfig) -> Compose:
    """Deterministic: resize to `size` -> normalise -> tensors (no randomness is drawn)."""
    return Compose([Resize(cfg.size), cfg.normalize(), ToTensor()], random=False)
