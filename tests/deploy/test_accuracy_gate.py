"""The accuracy gate's scores against hand-computed values and its decision both ways."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lix_deploy import accuracy


def test_confusion_matrix_counts_and_skips_ignored_pixels():
    target = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    conf = accuracy.confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert conf.sum() == 5  # the 255 pixel is not scored


def test_mean_iou_reference_values_and_absent_classes():
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 0, fn 1 -> 0; class 3 absent
    conf = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert accuracy.mean_iou(conf) == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)
    assert accuracy.mean_iou(np.diag([3, 4, 0])) == pytest.approx(100.0)
    assert math.isnan(accuracy.mean_iou(np.zeros((3, 3))))


def test_miou_identity_and_agreement():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 8, 16))
    assert accuracy.mean_iou(accuracy.confusion_matrix(labels, labels, 5)) == pytest.approx(100.0)
    assert accuracy.pixel_agreement(labels, labels) == 1.0
    flipped = labels.copy()
    flipped[0, 0, :4] = (flipped[0, 0, :4] + 1) % 5
    assert accuracy.pixel_agreement(flipped, labels) == pytest.approx(1 - 4 / labels.size)


def test_confusion_matrix_rejects_bad_ids_and_shapes():
    with pytest.raises(ValueError, match="label ids"):
        accuracy.confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 7), 3)
    with pytest.raises(ValueError, match="predicted ids"):
        accuracy.confusion_matrix(np.full((2, 2), 3), np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


@pytest.mark.parametrize("fp32, cand, max_drop, passed", [
    (70.0, 69.5, 1.0, True), (70.0, 68.9, 1.0, False), (70.0, 69.0, 1.0, True),
    (70.0, 70.0, 0.0, True), (70.0, 70.0, -0.1, False), (70.0, 71.0, -0.5, True), (70.0, math.nan, 5.0, False),
])
def test_decide(fp32, cand, max_drop, passed):
    drop, ok = accuracy.decide(fp32, cand, max_drop)
    assert ok is passed
    if not math.isnan(cand):
        assert drop == pytest.approx(fp32 - cand)


def _frames(n=4, h=8, w=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, (n, h, w)).astype(np.uint8)
    return rng.random((n, 3, h, w)).astype(np.float32), truth


def test_gate_with_labels_passes_a_faithful_candidate_and_fails_a_degraded_one():
    inputs, truth = _frames()
    perfect = lambda batch: truth[_index(batch, inputs)]  # noqa: E731
    degraded_labels = truth.copy()
    degraded_labels[:, :, :8] = 0  # half of every frame predicted as class 0
    degraded = lambda batch: degraded_labels[_index(batch, inputs)]  # noqa: E731

    same = accuracy.evaluate(perfect, perfect, inputs, 4, max_drop=1.0, ground_truth=truth)
    assert same.passed and same.drop == pytest.approx(0.0) and same.pixel_agreement == 1.0
    assert same.fp32_miou == pytest.approx(100.0) and same.reference == "labels" and same.frames == 4

    worse = accuracy.evaluate(perfect, degraded, inputs, 4, max_drop=1.0, ground_truth=truth)
    expected = accuracy.mean_iou(accuracy.confusion_matrix(degraded_labels, truth, 4))
    assert worse.candidate_miou == pytest.approx(expected) and worse.drop == pytest.approx(100.0 - expected)
    assert not worse.passed and "FAIL" in worse.summary()
    assert accuracy.evaluate(perfect, degraded, inputs, 4, max_drop=100.0, ground_truth=truth).passed


def test_gate_without_labels_uses_fp32_predictions_as_reference():
    inputs, truth = _frames()
    result = accuracy.gate(truth, truth, 4, max_drop=0.0)
    assert result.reference == "fp32" and result.basis == accuracy.BASIS_AGREEMENT and result.passed
    assert result.fp32_miou is None and result.drop is None and result.miou_vs_fp32 == pytest.approx(100.0)
    other = truth.copy()
    other[0] = (other[0] + 1) % 4
    result = accuracy.gate(truth, other, 4, max_drop=0.5)
    assert not result.passed and result.pixel_agreement == pytest.approx(0.75)
    assert "75.00 % of pixels (min 98.00 %)" in result.reason()


def _near_faithful(n=4, h=60, w=100, seed=1):
    """FP32 predictions with two big classes and two small ones, and an INT8-like candidate that agrees on
    98.5 % of the pixels, its disagreements on the small classes' boundaries (as quantisation does)."""
    fp32 = np.zeros((n, h, w), np.uint8)
    fp32[:, h // 2:] = 1
    fp32[:, 10:20, 10:20] = 2  # 100 px per frame
    fp32[:, 40:50, 60:70] = 3
    candidate = fp32.copy()
    rng = np.random.default_rng(seed)
    for frame in range(n):
        for cls, (r, c) in ((2, (10, 10)), (3, (40, 60))):
            ring = [(r + i, c + j) for i in range(10) for j in range(10) if i in (0, 9) or j in (0, 9)]
            flips = rng.choice(len(ring), 12, replace=False)
            for k in flips:
                candidate[frame][ring[k]] = 0 if cls == 2 else 1
    candidate[:, 0, :66] = 1  # and big-class pixels: 90 of 6000 disagree
    return fp32, candidate


def test_unlabelled_gate_decides_on_agreement_not_on_fp32_as_labels():
    """Issue 15: 98.5 % agreement must not be read as 'loses 7 mIoU points' against FP32 taken as labels."""
    fp32, candidate = _near_faithful()
    result = accuracy.gate(fp32, candidate, 4, max_drop=1.0)
    assert result.pixel_agreement == pytest.approx(0.985, abs=0.003)
    assert 100 - result.miou_vs_fp32 > 5  # what the old gate called the "drop"
    assert result.basis == accuracy.BASIS_AGREEMENT and result.passed, result.summary()
    assert result.drop is None and "agreement with FP32" in result.summary()
    assert result.worst_class in (2, 3) and result.worst_class_agreement == pytest.approx(0.88)
    assert set(result.class_agreement) == {0, 1, 2, 3}

    # each threshold is its own option and names itself when it fails
    strict_pixels = accuracy.gate(fp32, candidate, 4, 1.0, min_pixel_agreement=0.99)
    assert not strict_pixels.passed and "of pixels (min 99.00 %)" in strict_pixels.reason()
    strict_classes = accuracy.gate(fp32, candidate, 4, 1.0, min_class_agreement=0.9)
    assert not strict_classes.passed and "class 2 88.00 %" in strict_classes.reason()
    assert "class 0" not in strict_classes.reason()


def test_unlabelled_gate_catches_a_vanished_class_that_pixel_agreement_hides():
    fp32, _ = _near_faithful()
    collapsed = fp32.copy()
    collapsed[collapsed == 3] = 1  # class 3 gone: 1.7 % of the pixels
    result = accuracy.gate(fp32, collapsed, 4, 1.0, min_pixel_agreement=0.98)
    assert result.pixel_agreement > 0.98 and not result.passed
    assert result.worst_class == 3 and result.worst_class_agreement == 0.0
    # a class under min_class_share of the pixels is reported but not gated
    tiny = fp32.copy()
    tiny[:, 0, 0] = 2
    wrong = tiny.copy()
    wrong[:, 0, 0] = 0
    other = accuracy.gate(tiny, wrong, 4, 1.0, min_class_share=0.2)
    assert other.passed and other.class_agreement[2] < 1.0
    with pytest.raises(ValueError, match="min_pixel_agreement=98"):
        accuracy.gate(fp32, fp32, 4, 1.0, min_pixel_agreement=98)


def test_labelled_gate_keeps_the_miou_drop_basis():
    fp32, candidate = _near_faithful()
    result = accuracy.gate(fp32, candidate, 4, max_drop=1.0, ground_truth=fp32)
    assert result.basis == accuracy.BASIS_LABELS and result.reference == "labels"
    assert not result.passed and "mIoU points against the labels" in result.reason()
    assert result.drop == pytest.approx(100.0 - result.candidate_miou)


def test_gate_rejects_mismatched_shapes():
    _, truth = _frames()
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy.gate(truth, truth[:2], 4, 1.0)
    with pytest.raises(ValueError, match="do not match"):
        accuracy.gate(truth, truth, 4, 1.0, ground_truth=truth[:, :4])


def _index(batch, inputs):
    """Which frames of `inputs` a batch holds (predictors in these tests look their answer up)."""
    return [int(np.flatnonzero((inputs == frame).all(axis=(1, 2, 3)))[0]) for frame in batch]
