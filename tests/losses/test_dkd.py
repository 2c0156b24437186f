"""DKD per pixel: the KD = TCKD + (1 - p^T_t) NCKD identity, analytic gradients, ignore handling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lix_train.losses.dkd import dkd_loss, dkd_terms
from lix_train.losses.kd import kd_loss, kd_pixel_map

IGNORE = 255


def _batch(b=2, c=5, h=4, w=6, seed=0, dtype=torch.float32, ignore_frac=0.25):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2
    t = torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2
    y = torch.randint(0, c, (b, h, w), generator=g)
    y[torch.rand(b, h, w, generator=g) < ignore_frac] = IGNORE
    return s, t, y


def _reference_dkd(s, t, y, alpha, beta, temp):
    """Slow per-pixel reference with explicit binary and non-target distributions."""
    total, count = 0.0, 0
    for b, i, j in (y != IGNORE).nonzero().tolist():
        tgt = y[b, i, j].item()
        ps, pt = F.softmax(s[b, :, i, j] / temp, 0), F.softmax(t[b, :, i, j] / temp, 0)
        bs, bt = torch.stack([ps[tgt], 1 - ps[tgt]]), torch.stack([pt[tgt], 1 - pt[tgt]])
        keep = torch.arange(len(ps)) != tgt
        qs, qt = ps[keep] / ps[keep].sum(), pt[keep] / pt[keep].sum()
        tckd = (bt * (bt.log() - bs.log())).sum()
        nckd = (qt * (qt.log() - qs.log())).sum()
        total += alpha * tckd + beta * nckd
        count += 1
    return temp**2 * total / count


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_is_tckd_plus_teacher_weighted_nckd_per_pixel(temp):
    s, t, y = _batch(dtype=torch.float64)
    tckd, nckd, valid = dkd_terms(s, t, y, temp)
    safe = torch.where(valid, y, 0)
    p_teacher_target = F.softmax(t / temp, 1).gather(1, safe[:, None])[:, 0]
    kd = kd_pixel_map(s, t, temp)
    torch.testing.assert_close(tckd + (1 - p_teacher_target) * nckd, kd, rtol=1e-10, atol=1e-12)
    # The same identity at the loss level, where both sides carry T^2.
    weighted = temp**2 * ((tckd + (1 - p_teacher_target) * nckd) * valid).sum() / valid.sum()
    torch.testing.assert_close(weighted, kd_loss(s, t, y, temp), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("temp", [1.0, 2.5])
def test_dkd_loss_matches_slow_reference(temp):
    s, t, y = _batch(dtype=torch.float64)
    torch.testing.assert_close(dkd_loss(s, t, y, 1.0, 8.0, temp), _reference_dkd(s, t, y, 1.0, 8.0, temp))


@pytest.mark.parametrize("temp", [1.0, 3.0])
def test_analytic_gradients_of_tckd_and_nckd(temp):
    g = torch.Generator().manual_seed(1)
    c, tgt = 6, 2
    zs = torch.randn(1, c, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(1, c, 1, 1, generator=g, dtype=torch.float64)
    y = torch.full((1, 1, 1), tgt)
    tckd, nckd, _ = dkd_terms(zs, zt, y, temp)
    grad_tc = torch.autograd.grad(temp**2 * tckd.sum(), zs, retain_graph=True)[0].flatten()
    grad_nc = torch.autograd.grad(temp**2 * nckd.sum(), zs)[0].flatten()

    ps, pt = F.softmax(zs.detach().flatten() / temp, 0), F.softmax(zt.flatten() / temp, 0)
    keep = torch.arange(c) != tgt
    qs, qt = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    qs[keep], qt[keep] = ps[keep] / ps[keep].sum(), pt[keep] / pt[keep].sum()
    expected_tc = -temp * (ps[tgt] - pt[tgt]) * qs
    expected_tc[tgt] = temp * (ps[tgt] - pt[tgt])
    expected_nc = temp * (qs - qt)  # zero at the target: q_t = 0 for both
    torch.testing.assert_close(grad_tc, expected_tc)
    torch.testing.assert_close(grad_nc, expected_nc)


def test_gradcheck_dkd_loss():
    s, t, y = _batch(b=1, c=4, h=2, w=3, dtype=torch.float64)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: dkd_loss(z, t, y, 1.0, 4.0, 2.0), (s,))


def test_ignored_pixels_change_nothing_and_get_zero_gradient():
    s, t, y = _batch()
    s.requires_grad_(True)
    loss = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    loss.backward()
    ignored = (y == IGNORE)[:, None].expand_as(s)
    assert ignored.any() and torch.all(s.grad[ignored] == 0)
    s2, t2 = s.detach().clone(), t.clone()
    s2[ignored], t2[ignored] = 1e4, -1e4
    assert dkd_loss(s2, t2, y, 1.0, 8.0, 1.0) == loss.detach()


def test_all_ignored_batch_gives_zero_with_grad():
    s, t, _ = _batch()
    s.requires_grad_(True)
    y = torch.full((2, 4, 6), IGNORE)
    loss = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(s.grad == 0)


def test_confident_teacher_stays_finite():
    s, t, y = _batch()
    safe = torch.where(y == IGNORE, 0, y)
    t = t.scatter(1, safe[:, None], 200.0)  # p^T_t == 1 in float32
    s = s.scatter(1, safe[:, None], -200.0).requires_grad_(True)
    loss = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_low_resolution_logits_are_resized_bilinearly_to_the_labels():
    s, t, y = _batch(h=8, w=12)
    small_s, small_t = s[..., ::2, ::2], t[..., ::2, ::2]
    up = lambda z: F.interpolate(z, size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(dkd_loss(small_s, small_t, y, 1, 8, 1), dkd_loss(up(small_s), up(small_t), y, 1, 8, 1))


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((2, 5, 4, 6), (3, 5, 4, 6), (2, 4, 6)), "batch sizes differ"),
        (((2, 5, 4, 6), (2, 4, 4, 6), (2, 4, 6)), "class counts differ"),
        (((2, 5, 4, 6), (2, 5, 4, 6), (3, 4, 6)), "target: batch size"),
        (((2, 5, 4, 6), (2, 5, 4, 6), (2, 1, 4, 6)), "integer labels"),
        (((2, 5, 24), (2, 5, 24), (2, 4, 6)), r"expected logits \[B, C, h, w\]"),
    ],
)
def test_shape_errors_are_clear(shapes, message):
    s, t, y = torch.randn(shapes[0]), torch.randn(shapes[1]), torch.zeros(shapes[2], dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        dkd_loss(s, t, y, 1.0, 8.0, 1.0)
