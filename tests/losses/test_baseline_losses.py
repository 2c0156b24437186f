"""Baseline losses: pixel CE, pixel-wise KD, CWD and AT against references and edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lix_train.losses.at import at_loss, at_stage_loss
from lix_train.losses.ce import pixel_cross_entropy
from lix_train.losses.cwd import cwd_loss
from lix_train.losses.kd import kd_loss

IGNORE = 255


def _logits(b=2, c=5, h=4, w=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2


def _labels(b=2, c=5, h=4, w=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (b, h, w), generator=g)
    y[torch.rand(b, h, w, generator=g) < 0.3] = IGNORE
    return y


def test_pixel_ce_matches_torch_and_survives_an_empty_batch():
    z, y = _logits(), _labels()
    torch.testing.assert_close(pixel_cross_entropy(z, y), F.cross_entropy(z, y, ignore_index=IGNORE))
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
    torch.testing.assert_close(
        pixel_cross_entropy(z, y, class_weights=weights), F.cross_entropy(z, y, weight=weights, ignore_index=IGNORE)
    )
    z.requires_grad_(True)
    empty = pixel_cross_entropy(z, torch.full_like(y, IGNORE))
    assert empty.item() == 0.0 and empty.requires_grad


def test_pixel_ce_resizes_low_resolution_logits_to_the_labels():
    z, y = _logits(h=2, w=3), _labels()
    up = F.interpolate(z, size=(4, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pixel_cross_entropy(z, y), F.cross_entropy(up, y, ignore_index=IGNORE))


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_loss_matches_kl_div_over_valid_pixels(temp):
    s, t, y = _logits(), _logits(seed=3), _labels()
    valid = (y != IGNORE).flatten()
    flat = lambda z: z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])[valid]
    ref = F.kl_div(F.log_softmax(flat(s) / temp, 1), F.log_softmax(flat(t) / temp, 1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, y, temp), temp**2 * ref)


def test_kd_ignored_pixels_get_zero_gradient():
    s, t, y = _logits().requires_grad_(True), _logits(seed=3), _labels()
    kd_loss(s, t, y, 2.0).backward()
    assert torch.all(s.grad[(y == IGNORE)[:, None].expand_as(s)] == 0)


def test_cwd_matches_a_per_channel_reference():
    s, t, temp = _logits(), _logits(seed=3), 4.0
    b, c = s.shape[:2]
    total = 0.0
    for i in range(b):
        for k in range(c):
            ps = F.log_softmax(s[i, k].flatten() / temp, 0)
            pt = F.log_softmax(t[i, k].flatten() / temp, 0)
            total += (pt.exp() * (pt - ps)).sum()
    torch.testing.assert_close(cwd_loss(s, t, temp), temp**2 * total / (b * c))
    assert cwd_loss(t, t.clone(), temp).abs() < 1e-6


def test_cwd_resizes_the_teacher_and_checks_shapes():
    s, t = _logits(h=4, w=6), _logits(h=8, w=12, seed=2)
    down = F.interpolate(t, size=(4, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cwd_loss(s, t), cwd_loss(s, down))
    with pytest.raises(ValueError, match="class counts differ"):
        cwd_loss(s, _logits(c=4))


def test_cwd_with_a_mask_is_cwd_over_the_valid_positions_only():
    # Defect 3: the padding of scale < 1 augmentation must not take part in the spatial softmax.
    s, t = _logits(h=6, w=8), _logits(h=6, w=8, seed=3)
    valid = torch.ones(s.shape[0], 6, 8, dtype=torch.bool)
    valid[:, :, 5:] = False
    torch.testing.assert_close(cwd_loss(s, t, 4.0, valid), cwd_loss(s[..., :5], t[..., :5], 4.0))
    s2 = s.clone()
    s2[..., 5:] = 50.0
    torch.testing.assert_close(cwd_loss(s2, t, 4.0, valid), cwd_loss(s, t, 4.0, valid))
    z = s.clone().requires_grad_(True)
    cwd_loss(z, t, 4.0, valid).backward()
    assert torch.isfinite(z.grad).all() and torch.all(z.grad[..., 5:] == 0)


def test_at_with_labels_ignores_the_padding():
    s, t = _logits(c=4, h=8, w=8), _logits(c=6, h=8, w=8, seed=5)
    target = torch.zeros(s.shape[0], 16, 16, dtype=torch.long)
    target[:, 10:] = IGNORE  # bottom rows padded: feature rows 5.. are padding
    s2, t2 = s.clone(), t.clone()
    s2[:, :, 5:], t2[:, :, 5:] = 9.0, -4.0
    torch.testing.assert_close(at_loss([s2], [t2], (0,), target=target), at_loss([s], [t], (0,), target=target))
    assert not torch.allclose(at_loss([s2], [t2], (0,)), at_loss([s], [t], (0,)))


def test_at_is_scale_free_and_handles_different_widths():
    s = _logits(c=4, h=8, w=8)
    assert at_stage_loss(s, 3.0 * s) < 1e-6
    t = _logits(c=16, h=4, w=4, seed=5)
    loss = at_stage_loss(s, t)
    assert 0 < loss <= 2
    with pytest.raises(ValueError, match="batch sizes differ"):
        at_stage_loss(s, t[:1])


def test_at_loss_sums_the_chosen_stages():
    s = [_logits(c=4, h=8, w=8, seed=i) for i in range(4)]
    t = [_logits(c=6, h=8, w=8, seed=10 + i) for i in range(4)]
    torch.testing.assert_close(at_loss(s, t, (1, 3)), at_stage_loss(s[1], t[1]) + at_stage_loss(s[3], t[3]))
    with pytest.raises(ValueError, match="stage 4 out of range"):
        at_loss(s, t, (4,))


def test_gradcheck_cwd_and_at():
    s, t = _logits(b=1, c=3, h=2, w=3, dtype=torch.float64), _logits(b=1, c=3, h=2, w=3, seed=4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: cwd_loss(z, t, 2.0), (s.requires_grad_(True),))
    f_s = _logits(b=1, c=3, h=3, w=3, dtype=torch.float64).requires_grad_(True)
    f_t = _logits(b=1, c=5, h=3, w=3, seed=6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: at_stage_loss(z, f_t), (f_s,))


def test_pooled_logits_keep_only_pure_cells_and_average_the_logits():
    from lix_train.losses.common import pool_logits_and_labels

    s, t = _logits(h=8, w=8), _logits(h=8, w=8, seed=3)
    y = torch.zeros(s.shape[0], 8, 8, dtype=torch.long)
    y[:, :, 4:] = 2
    y[:, 0, 5] = 1  # one odd pixel makes its 4x4 cell mixed
    y[:, 7, 0] = IGNORE  # an ignored pixel makes its cell ignored
    ps, pt, py = pool_logits_and_labels(s, t, y, 4)
    torch.testing.assert_close(ps, F.avg_pool2d(s, 4))
    torch.testing.assert_close(pt, F.avg_pool2d(t, 4))
    assert py[0].tolist() == [[0, IGNORE], [IGNORE, 2]]
    assert pool_logits_and_labels(s, t, y, 1)[2] is y
    with pytest.raises(ValueError, match="must divide"):
        pool_logits_and_labels(s, t, y, 3)
