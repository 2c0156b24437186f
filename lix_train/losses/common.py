"""Shape checks, resolution matching and masked means shared by every loss.

Resolution rule (one rule for every logit loss): when logits and labels differ in size, the
logits are resized **bilinearly to the label size**. Labels are never nearest-downsampled:
that would silently drop thin, rare structures (poles, signs, curbs) from the loss, which are
exactly the pixels where the geometry-aware teacher helps most. Losses without labels (CWD)
bring the teacher's map to the student's size; feature losses bring the teacher's features to
the student's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lix_train.data.classes import IGNORE_INDEX


def check_logits(name: str, logits: torch.Tensor) -> None:
    """Logit maps must be [B, C, h, w] with at least two classes."""
    if logits.dim() != 4:
        raise ValueError(f"{name}: expected logits [B, C, h, w], got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"{name}: expected at least 2 classes, got shape {tuple(logits.shape)}")


def check_pair(student: torch.Tensor, teacher: torch.Tensor, what: str = "logits", same_channels: bool = True) -> None:
    """Student and teacher maps must agree in batch size (and channels for logit losses)."""
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(
            f"student/teacher {what}: expected [B, C, h, w], got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student/teacher {what}: batch sizes differ ({student.shape[0]} vs {teacher.shape[0]})"
        )
    if same_channels and student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"student/teacher {what}: class counts differ ({student.shape[1]} vs {teacher.shape[1]})"
        )


def check_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Labels must be integer [B, H, W] with the logits' batch size."""
    if target.dim() != 3 or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target: expected integer labels [B, H, W], got {target.dtype} {tuple(target.shape)}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target: batch size {target.shape[0]} but logits have {logits.shape[0]}")


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a [B, C, h, w] map; a no-op (same tensor) when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def check_stages(name: str, stages) -> tuple[int, ...]:
    """`stages` as a tuple of distinct stage indices >= 0 (ValueError naming the option `name` otherwise)."""
    stages = tuple(stages)
    if not stages:
        raise ValueError(f"{name} must name at least one stage")
    if len(set(stages)) != len(stages) or min(stages) < 0:
        raise ValueError(f"{name}={stages!r} must be distinct indices >= 0")
    return stages


def valid_mask(target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid [B,H,W] bool, safe target with ignored pixels set to class 0 for gather/scatter)."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    return valid, safe


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over valid pixels; exactly 0 (with a graph) when nothing is valid.

    `torch.where` rather than a product keeps ignored pixels at exactly zero gradient even if
    their values are extreme, and no boolean-masked reshape is needed (that was 2x slower).
    """
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp_min(1).to(values.dtype)


def feature_valid_mask(target: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX,
                       min_fraction: float = 0.5) -> torch.Tensor:
    """[B, H, W] labels -> [B, h, w] bool: feature cells whose pixels are mostly labelled.

    Feature and channel losses have no labels of their own, yet the padding that scale < 1
    augmentation adds (label = ignore, image = 0) would otherwise be distilled as if it were scene
    content: about a quarter of the pixels at scale 0.75. A cell counts when at least `min_fraction`
    of the label pixels it covers are valid (area pooling, so every pixel counts once).
    """
    if target.dim() != 3:
        raise ValueError(f"feature_valid_mask: expected labels [B, H, W], got {tuple(target.shape)}")
    valid = (target != ignore_index).unsqueeze(1).float()
    if tuple(valid.shape[-2:]) != tuple(size):
        valid = F.adaptive_avg_pool2d(valid, tuple(size))
    return valid[:, 0] >= min_fraction


def labels_mask_at(target: torch.Tensor | None, feature: torch.Tensor, ignore_index: int = IGNORE_INDEX
                   ) -> torch.Tensor | None:
    """`feature_valid_mask` at a [B, C, h, w] feature's size; None when there are no labels (every cell counts)."""
    return None if target is None else feature_valid_mask(target, tuple(feature.shape[-2:]), ignore_index)


def pool_logits_and_labels(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                           stride: int, ignore_index: int = IGNORE_INDEX
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logit maps average-pooled by `stride` and the labels of *pure* cells (others = ignore_index).

    Why: the networks predict at stride 4 and upsample, so a per-pixel logit loss at full
    resolution spends 16x the work on interpolated values (on CPU it cost more than the student's
    own forward and backward). A cell keeps its label only when every pixel in it has that label,
    so a loss at the pooled size never attributes a boundary cell to one side; thin structures
    still get the full-resolution L_H. Both maps are brought to the label size first.
    """
    if stride == 1:
        return student_logits, teacher_logits, target
    if stride < 1:
        raise ValueError(f"logit stride must be >= 1, got {stride}")
    size = tuple(target.shape[-2:])
    if any(s % stride for s in size):
        raise ValueError(f"logit stride {stride} must divide the label size {size}")
    pool = lambda x: F.avg_pool2d(resize_to(x, size), stride)  # noqa: E731
    labels = target.unsqueeze(1).float()
    high = F.max_pool2d(labels, stride)
    low = -F.max_pool2d(-labels, stride)
    pure = torch.where(high == low, high, torch.full_like(high, float(ignore_index)))
    return pool(student_logits), pool(teacher_logits), pure[:, 0].to(target.dtype)
