"""Confusion-matrix metrics against hand-computed values and identities."""

from __future__ import annotations

import math

import pytest
import torch

from lix_train.engine.metrics import confusion_matrix, mean_iou, per_class_iou, pixel_accuracy, summarize

IGN = 255


def test_hand_computed_example():
    target = torch.tensor([[0, 0, 1], [1, 2, IGN]])
    pred = torch.tensor([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(pred, target, 3, IGN)
    # rows = truth, cols = prediction; the ignored pixel (predicted 0) is not counted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    iou = per_class_iou(cm)
    # class 0: TP 1, FN 1, FP 0 -> 1/2; class 1: TP 2, FP 2 -> 2/4; class 2: TP 0, FN 1 -> 0
    assert iou.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_perfect_prediction_scores_one():
    target = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    cm = confusion_matrix(target.clone(), target, 4)
    assert mean_iou(cm) == 1.0 and pixel_accuracy(cm) == 1.0
    assert torch.equal(cm, torch.diag(torch.bincount(target.flatten(), minlength=4)))


def test_ignored_pixels_are_excluded_whatever_is_predicted():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (16, 16), generator=gen)
    target[:4] = IGN
    pred_a = torch.randint(0, 3, (16, 16), generator=gen)
    pred_b = pred_a.clone()
    pred_b[:4] = (pred_b[:4] + 1) % 3
    cm = confusion_matrix(pred_a, target, 3, IGN)
    assert torch.equal(cm, confusion_matrix(pred_b, target, 3, IGN))
    assert int(cm.sum()) == int((target != IGN).sum())


def test_row_and_column_sums_are_the_label_and_prediction_histograms():
    gen = torch.Generator().manual_seed(2)
    target, pred = torch.randint(0, 5, (3, 7, 9), generator=gen), torch.randint(0, 5, (3, 7, 9), generator=gen)
    cm = confusion_matrix(pred, target, 5)
    assert torch.equal(cm.sum(1), torch.bincount(target.flatten(), minlength=5))
    assert torch.equal(cm.sum(0), torch.bincount(pred.flatten(), minlength=5))


def test_confusion_is_additive_over_images():
    gen = torch.Generator().manual_seed(3)
    target, pred = torch.randint(0, 3, (4, 5, 5), generator=gen), torch.randint(0, 3, (4, 5, 5), generator=gen)
    parts = sum(confusion_matrix(pred[i], target[i], 3) for i in range(4))
    assert torch.equal(parts, confusion_matrix(pred, target, 3))


def test_absent_class_is_nan_and_left_out_of_the_mean():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 1])
    iou = per_class_iou(confusion_matrix(pred, target, 3))
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2])
    assert mean_iou(confusion_matrix(pred, target, 3)) == 1.0


def test_class_predicted_but_absent_from_truth_scores_zero_and_counts():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    iou = per_class_iou(confusion_matrix(pred, target, 3))
    assert iou.tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert mean_iou(confusion_matrix(pred, target, 3)) == pytest.approx(0.5)


def test_empty_and_invalid_inputs():
    cm = confusion_matrix(torch.tensor([1]), torch.tensor([IGN]), 2)
    assert int(cm.sum()) == 0 and math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))
    with pytest.raises(ValueError, match="label ids must be in"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)


def test_summarize_names_classes():
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    out = summarize(cm, ["road", "car", "sky"])
    assert out["per_class_iou"]["road"] == pytest.approx(0.5) and math.isnan(out["per_class_iou"]["sky"])
    assert out["miou"] == pytest.approx(0.5) and out["num_pixels"] == 3 and out["confusion"] == cm.tolist()
    with pytest.raises(ValueError, match="2 class names"):
        summarize(cm, ["road", "car"])
