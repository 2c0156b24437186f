"""Whole-image vs sliding-window inference, padding, two-input (teacher) mode, and score_loader()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from engine_fakes import NUM_CLASSES, SyntheticSegmentation, TinyNet
from lix_train.engine.config import EvalConfig
from lix_train.engine.loader_scoring import score_loader
from lix_train.engine.inference import predict_logits, sliding_window_logits, whole_image_logits, window_starts


class Pointwise(nn.Module):
    """1x1 conv: each pixel's logits depend on that pixel only, so any tiling gives the same answer."""

    def __init__(self, in_channels: int, divisor: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, NUM_CLASSES, 1)
        self.divisor = divisor

    def forward(self, *inputs):
        image = torch.cat(inputs, 1)
        assert image.shape[-2] % self.divisor == 0 and image.shape[-1] % self.divisor == 0, "needs padding"
        return self.conv(image), []


def _inputs(seed=0, size=(2, 3, 21, 30)):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*size, generator=gen)


def test_window_starts_cover_the_axis_and_end_flush():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(30, 16, 8) == [0, 8, 14]
    for length, crop, stride in [(30, 16, 8), (37, 12, 5), (64, 32, 32)]:
        starts = window_starts(length, crop, stride)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s:s + crop] = True
        assert covered.all() and starts[-1] + crop == length


@torch.no_grad()
def test_slide_equals_whole_when_one_window_covers_the_image():
    model = TinyNet(3).eval()
    image = _inputs()
    whole = whole_image_logits(model, [image], size_divisor=8)
    slide = sliding_window_logits(model, [image], crop_size=(32, 32), stride=(16, 16), size_divisor=8)
    assert whole.shape == (2, NUM_CLASSES, 21, 30)
    torch.testing.assert_close(slide, whole)


@torch.no_grad()
def test_overlapping_windows_average_to_the_whole_image_for_a_pointwise_model():
    model = Pointwise(3, divisor=8).eval()
    image = _inputs(1)
    whole = predict_logits(model, [image], "whole", size_divisor=8)
    slide = predict_logits(model, [image], "slide", crop_size=(16, 16), stride=(8, 8), size_divisor=8)
    assert slide.shape == (2, NUM_CLASSES, 21, 30)
    torch.testing.assert_close(slide, whole)


@torch.no_grad()
def test_teacher_mode_crops_both_inputs_identically():
    model = Pointwise(4).eval()
    image, x = _inputs(2), _inputs(3, (2, 1, 21, 30))
    reference = model.conv(torch.cat([image, x], 1))
    slide = sliding_window_logits(model, [image, x], crop_size=(8, 8), stride=(5, 6))
    torch.testing.assert_close(slide, reference)
    with pytest.raises(ValueError, match="same B, H, W"):
        whole_image_logits(model, [image, x[..., :20, :]])


@torch.no_grad()
def test_low_resolution_logits_are_upsampled_to_the_input():
    def quarter_res(image):
        return F.avg_pool2d(image, 4)[:, :NUM_CLASSES]

    logits = whole_image_logits(quarter_res, [_inputs(4, (1, 3, 18, 26))], size_divisor=4)
    assert logits.shape == (1, NUM_CLASSES, 18, 26)


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="'whole', 'slide'"):
        predict_logits(TinyNet(3), [_inputs()], "tiles")


@torch.no_grad()
def test_evaluate_oracle_scores_one_and_uses_x_in_teacher_mode():
    data = SyntheticSegmentation(length=5, seed=4)
    loader = DataLoader(data, batch_size=2)

    def oracle(image, x):  # labels are the argmax of the RGB channels; x must arrive too
        assert x.shape[1] == 1
        return F.one_hot(image.argmax(1), NUM_CLASSES).permute(0, 3, 1, 2).float()

    metrics = score_loader(oracle, loader, NUM_CLASSES, "slide", input_keys=("image", "x"),
                       eval_cfg=EvalConfig(mode="slide", crop_size=(8, 8), stride=(4, 4), size_divisor=8),
                       class_names=["a", "b", "c"])
    assert metrics["miou"] == 1.0 and metrics["pixel_acc"] == 1.0
    assert metrics["num_pixels"] == int((data.labels != 255).sum())
    assert set(metrics["per_class_iou"]) == {"a", "b", "c"}
    with pytest.raises(KeyError, match="input_keys"):
        score_loader(oracle, [{"image": data.images[:1], "label": data.labels[:1]}], NUM_CLASSES,
                 input_keys=("image", "x"))
