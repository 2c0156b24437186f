"""ARFD: token matching, recalibration limits, CKA loss behaviour, gradients and config checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lix_train.losses.arfd import (
    ARFDConfig, ARFDLoss, arfd_loss, arfd_stage_loss, channel_recalibration, effective_rank, pool_grid, recalibrate,
    to_masked_tokens, to_tokens, token_recalibration,
)
from lix_train.losses.kernels import effective_count, pairwise_distance, perplexity_bandwidth, regression_weights
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
    cfg = ARFDConfig(stages=(0,), cka_scope="image", bandwidth="median")
    s_tok, t_tok = to_tokens(s, t, cfg.max_tokens)
    expected = (1 - linear_cka(recalibrate(s_tok, t_tok, "channel", "laplace"), t_tok)).mean()
    torch.testing.assert_close(arfd_stage_loss(s, t, cfg), expected)


def test_batch_scope_is_one_cka_over_every_token_of_the_batch():
    s, t = _feats(c=4), _feats(c=6, seed=1)
    cfg = ARFDConfig(stages=(0,))
    assert cfg.cka_scope == "batch" and cfg.bandwidth == "perplexity"
    s_tok, t_tok = (x.reshape(1, -1, x.shape[-1]) for x in to_tokens(s, t, cfg.max_tokens))
    expected = 1 - linear_cka(recalibrate(s_tok, t_tok, "channel", "laplace", perplexity=cfg.perplexity), t_tok)[0]
    torch.testing.assert_close(arfd_stage_loss(s, t, cfg), expected)


def _related_tokens(seed=0, n=240, cs=16, ct=32):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(1, n, cs, generator=g, dtype=torch.float64)
    t = torch.randn(1, n, ct, generator=g, dtype=torch.float64)
    t[..., :cs] += 2 * s  # half the teacher's channels carry the student's information
    return s, t


def test_median_bandwidth_recalibration_collapses_to_rank_one_and_perplexity_keeps_the_information():
    # Defect 1 of the review: at the median bandwidth every teacher channel receives nearly the
    # plain mean of the student channels, so CKA sees a rank-1 map.
    s, t = _related_tokens()
    assert effective_rank(s).item() > 14
    median = effective_rank(channel_recalibration(s, t, "laplace", bandwidth_scale=1.0)).item()
    local = effective_rank(channel_recalibration(s, t, "laplace", perplexity=2.0)).item()
    assert median < 1.2
    assert local > 0.75 * effective_rank(s).item()


def test_effective_rank_reference_values():
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(500, 4, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(raw - raw.mean(dim=0))[0]  # 4 orthonormal, centred directions of equal variance
    torch.testing.assert_close(effective_rank(basis[None]), torch.tensor([4.0], dtype=torch.float64))
    line = torch.randn(500, 1, generator=g, dtype=torch.float64) * torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(effective_rank(line), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
@pytest.mark.parametrize("perplexity", [1.5, 2.0, 5.0])
def test_perplexity_bandwidth_gives_rows_of_the_requested_effective_count(kind, perplexity):
    s, t = _related_tokens(seed=1, n=100, cs=9, ct=12)
    q, k = t.transpose(1, 2), s.transpose(1, 2)
    w = regression_weights(q, k, kind, perplexity=perplexity)
    torch.testing.assert_close(effective_count(w), torch.full((1, 12), perplexity, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    assert perplexity_bandwidth(pairwise_distance(q, k), kind, perplexity).shape == (1, 12, 1)
    with pytest.raises(ValueError, match="perplexity"):
        perplexity_bandwidth(pairwise_distance(q, k), kind, 10.0)  # more than the 9 keys


def test_padding_tokens_are_left_out():
    # Defect 3: the padding that scale < 1 augmentation adds must not be distilled.
    s, t = _feats(c=4, h=8, w=10), _feats(c=6, h=8, w=10, seed=1)
    target = torch.zeros(2, 32, 40, dtype=torch.long)
    target[:, :, 28:] = 255  # right 3/10 of the crop is padding
    cfg = ARFDConfig(stages=(0,), projector=False)
    loss = arfd_loss([s], [t], cfg, target=target)
    s2, t2 = s.clone(), t.clone()
    s2[..., 7:] = 100 * torch.randn_like(s2[..., 7:])
    t2[..., 7:] = -3.0
    torch.testing.assert_close(arfd_loss([s2], [t2], cfg, target=target), loss)
    assert not torch.allclose(arfd_loss([s2], [t2], cfg), arfd_loss([s], [t], cfg))
    _, _, keep = to_masked_tokens(s, t, 1000, valid=target[:, ::4, ::4] != 255)
    assert keep.shape == (2, 80) and keep.sum().item() == 2 * 8 * 7


def test_all_padding_gives_zero_with_a_graph():
    s = _feats(c=4).requires_grad_(True)
    loss = arfd_loss([s], [_feats(c=6, seed=1)], ARFDConfig(stages=(0,), projector=False),
                     target=torch.full((2, 8, 10), 255))
    assert loss.item() == 0.0
    loss.backward()


def test_projector_is_trained_and_stage_shapes_are_checked():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    module = ARFDLoss(ARFDConfig(), [4, 6, 8, 10], [5, 7, 9, 11]).double()
    assert sorted(module.projectors) == ["1", "2", "3"]
    for x in s:
        x.requires_grad_(True)
    module(s, t).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert s[0].grad is None and all(x.grad.abs().sum() > 0 for x in s[1:])
    with pytest.raises(ValueError, match="projector needs"):
        ARFDLoss(ARFDConfig())
    with pytest.raises(ValueError, match="stage 2 requested"):
        ARFDLoss(ARFDConfig(), [4, 6], [5, 7])


def test_gammas_weight_the_stages():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    one = arfd_loss(s, t, ARFDConfig(stages=(2,)))
    weighted = arfd_loss(s, t, ARFDConfig(stages=(1, 2, 3), gammas=(0.0, 2.5, 0.0)))
    torch.testing.assert_close(weighted, 2.5 * one)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"mode": "token"}, {"kernel": "gaussian"}, {"kernel": "none"}, {"feature_loss": "mse"}, {"cka_kernel": "rbf"},
     {"bandwidth": "median"}, {"cka_scope": "image"}],
)
def test_gradcheck_arfd_loss(overrides, monkeypatch):
    # The median bandwidth is detached by design, so finite differences (which do move the
    # median) would disagree with autograd; check the gradient at a fixed bandwidth instead.
    import lix_train.losses.kernels as kernels

    monkeypatch.setattr(kernels, "median_bandwidth", lambda d: torch.full(d.shape[:-2] + (1, 1), 1.3, dtype=d.dtype))
    monkeypatch.setattr(kernels, "perplexity_bandwidth",
                        lambda d, kind, p: torch.full(d.shape[:-1] + (1,), 0.7, dtype=d.dtype))
    s = _feats(c=3, h=3, w=4, b=1).requires_grad_(True)
    t = _feats(c=3 if overrides.get("feature_loss") else 4, h=3, w=4, b=1, seed=5)
    cfg = ARFDConfig(stages=(0,), projector=False, **overrides)
    assert torch.autograd.gradcheck(lambda x: arfd_loss([x], [t], cfg), (s,))


def test_teacher_gets_no_gradient_and_student_does():
    s, t = _stages(), _stages(cs=(5, 7, 9, 11), seed=10)
    for x in s + t:
        x.requires_grad_(True)
    ARFDLoss(ARFDConfig(projector=False))(s, t).backward()
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
        ({"bandwidth": "silverman"}, "arfd.bandwidth"),
        ({"perplexity": 0.5}, "arfd.perplexity"),
        ({"cka_scope": "pixel"}, "arfd.cka_scope"),
    ],
)
def test_config_validation_names_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ARFDConfig(**kwargs)
