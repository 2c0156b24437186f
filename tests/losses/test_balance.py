"""Schedule (start, warm-up, decay) and gradient balancing of the distillation terms (review defect 5)."""

from __future__ import annotations

import pytest
import torch

from lix_train.config import ConfigError
from lix_train.distillers import DistillConfig
from lix_train.losses.balance import balance_factor, balanced, gradient_norm
from distill_fakes import tiny_batch, tiny_distiller


@pytest.mark.parametrize("progress, expected", [(0.0, 0.0), (0.19, 0.0), (0.2, 0.0), (0.25, 0.5), (0.3, 1.0),
                                                (0.9, 1.0)])
def test_late_start_then_warm_up(progress, expected):
    assert DistillConfig(start=0.2, warmup=0.1).ramp(progress) == pytest.approx(expected)


@pytest.mark.parametrize("progress, expected", [(0.0, 0.0), (0.05, 0.475), (0.1, 0.9), (0.5, 0.5), (1.0, 0.0)])
def test_linear_decay_to_zero_at_the_end(progress, expected):
    assert DistillConfig(warmup=0.1, decay="linear").ramp(progress) == pytest.approx(expected)


def test_schedule_options_are_validated():
    for kwargs, name in (({"start": 1.0}, "distill.start"), ({"decay": "cosine"}, "distill.decay"),
                         ({"balance": "gradnorm"}, "distill.balance"), ({"balance_ratio": 0.0}, "balance_ratio")):
        with pytest.raises(ConfigError if name != "balance_ratio" else ValueError, match=name):
            DistillConfig(**kwargs)


def test_balance_factor_reference_values():
    one, two, zero = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(0.0)
    assert balance_factor(two, one, "cap").item() == 0.5
    assert balance_factor(one, two, "cap").item() == 1.0  # a cap never amplifies
    assert balance_factor(one, two, "match", 0.5).item() == 1.0
    assert balance_factor(zero, one, "match").item() == 1.0
    with pytest.raises(ValueError, match="balance mode"):
        balance_factor(one, one, "clip")


def test_matched_term_has_the_reference_gradient_norm_and_its_own_direction():
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    reference = (z ** 2).sum()
    term = 7.0 * (z * torch.randn_like(z)).sum()
    out = balanced(term, reference, [z], "match", 0.5)
    g_out, g_term = torch.autograd.grad(out, z, retain_graph=True)[0], torch.autograd.grad(term, z)[0]
    torch.testing.assert_close(g_out.norm(), 0.5 * gradient_norm(reference, [z]))
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(g_out.flatten(), g_term.flatten(), 0),
                               torch.tensor(1.0))


@pytest.mark.parametrize("method", ["kd", "lix"])
def test_distiller_balance_matches_each_term_to_the_label_loss_at_its_tensor(method):
    distiller = tiny_distiller(method, balance="match", warmup=0.0, lambda_l=5.0, lambda_f=5.0).train()
    distiller.student.drop.p = 0.0
    image, x, target = tiny_batch()
    captured = {}
    student = distiller.student
    forward = student.forward

    def spy(img):
        logits, feats = forward(img)
        captured["logits"], captured["feats"] = logits, feats
        return logits, feats

    student.forward = spy
    _, losses = distiller.forward_train(image, x, target, progress=1.0)
    ce_at_logits = gradient_norm(losses["loss_h"], [captured["logits"]])
    torch.testing.assert_close(gradient_norm(losses["loss_l"], [captured["logits"]]), ce_at_logits)
    if method == "lix":
        torch.testing.assert_close(gradient_norm(losses["loss_f"], captured["feats"]),
                                   gradient_norm(losses["loss_h"], captured["feats"]))
