"""ARFD: token matching, recalibration limits, CKA loss behaviour, gradients and config checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lix_train.losses.arfd import (
    ARFD, ARFDConfig, arfd_loss, arfd_stage_loss, channel_recalibration, pool_grid, recalibrate, to_tokens,
    token_recalibration,
)
from lix_train.losses.cka import linear_cka


def _feats(c=6, h=8, w=10, b=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=dtype)


def _stages(cs=(4, 6, 8, 10), sizes=((16, 20), (8, 10), (4, 5), (2, 3)), seed=0, dtype=torch.float64):
    return [_feats(c, h, w, seed=seed + i, dtype=dtype) for i, (c, (h, w)) in enumerate(zip(cs, sizes))]


@pytest.mark.parametrize("h, w, cap", [(47, 155, 2000), (16, 32, 2000), (64, 128, 2000), (7, 3, 5), (100, 1, 10)])
def test_pool_grid_respects_the_token_cap(h, w, cap):
    gh, gw = pool_grid(h, w, cap)
    assert gh * gw <= cap and gh >= 1 and gw >= 1
    if h * w <= cap:
        assert (gh, gw) == (h, w)


def test_tokens_share_positions_and_pool_exactly_when_sizes_divide():
    x = _feats(c=3, h=8, w=12)
    s_tok, t_tok = to_tokens(x, x.clone(), max_tokens=24)
    assert torch.equal(s_tok, t_tok) and s_tok.shape == (2, 24, 3)
    torch.testing.assert_close(s_tok, F.avg_pool2d(x, 2).flatten(2).transpose(1, 2))
    s_tok, t_tok = to_tokens(x, x.clone(), max_tokens=20, reduce="sample", generator=torch.Generator().manual_seed(0))
    assert torch.equal(s_tok, t_tok) and s_tok.shape == (2, 20, 3)


def test_teacher_is_resized_to_the_student_size():
    s, t = _feats(c=3, h=8, w=10), _feats(c=5, h=4, w=5)
    s_tok, t_tok = to_tokens(s, t, max_tokens=1000)
    assert s_tok.shape == (2, 80, 3) and t_tok.shape == (2, 80, 5)


def test_channel_recalibration_limits():
    s = _feats(c=5).flatten(2).transpose(1, 2)
    # Self-matching with a tiny bandwidth: every channel's nearest channel is itself.
    torch.testing.assert_close(channel_recalibration(s, s, "laplace", bandwidth_scale=1e-6), s)
    # Huge bandwidth: every teacher channel receives the plain mean of the student channels.
    t = _feats(c=7, seed=4).flatten(2).transpose(1, 2)
    out = channel_recalibration(s, t, "gaussian", bandwidth_scale=1e9)
    assert out.shape == (2, 80, 7)
    torch.testing.assert_close(out, s.mean(dim=2, keepdim=True).expand(-1, -1, 7))


def test_token_recalibration_limits():
    s = _feats(c=3).flatten(2).transpose(1, 2)
    t = _feats(c=4, seed=2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(token_recalibration(s, t, "laplace", bandwidth_scale=1e-6), s)
    torch.testing.assert_close(
        token_recalibration(s, t, "laplace", bandwidth_scale=1e9), s.mean(dim=1, keepdim=True).expand_as(s)
    )


def test_identical_features_without_recalibration_give_zero_loss():
    x = _feats()
    cfg = ARFDConfig(stages=(0,), kernel="none")
    torch.testing.assert_close(arfd_stage_loss(x, x.clone(), cfg), torch.tensor(0.0, dtype=torch.float64))


def test_loss_is_invariant_to_rotating_the_teacher_channels():
    s, t = _feats(c=4), _feats(c=6, seed=1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    t_rot = torch.einsum("dc,bchw->bdhw", q, t)
    cfg = ARFDConfig(stages=(0,), kernel="none")
    torch.testing.assert_close(arfd_stage_loss(s, t, cfg), arfd_stage_loss(s, t_rot, cfg))


def test_stage_loss_is_one_minus_cka_averaged_over_images():
    s, t = _feats(c=4), _feats(c=6, seed=1)
    cfg = ARFDConfig(stages=(0,))
    s_tok, t_tok = to_tokens(s, t, cfg.max_tokens)
    expected = (1 - linear_cka(recalibrate(s_tok, t_tok, "channel", "laplace"), t_tok)).mean()
    torch.testing.assert_close(arfd_stage_loss(s, t, cfg), expected)


def test_gammas_weight_the_stages():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    one = arfd_loss(s, t, ARFDConfig(stages=(2,)))
    weighted = arfd_loss(s, t, ARFDConfig(stages=(1, 2, 3), gammas=(0.0, 2.5, 0.0)))
    torch.testing.assert_close(weighted, 2.5 * one)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"mode": "token"}, {"kernel": "gaussian"}, {"kernel": "none"}, {"feature_loss": "mse"}, {"cka_kernel": "rbf"}],
)
def test_gradcheck_arfd_loss(overrides, monkeypatch):
    # The median bandwidth is detached by design, so finite differences (which do move the
    # median) would disagree with autograd; check the gradient at a fixed bandwidth instead.
    import lix_train.losses.kernels as kernels

    monkeypatch.setattr(kernels, "median_bandwidth", lambda d: torch.full(d.shape[:-2] + (1, 1), 1.3, dtype=d.dtype))
    s = _feats(c=3, h=3, w=4, b=1).requires_grad_(True)
    t = _feats(c=3 if overrides.get("feature_loss") else 4, h=3, w=4, b=1, seed=5)
    cfg = ARFDConfig(stages=(0,), **overrides)
    assert torch.autograd.gradcheck(lambda x: arfd_loss([x], [t], cfg), (s,))


def test_teacher_gets_no_gradient_and_student_does():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    for x in s + t:
        x.requires_grad_(True)
    ARFD()(s, t).backward()
    assert all(x.grad is None for x in t)
    assert s[0].grad is None and all(x.grad.abs().sum() > 0 for x in s[1:])


def test_runs_in_float32_under_half_precision_inputs():
    s, t = _stages(dtype=torch.bfloat16), _stages(cs=(5, 7, 9, 11), seed=10, dtype=torch.bfloat16)
    loss = arfd_loss(s, t, ARFDConfig())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_errors_name_the_problem():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    with pytest.raises(ValueError, match="stage 4 requested"):
        arfd_loss(s, t, ARFDConfig(stages=(4,)))
    with pytest.raises(ValueError, match="feature_loss 'mse' needs equal widths"):
        arfd_loss(s, t, ARFDConfig(kernel="none", feature_loss="mse"))
    with pytest.raises(ValueError, match="equal B"):
        arfd_loss([s[1]], [t[1][:1]], ARFDConfig(stages=(0,)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stages": ()}, "arfd.stages"),
        ({"stages": (1, 1)}, "arfd.stages"),
        ({"gammas": (1.0,)}, "arfd.gammas"),
        ({"gammas": (1.0, -1.0, 1.0)}, "arfd.gammas"),
        ({"mode": "pixel"}, "arfd.mode"),
        ({"kernel": "cosine"}, "arfd.kernel"),
        ({"feature_loss": "l1"}, "arfd.feature_loss"),
        ({"cka_kernel": "poly"}, "arfd.cka_kernel"),
        ({"max_tokens": 1}, "arfd.max_tokens"),
        ({"token_reduce": "max"}, "arfd.token_reduce"),
        ({"bandwidth_scale": 0.0}, "arfd.bandwidth_scale"),
    ],
)
def test_config_validation_names_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ARFDConfig(**kwargs)
