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
    assert result.reference == "fp32" and result.fp32_miou == 100.0 and result.passed
    other = truth.copy()
    other[0] = (other[0] + 1) % 4
    result = accuracy.gate(truth, other, 4, max_drop=0.5)
    assert not result.passed and result.drop > 0.5 and result.pixel_agreement == pytest.approx(0.75)


def test_gate_rejects_mismatched_shapes():
    _, truth = _frames()
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy.gate(truth, truth[:2], 4, 1.0)
    with pytest.raises(ValueError, match="do not match"):
        accuracy.gate(truth, truth, 4, 1.0, ground_truth=truth[:, :4])


def _index(batch, inputs):
    """Which frames of `inputs` a batch holds (predictors in these tests look their answer up)."""
    return [int(np.flatnonzero((inputs == frame).all(axis=(1, 2, 3)))[0]) for frame in batch]
