"""The accuracy gate: a reduced-precision artefact ships only if it stays as accurate as FP32.

INT8 segmentation can quietly lose several mIoU points. So every build runs the candidate and
the FP32 ONNX (the export, on ONNX Runtime) on the same held-out frames and gates on what can
actually be measured there (`GateResult.basis` names which):

* ``"miou_drop_vs_labels"`` (the set has labels.npy): mIoU of each against the labels,
  drop = fp32_miou - candidate_miou, passes when drop <= max_drop (points). A negative
  max_drop demands an improvement, which the tests use to force a rejection.
* ``"agreement_with_fp32"`` (no labels, ``calib --no-labels``): there is no mIoU to lose, only
  how far the candidate strays from FP32. FP32 predictions are *not* treated as labels (an
  INT8 model that agrees on 98.5 % of pixels would read as "losing 7 mIoU points", the small
  classes' boundary noise dominating a mean IoU). It passes when both
    - pixel agreement (share of pixels with the same class) >= min_pixel_agreement, and
    - every class's agreement (the share of the pixels FP32 gives that class which the
      candidate gives it too) >= min_class_agreement, for the classes covering at least
      min_class_share of the pixels (rarer ones are reported, not gated: a handful of pixels
      is noise, not evidence);
  fp32_miou, candidate_miou and drop are then None (not measured), and miou_vs_fp32 is
  reported for information only.

Pixel and class agreement are always reported (fractions 0..1). mIoU is in percent (points),
over the classes present in the reference or the prediction (the same convention as
lix_train.engine.metrics, computed here in numpy so the gate needs no torch).
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


BASIS_LABELS = "miou_drop_vs_labels"
BASIS_AGREEMENT = "agreement_with_fp32"
DEFAULT_MIN_PIXEL_AGREEMENT = 0.98
DEFAULT_MIN_CLASS_AGREEMENT = 0.80
DEFAULT_MIN_CLASS_SHARE = 0.001


def class_agreement(candidate: np.ndarray, fp32: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(agreement [C], support [C]): per class c, the share of FP32's class-c pixels the candidate also
    labels c (NaN where FP32 never predicts c), and how many pixels FP32 gives class c."""
    confusion = confusion_matrix(candidate, fp32, num_classes).astype(np.float64)  # [fp32 class, candidate class]
    support = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return agreement, support.astype(np.int64)


@dataclass(frozen=True)
class GateResult:
    """The gate's numbers and decision (mIoU in percent; agreements 0..1); see the module doc."""

    basis: str  # BASIS_LABELS or BASIS_AGREEMENT: what the decision was made on
    passed: bool
    frames: int
    reference: str  # "labels" or "fp32" (what the candidate was measured against)
    pixel_agreement: float
    class_agreement: dict  # {class id: agreement} for the classes FP32 predicts
    worst_class: int | None  # the gated class with the lowest agreement
    worst_class_agreement: float | None
    max_drop: float
    min_pixel_agreement: float
    min_class_agreement: float
    min_class_share: float
    fp32_miou: float | None = None  # None: not measured (no labels)
    candidate_miou: float | None = None
    drop: float | None = None
    miou_vs_fp32: float | None = None  # informational only, never gated
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_agreement"] = {str(k): v for k, v in self.class_agreement.items()}
        data["failures"] = list(self.failures)
        return data

    def basis_text(self) -> str:
        return ("mIoU drop against the labels" if self.basis == BASIS_LABELS
                else "agreement with FP32 (no labels in the evaluation set)")

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        worst = ("" if self.worst_class is None else
                 f", worst class {self.worst_class} {100 * self.worst_class_agreement:.2f} %")
        if self.basis == BASIS_LABELS:
            return (f"accuracy gate {verdict} (basis: {self.basis_text()}): mIoU fp32 {self.fp32_miou:.2f}, "
                    f"candidate {self.candidate_miou:.2f}, drop {self.drop:+.2f} points (max {self.max_drop:.2f}); "
                    f"pixel agreement {100 * self.pixel_agreement:.2f} %{worst} on {self.frames} frames")
        return (f"accuracy gate {verdict} (basis: {self.basis_text()}): pixel agreement "
                f"{100 * self.pixel_agreement:.2f} % (min {100 * self.min_pixel_agreement:.2f} %){worst} "
                f"(min {100 * self.min_class_agreement:.2f} %) on {self.frames} frames; mIoU vs FP32 "
                f"{self.miou_vs_fp32:.2f} (not gated)")

    def reason(self) -> str:
        """Why the gate failed (or the figures it passed on), in words for the build decision."""
        if self.failures:
            return "; ".join(self.failures)
        return self.summary()


def decide(fp32_miou: float, candidate_miou: float, max_drop: float) -> tuple[float, bool]:
    """(drop, passed): drop = fp32 - candidate; passes when drop <= max_drop (NaN never passes)."""
    drop = float(fp32_miou) - float(candidate_miou)
    return drop, bool(drop <= max_drop)  # comparisons with NaN are False


def predict_all(predictor: Predictor, inputs: np.ndarray, batch_size: int = 1) -> np.ndarray:
    """Run `predictor` over [N, 3, H, W] in batches; returns uint8/int labels [N, H, W]."""
    outputs = [np.asarray(predictor(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0)


def gate(fp32_labels: np.ndarray, candidate_labels: np.ndarray, num_classes: int, max_drop: float,
         ground_truth: np.ndarray | None = None, *, min_pixel_agreement: float = DEFAULT_MIN_PIXEL_AGREEMENT,
         min_class_agreement: float = DEFAULT_MIN_CLASS_AGREEMENT,
         min_class_share: float = DEFAULT_MIN_CLASS_SHARE) -> GateResult:
    """Score both prediction sets and decide, on the labels when given, else on agreement (module doc)."""
    if fp32_labels.shape != candidate_labels.shape:
        raise ValueError(f"fp32 predictions {fp32_labels.shape} and candidate predictions "
                         f"{candidate_labels.shape} differ in shape")
    for name, value in (("min_pixel_agreement", min_pixel_agreement), ("min_class_agreement", min_class_agreement),
                        ("min_class_share", min_class_share)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must be a fraction in [0, 1]")
    agreement = pixel_agreement(candidate_labels, fp32_labels)
    per_class, support = class_agreement(candidate_labels, fp32_labels, num_classes)
    predicted = {int(c): float(per_class[c]) for c in np.flatnonzero(support > 0)}
    gated = [int(c) for c in np.flatnonzero(support >= max(1.0, min_class_share * support.sum()))]
    worst = min(gated, key=lambda c: per_class[c]) if gated else None
    worst_value = None if worst is None else float(per_class[worst])
    common = dict(frames=int(len(fp32_labels)), pixel_agreement=agreement, class_agreement=predicted,
                  worst_class=worst, worst_class_agreement=worst_value, max_drop=float(max_drop),
                  min_pixel_agreement=float(min_pixel_agreement), min_class_agreement=float(min_class_agreement),
                  min_class_share=float(min_class_share))
    if ground_truth is not None:
        if ground_truth.shape != fp32_labels.shape:
            raise ValueError(f"labels {ground_truth.shape} do not match the predictions {fp32_labels.shape}")
        fp32_miou = mean_iou(confusion_matrix(fp32_labels, ground_truth, num_classes))
        candidate_miou = mean_iou(confusion_matrix(candidate_labels, ground_truth, num_classes))
        drop, passed = decide(fp32_miou, candidate_miou, max_drop)
        failures = () if passed else (f"loses {drop:.2f} mIoU points against the labels (max {max_drop:.2f})",)
        return GateResult(BASIS_LABELS, passed, reference="labels", fp32_miou=fp32_miou,
                          candidate_miou=candidate_miou, drop=drop, failures=failures, **common)
    failures = []
    if not agreement >= min_pixel_agreement:  # NaN (no pixels) fails
        failures.append(f"agrees with FP32 on {100 * agreement:.2f} % of pixels "
                        f"(min {100 * min_pixel_agreement:.2f} %)")
    low = [c for c in gated if not per_class[c] >= min_class_agreement]
    if low:
        failures.append("class agreement with FP32 below {:.2f} %: {}".format(
            100 * min_class_agreement, ", ".join(f"class {c} {100 * per_class[c]:.2f} %" for c in low)))
    miou_vs_fp32 = mean_iou(confusion_matrix(candidate_labels, fp32_labels, num_classes))
    return GateResult(BASIS_AGREEMENT, not failures, reference="fp32", miou_vs_fp32=miou_vs_fp32,
                      failures=tuple(failures), **common)


def evaluate(reference: Predictor, candidate: Predictor, inputs: np.ndarray, num_classes: int, max_drop: float,
             ground_truth: np.ndarray | None = None, **thresholds) -> GateResult:
    """Run both predictors on `inputs` and gate the candidate against the reference (`thresholds`: gate's)."""
    return gate(predict_all(reference, inputs), predict_all(candidate, inputs), num_classes, max_drop, ground_truth,
                **thresholds)


def artefact_predictor(path: str | Path, backend: str = "auto", **options) -> tuple[Predictor, Callable[[], None]]:
    """(predictor, close) for an ONNX file or a TensorRT engine through the deployment runtime (Segmenter),
    so the gate measures exactly what a vehicle runs. `options` go to Segmenter (e.g. intra_op_threads)."""
    from lix_deploy.runtime.segmenter import Segmenter

    segmenter = Segmenter(path, backend=backend, **options)
    return (lambda batch: segmenter.infer(batch).labels), segmenter.close
