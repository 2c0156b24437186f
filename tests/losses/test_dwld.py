"""DWLD: fixed == DKD exactly, DWC initialisation, mean-preserving weights, gradient reversal."""

from __future__ import annotations

import pytest
import torch

from lix_train.losses.common import masked_mean
from lix_train.losses.dkd import decoupled_parts, dkd_loss, weighted_decoupled_loss
from lix_train.losses.dwld import (
    DWLDConfig, DWLDLoss, DynamicWeightController, dwc_inputs, grad_reverse, renormalise_mean, upsample_weights,
)

IGNORE = 255
ALPHA, BETA, TEMP, C = 1.0, 4.0, 2.0, 5
# The first implementation's weighting (no teacher gate, weights renormalised to mean alpha/beta):
# the mechanics below are tested on it; the gate has its own tests.
FIRST = {"gate": "none", "renormalise": True}


def _dwld_cfg(**options) -> DWLDConfig:
    """DWLD's options at this file's T and weight means."""
    return DWLDConfig(alpha=ALPHA, beta=BETA, temperature=TEMP, **options)


def _batch(seed=0, b=2, h=6, w=8):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, C, h, w, generator=g) * 2
    t = torch.randn(b, C, h, w, generator=g) * 2
    y = torch.randint(0, C, (b, h, w), generator=g)
    y[torch.rand(b, h, w, generator=g) < 0.2] = IGNORE
    return s, t, y


def _perturb(module: torch.nn.Module, seed=3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _weights(dwld: DWLDLoss, s, t, y):
    _, _, valid, conf = decoupled_parts(s, t, y, TEMP)
    return (*dwld.pixel_weights(conf, valid, torch.where(valid, y, 0)), valid)


def test_fixed_mode_equals_dkd_exactly_in_value_and_gradient():
    s, t, y = _batch()
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours = DWLDLoss(_dwld_cfg(**FIRST, mode="fixed"))(s1, t, y)
    ref = dkd_loss(s2, t, y, ALPHA, BETA, TEMP)
    assert torch.equal(ours, ref)
    ours.backward(), ref.backward()
    assert torch.equal(s1.grad, s2.grad)


@pytest.mark.parametrize("stride", [1, 4])
def test_dwc_initialisation_reproduces_alpha_beta(stride):
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial", stride=stride), num_classes=C)
    raw_tc, raw_nc = dwld.controller(torch.randn(2, dwld.controller.in_channels, 6, 8))
    torch.testing.assert_close(raw_tc, torch.full_like(raw_tc, ALPHA))
    torch.testing.assert_close(raw_nc, torch.full_like(raw_nc, BETA))
    torch.testing.assert_close(dwld(s, t, y), dkd_loss(s, t, y, ALPHA, BETA, TEMP))


@pytest.mark.parametrize("mode, stride", [("adversarial", 1), ("adversarial", 4), ("confidence", 4)])
def test_weight_means_over_valid_pixels_are_alpha_beta_and_bounded(mode, stride):
    s, t, y = _batch()
    cfg = _dwld_cfg(**FIRST, mode=mode, weight_range=3.0, stride=stride)
    dwld = DWLDLoss(cfg, num_classes=C)
    if dwld.controller is not None:
        _perturb(dwld.controller, scale=2.0)
    w_tc, w_nc, valid = _weights(dwld, s, t, y)
    torch.testing.assert_close(masked_mean(w_tc, valid), torch.tensor(ALPHA))
    torch.testing.assert_close(masked_mean(w_nc, valid), torch.tensor(BETA))
    for w in (w_tc, w_nc):
        assert w[valid].std() > 0  # really per-pixel
        assert (w[valid].max() / w[valid].min()) <= cfg.weight_range**2 + 1e-4
        assert (w > 0).all()


def test_confidence_mode_puts_tckd_weight_where_the_student_is_wrong():
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="confidence"))
    w_tc, _, valid = _weights(dwld, s, t, y)
    p_student_target = torch.softmax(s / TEMP, 1).gather(1, torch.where(valid, y, 0)[:, None])[:, 0]
    order = torch.argsort(p_student_target[valid])
    assert torch.all(torch.diff(w_tc[valid][order]) <= 1e-6)


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.randn(4, requires_grad=True)
    c = torch.randn(4)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * c).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * c)


@pytest.mark.parametrize("scale", [0.7, -1.0])  # adversarial, and cooperative (plain descent)
def test_dwc_gradient_is_the_reversed_gradient_of_the_loss(scale):
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial", reverse_scale=scale), num_classes=C)
    _perturb(dwld.controller, scale=0.5)
    params = list(dwld.controller.parameters())
    adversarial = torch.autograd.grad(dwld(s, t, y), params)

    tckd, nckd, valid, conf = decoupled_parts(s, t, y, TEMP)
    w_tc, w_nc = dwld.controller(dwc_inputs(conf, valid, with_logits=True, stride=dwld.cfg.stride))
    w_tc, w_nc = upsample_weights(w_tc, w_nc, valid.shape[-2:])
    plain_loss = weighted_decoupled_loss(
        tckd, nckd, valid, renormalise_mean(w_tc, valid, ALPHA), renormalise_mean(w_nc, valid, BETA), TEMP
    )
    plain = torch.autograd.grad(plain_loss, params)
    assert any(g.abs().max() > 0 for g in plain)
    for a, p in zip(adversarial, plain):
        torch.testing.assert_close(a, -scale * p)


def test_an_optimiser_step_on_the_dwc_raises_the_distillation_loss():
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial"), num_classes=C)
    _perturb(dwld.controller, scale=0.3)
    opt = torch.optim.SGD(dwld.controller.parameters(), lr=1e-3)
    before = dwld(s, t, y)
    opt.zero_grad()
    before.backward()
    opt.step()
    assert dwld(s, t, y) > before.detach()


def test_student_gradient_treats_weights_as_constants():
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial"), num_classes=C)
    _perturb(dwld.controller)
    s1 = s.clone().requires_grad_(True)
    dwld(s1, t, y).backward()
    w_tc, w_nc, valid = _weights(dwld, s, t, y)
    s2 = s.clone().requires_grad_(True)
    tckd, nckd, valid, _ = decoupled_parts(s2, t, y, TEMP)
    weighted_decoupled_loss(tckd, nckd, valid, w_tc.detach(), w_nc.detach(), TEMP).backward()
    torch.testing.assert_close(s1.grad, s2.grad)


@pytest.mark.parametrize("stride", [1, 4])
def test_ignored_pixels_do_not_move_the_loss(stride):
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial", stride=stride), num_classes=C)
    _perturb(dwld.controller)
    s2 = s.clone()
    t2 = t.clone()
    s2[(y == IGNORE)[:, None].expand_as(s)] = 50.0
    t2[(y == IGNORE)[:, None].expand_as(s)] = -50.0
    torch.testing.assert_close(dwld(s, t, y), dwld(s2, t2, y))


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5])
def test_controller_depths(layers):
    dwc = DynamicWeightController(10, ALPHA, BETA, layers=layers, hidden=8)
    linears = [m for m in dwc.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == layers
    w_tc, w_nc = dwc(torch.randn(1, 10, 3, 3))
    assert w_tc.shape == w_nc.shape == (1, 3, 3)


def test_confidence_only_inputs_need_no_class_count():
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial", inputs="confidence"))
    assert dwld.controller.in_channels == 6
    torch.testing.assert_close(dwld(s, t, y), dkd_loss(s, t, y, ALPHA, BETA, TEMP))


def test_class_count_errors():
    with pytest.raises(ValueError, match="needs num_classes"):
        DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial"))
    s, t, y = _batch()
    with pytest.raises(ValueError, match="check num_classes"):
        DWLDLoss(_dwld_cfg(**FIRST, mode="adversarial"), num_classes=C + 1)(s, t, y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "learned"}, "dwld.mode"),
        ({"layers": 0}, "dwld.layers"),
        ({"layers": 6}, "dwld.layers"),
        ({"hidden": 0}, "dwld.hidden"),
        ({"weight_range": 1.0}, "dwld.weight_range"),
        ({"inputs": "logits"}, "dwld.inputs"),
        ({"stride": 0}, "dwld.stride"),
        ({"gate": "label"}, "dwld.gate"),
    ],
)
def test_config_validation_names_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DWLDConfig(**kwargs)


@pytest.mark.parametrize("mode", ["fixed", "confidence", "adversarial"])
def test_correct_gate_removes_every_pixel_where_the_teacher_is_wrong(mode):
    # Defect 2 of the review: without a gate, pixels the teacher gets wrong still pull the student to it.
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(mode=mode, gate="correct"), num_classes=C)
    w_tc, w_nc, valid = _weights(dwld, s, t, y)
    teacher_right = t.argmax(1) == y
    assert (teacher_right & valid).any() and (~teacher_right & valid).any()
    for w in (w_tc, w_nc):
        assert torch.all(w[~teacher_right & valid] == 0)
        assert torch.all(w[teacher_right & valid] > 0)
    # The loss then ignores what the student does where the teacher is wrong.
    wrong = (~teacher_right & valid)[:, None].expand_as(s)
    s2 = torch.where(wrong, s + 5 * torch.randn_like(s), s)
    torch.testing.assert_close(dwld(s2, t, y), dwld(s, t, y))


def test_confidence_gate_scales_by_the_teacher_probability_of_the_label():
    s, t, y = _batch()
    plain = DWLDLoss(_dwld_cfg(mode="fixed", gate="none"))
    gated = DWLDLoss(_dwld_cfg(mode="fixed", gate="confidence"))
    w_tc, w_nc, valid = _weights(gated, s, t, y)
    p_t = torch.softmax(t / TEMP, 1).gather(1, torch.where(valid, y, 0)[:, None])[:, 0]
    torch.testing.assert_close(w_tc, ALPHA * p_t)
    torch.testing.assert_close(w_nc, BETA * p_t)
    assert gated(s, t, y) < plain(s, t, y)


@pytest.mark.parametrize("renormalise", [True, False])
def test_renormalisation_is_an_option_of_the_confidence_rule(renormalise):
    s, t, y = _batch()
    dwld = DWLDLoss(_dwld_cfg(mode="confidence", gate="correct", renormalise=renormalise))
    w_tc, w_nc, valid = _weights(dwld, s, t, y)
    mean_tc, mean_nc = masked_mean(w_tc, valid), masked_mean(w_nc, valid)
    if renormalise:
        torch.testing.assert_close(mean_tc, torch.tensor(ALPHA))
        torch.testing.assert_close(mean_nc, torch.tensor(BETA))
    else:  # the gate removes weight: the means drop below what the ungated rule would give
        ungated = DWLDLoss(_dwld_cfg(mode="confidence", gate="none", renormalise=False))
        u_tc, u_nc, _ = _weights(ungated, s, t, y)
        assert mean_tc < masked_mean(u_tc, valid) and mean_nc < masked_mean(u_nc, valid)
