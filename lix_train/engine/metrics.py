"""Segmentation scores from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

Everything is computed from one integer confusion matrix (rows = ground truth, columns =
prediction). It is additive over images and over processes, so evaluation accumulates it per
batch and sums it across ranks once at the end; the scores are then exact, not averages of
per-image scores.

Absent classes: a class with no ground-truth pixel *and* no predicted pixel has IoU 0/0. It is
reported as NaN and left out of the mean, so a validation split without, say, trains does not
pull mIoU down. A class that is predicted but absent from the ground truth scores IoU 0 (every
prediction of it is a false positive), and does count.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lix_train.data.classes import IGNORE_INDEX


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """int64 [C, C] counts, entry [t, p] = pixels of true class t predicted as p; ignored pixels skipped.

    `pred` and `target` are integer class maps of the same shape. Target ids other than
    `ignore_index` outside [0, C) are a label bug and raise instead of being miscounted.
    """
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction shape {tuple(pred.shape)} != "
                         f"target shape {tuple(target.shape)}")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes={num_classes} must be positive")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    if target.numel():
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"confusion_matrix: label ids must be in [0, {num_classes}) or {ignore_index}, "
                             f"found {low if low < 0 else high}")
        low, high = int(pred.min()), int(pred.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"confusion_matrix: predicted ids must be in [0, {num_classes}), "
                             f"found {low if low < 0 else high}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """float64 [C]: TP / (TP + FP + FN) per class; NaN for classes absent from GT and prediction."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that are present (NaN entries excluded); NaN if none is."""
    iou = per_class_iou(confusion)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if present.any() else math.nan


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Correct / scored pixels (ignored pixels are not scored); NaN for an empty matrix."""
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / total if total else math.nan


def summarize(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """The metrics dict every tool reports: fractions in [0, 1], per-class IoU keyed by class name.

    Keys: "miou", "pixel_acc", "per_class_iou" ({name: IoU or NaN}), "num_pixels",
    "confusion" (the matrix as nested lists, so results can be re-scored later).
    """
    confusion = confusion.detach().cpu().long()
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"summarize: {len(names)} class names for a {num_classes}-class confusion matrix")
    iou = per_class_iou(confusion).tolist()
    return {
        "miou": mean_iou(confusion),
        "pixel_acc": pixel_accuracy(confusion),
        "per_class_iou": dict(zip(names, iou)),
        "num_pixels": int(confusion.sum()),
        "confusion": confusion.tolist(),
    }
