"""The accuracy gate: a reduced-precision artefact ships only if it loses at most N mIoU points.

INT8 segmentation can quietly lose several mIoU points. So every build runs the candidate and
the FP32 ONNX (the export, on ONNX Runtime) on the same held-out frames and compares:

* with ground truth (a calibration set's labels.npy): mIoU of each against the labels,
  drop = fp32_miou - candidate_miou;
* without labels: the FP32 predictions are the reference, fp32_miou = 100 by definition and
  the drop is 100 - mIoU(candidate vs FP32), i.e. how much the candidate disagrees;
* always: pixel agreement, the share of pixels where candidate and FP32 give the same class.

mIoU is in percent (points), over the classes present in the reference or the prediction
(the same convention as lix_train.engine.metrics, computed here in numpy so the gate needs no
torch). The gate passes when drop <= max_drop; a negative max_drop demands an improvement
and so always fails unless the candidate is better, which the tests use to force a rejection.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lix_train.data.classes import IGNORE_INDEX

#: batch float32 [N, 3, H, W] (RGB 0..255) -> labels [N, H, W]
Predictor = Callable[[np.ndarray], np.ndarray]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 [C, C], entry [t, p] = pixels of true class t predicted as p; `ignore_index` pixels skipped."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be positive")
    target = target.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    for name, ids in (("label", target), ("predicted", pred)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise ValueError(f"{name} ids must be in [0, {num_classes}), found {bad}")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU in percent over classes with a non-empty union; NaN when there is none."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float(100.0 * (tp[present] / union[present]).mean()) if present.any() else math.nan


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share (0..1) of pixels where two label maps agree."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return float((a == b).mean()) if a.size else math.nan


@dataclass(frozen=True)
class GateResult:
    """The gate's numbers and decision (mIoU in percent; agreement 0..1)."""

    fp32_miou: float
    candidate_miou: float
    drop: float
    max_drop: float
    passed: bool
    pixel_agreement: float
    frames: int
    reference: str  # "labels" or "fp32" (what mIoU was measured against)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"accuracy gate {verdict}: mIoU fp32 {self.fp32_miou:.2f}, candidate {self.candidate_miou:.2f} "
                f"(vs {self.reference}), drop {self.drop:+.2f} points (max {self.max_drop:.2f}), pixel agreement "
                f"{100 * self.pixel_agreement:.2f} % on {self.frames} frames")


def decide(fp32_miou: float, candidate_miou: float, max_drop: float) -> tuple[float, bool]:
    """(drop, passed): drop = fp32 - candidate; passes when drop <= max_drop (NaN never passes)."""
    drop = float(fp32_miou) - float(candidate_miou)
    return drop, bool(drop <= max_drop)  # comparisons with NaN are False


def predict_all(predictor: Predictor, inputs: np.ndarray, batch_size: int = 1) -> np.ndarray:
    """Run `predictor` over [N, 3, H, W] in batches; returns uint8/int labels [N, H, W]."""
    outputs = [np.asarray(predictor(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0)


def gate(fp32_labels: np.ndarray, candidate_labels: np.ndarray, num_classes: int, max_drop: float,
         ground_truth: np.ndarray | None = None) -> GateResult:
    """Score both prediction sets and decide; see the module doc for the no-label case."""
    if fp32_labels.shape != candidate_labels.shape:
        raise ValueError(f"fp32 predictions {fp32_labels.shape} and candidate predictions "
                         f"{candidate_labels.shape} differ in shape")
    agreement = pixel_agreement(candidate_labels, fp32_labels)
    if ground_truth is not None:
        if ground_truth.shape != fp32_labels.shape:
            raise ValueError(f"labels {ground_truth.shape} do not match the predictions {fp32_labels.shape}")
        fp32_miou = mean_iou(confusion_matrix(fp32_labels, ground_truth, num_classes))
        candidate_miou = mean_iou(confusion_matrix(candidate_labels, ground_truth, num_classes))
        reference = "labels"
    else:
        fp32_miou = 100.0
        candidate_miou = mean_iou(confusion_matrix(candidate_labels, fp32_labels, num_classes))
        reference = "fp32"
    drop, passed = decide(fp32_miou, candidate_miou, max_drop)
    return GateResult(fp32_miou, candidate_miou, drop, float(max_drop), passed, agreement,
                      int(len(fp32_labels)), reference)


def evaluate(reference: Predictor, candidate: Predictor, inputs: np.ndarray, num_classes: int, max_drop: float,
             ground_truth: np.ndarray | None = None) -> GateResult:
    """Run both predictors on `inputs` and gate the candidate against the reference."""
    return gate(predict_all(reference, inputs), predict_all(candidate, inputs), num_classes, max_drop, ground_truth)


def artefact_predictor(path: str | Path, backend: str = "auto", **options) -> tuple[Predictor, Callable[[], None]]:
    """(predictor, close) for an ONNX file or a TensorRT engine through the deployment runtime (Segmenter),
    so the gate measures exactly what a vehicle runs. `options` go to Segmenter (e.g. intra_op_threads)."""
    from lix_deploy.runtime.segmenter import Segmenter

    segmenter = Segmenter(path, backend=backend, **options)
    return (lambda batch: segmenter.infer(batch).labels), segmenter.close
