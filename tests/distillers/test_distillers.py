"""Distillers: frozen teacher, extra parameters, warm-up, loss keys, cached teacher output, registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lix_train.config import ConfigError, from_dict
from lix_train.distillers import METHODS, DistillConfig, build_distiller
from lix_train.distillers.config import upgrade_distill_section
from lix_train.losses.arfd import ARFDConfig
from lix_train.losses.at import ATConfig
from lix_train.losses.aux_x import AuxXConfig
from lix_train.losses.cwd import CWDConfig
from lix_train.losses.dkd import DKDConfig
from lix_train.losses.kd import KDConfig
from lix_train.losses.halluc import HallucConfig
from lix_train.losses.mgd import MGDConfig
from lix_train.losses.dwld import DWLDConfig

from distill_fakes import C, TinyStudent, TinyTeacher, tiny_batch, tiny_distiller


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_logits_and_the_three_named_losses(method):
    distiller = tiny_distiller(method).train()
    image, x, y = tiny_batch()
    logits, losses = distiller.forward_train(image, x, y, progress=1.0)
    assert logits.shape == (2, C, 64, 64)
    assert set(losses) == {"loss_h", "loss_l", "loss_f"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    uses_l = method in ("kd", "dkd", "cwd", "dwld", "lix")
    uses_f = method in ("at", "arfd", "lix", "mgd", "aux_x", "halluc")
    assert (losses["loss_l"] != 0) == uses_l and (losses["loss_f"] != 0) == uses_f
    sum(losses.values()).backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_teacher_stays_eval_and_frozen_whatever_train_is_called_with():
    distiller = tiny_distiller("lix")
    distiller.train()
    assert distiller.student.training and not distiller.teacher.training
    assert not any(m.training for m in distiller.teacher.modules())
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    distiller.eval().train(True)
    assert not distiller.teacher.training
    bn = distiller.teacher.bn
    before = bn.running_mean.clone()
    distiller.forward_train(*tiny_batch(), progress=1.0)
    assert torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("method, parts", [("lix", ("dwld", "arfd")), ("dwld", ("dwld",)), ("dkd", ()),
                                           ("arfd", ("arfd",))])
def test_extra_parameters_are_visible_to_the_optimiser(method, parts):
    # The extras: the DWC (adversarial DWLD) and ARFD's 1x1 projectors.
    distiller = tiny_distiller(method, dwld=DWLDConfig(mode="adversarial"))
    extras = distiller.get_extra_parameters()
    expected = [p for part in parts for p in getattr(distiller, part).parameters()]
    assert [id(p) for p in extras] == [id(p) for p in expected] and bool(extras) == bool(parts)
    learnable = distiller.get_learnable_parameters()
    assert len(learnable) == len(list(distiller.student.parameters())) + len(extras)
    ids = {id(p) for p in learnable}
    assert all(id(p) in ids for p in expected)


def test_arfd_without_projector_has_no_extra_parameters():
    assert tiny_distiller("arfd", arfd=ARFDConfig(projector=False)).get_extra_parameters() == []


def test_fixed_and_confidence_dwld_have_no_extra_parameters():
    for mode in ("fixed", "confidence"):
        assert tiny_distiller("dwld", dwld=DWLDConfig(mode=mode)).get_extra_parameters() == []


def test_warmup_scales_the_distillation_terms_linearly():
    distiller = tiny_distiller("lix", warmup=0.2, lambda_l=2.0, lambda_f=3.0).train()
    distiller.student.drop.p = 0.0
    batch = tiny_batch()
    full = distiller.forward_train(*batch, progress=0.5)[1]
    half = distiller.forward_train(*batch, progress=0.1)[1]
    start = distiller.forward_train(*batch, progress=0.0)[1]
    torch.testing.assert_close(half["loss_l"], 0.5 * full["loss_l"])
    torch.testing.assert_close(half["loss_f"], 0.5 * full["loss_f"])
    torch.testing.assert_close(half["loss_h"], full["loss_h"])
    assert start["loss_l"] == 0 and start["loss_f"] == 0
    unscaled = tiny_distiller("lix", warmup=0.0).train()
    unscaled.student.drop.p = 0.0
    torch.testing.assert_close(full["loss_f"], 3.0 * unscaled.forward_train(*batch, progress=0.0)[1]["loss_f"])


def test_the_gradient_reaches_the_student_through_arfd():
    distiller = tiny_distiller("arfd").train()
    _, losses = distiller.forward_train(*tiny_batch(), progress=1.0)
    losses["loss_f"].backward()
    # Stages 1..3 are distilled, so every encoder conv gets a gradient from L_F alone.
    for conv in distiller.student.stages:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert distiller.student.head.weight.grad is None


def test_precomputed_teacher_output_skips_the_teacher_and_gives_the_same_losses():
    distiller = tiny_distiller("lix").train()
    distiller.student.drop.p = 0.0
    image, x, y = tiny_batch()
    with torch.no_grad():
        cached = distiller.teacher(image, x)
    calls = distiller.teacher.calls
    from_cache = distiller.forward_train(image, None, y, progress=1.0, teacher_out=cached)[1]
    assert distiller.teacher.calls == calls
    live = distiller.forward_train(image, x, y, progress=1.0)[1]
    assert distiller.teacher.calls == calls + 1
    for key in live:
        torch.testing.assert_close(from_cache[key], live[key])
    logit_only = tiny_distiller("dkd").train()
    logit_only.forward_train(image, None, y, progress=1.0, teacher_out=(cached[0], None))
    with pytest.raises(ValueError, match="no features"):
        distiller.forward_train(image, None, y, progress=1.0, teacher_out=(cached[0], None))


def test_baseline_needs_no_teacher_and_test_forward_returns_logits():
    distiller = build_distiller("baseline", TinyStudent(), None)
    image, x, y = tiny_batch()
    _, losses = distiller.train()(image, x, y)
    assert losses["loss_l"] == 0 and losses["loss_f"] == 0
    assert distiller.eval()(image).shape == (2, C, 64, 64)
    with pytest.raises(ValueError, match="needs a teacher"):
        build_distiller("kd", TinyStudent(), None)
    with pytest.raises(ValueError, match="needs the X modality"):
        tiny_distiller("kd").train().forward_train(image, None, y)


def test_registry_errors_and_config_routes():
    with pytest.raises(ValueError, match="unknown distillation method 'fitnet'; valid: baseline, kd, dkd"):
        build_distiller("fitnet", TinyStudent(), TinyTeacher())
    cfg = DistillConfig(method="dkd", dkd=DKDConfig(alpha=0.5))
    distiller = build_distiller(cfg, TinyStudent(), TinyTeacher())
    assert type(distiller).__name__ == "DKD" and distiller.cfg.dkd.alpha == 0.5
    assert type(build_distiller("kd", TinyStudent(), TinyTeacher(), cfg)).__name__ == "KD"
    student = TinyStudent()
    del student.num_classes
    adversarial = DistillConfig(dwld=DWLDConfig(mode="adversarial"))
    with pytest.raises(ValueError, match="needs num_classes"):
        build_distiller("lix", student, TinyTeacher(), adversarial)
    assert build_distiller("lix", student, TinyTeacher(), adversarial, num_classes=C).dwld.controller.in_channels == 2 * C + 6


def test_distill_config_validation_and_yaml_shape():
    cfg = from_dict(DistillConfig, {"method": "lix", "arfd": {"stages": [2, 3], "kernel": "gaussian"}, "dwld": {"layers": 5}})
    assert cfg.arfd == ARFDConfig(stages=(2, 3), kernel="gaussian") and cfg.dwld.layers == 5
    for bad, message in [
        ({"method": "fitnet"}, "method"),
        ({"warmup": 1.5}, "warmup"),
        ({"kd": {"temperature": 0.0}}, "kd.temperature"),
        ({"dwld": {"beta": -1.0}}, "dwld.beta"),
        ({"lambda_l": -1.0}, "lambda_l"),
        ({"at": {"stages": ()}}, "at.stages"),
        ({"temperature": 2.0}, "temperature is now distill.kd.temperature or distill.dkd.temperature"),
        ({"at_stages": (1,)}, "at_stages is now distill.at.stages"),
        ({"dwld": {"layers": 9}}, "dwld.layers"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(DistillConfig, bad)
    with pytest.raises(ValueError, match="progress"):
        DistillConfig().ramp(1.5)
    assert dataclasses.replace(DistillConfig(), method="kd").method == "kd"


# Every distill option, changed: (option, DistillConfig keyword, changed value).
CHANGED = [
    ("lambda_l", {"lambda_l": 2.0}), ("lambda_f", {"lambda_f": 2.0}), ("warmup", {"warmup": 0.5}),
    ("kd", {"kd": KDConfig(temperature=2.0)}), ("dkd", {"dkd": DKDConfig(alpha=2.0, beta=4.0)}),
    ("cwd", {"cwd": CWDConfig(temperature=2.0)}), ("at", {"at": ATConfig(stages=(2, 3))}),
    ("dwld", {"dwld": DWLDConfig(mode="adversarial")}), ("dwld", {"dwld": DWLDConfig(temperature=2.0, beta=4.0)}),
    ("arfd", {"arfd": ARFDConfig(kernel="none")}), ("start", {"start": 0.09}), ("decay", {"decay": "linear"}),
    ("balance", {"balance": "match"}), ("logit_stride", {"logit_stride": 4}),
    ("mgd", {"mgd": MGDConfig(mask_ratio=0.5)}), ("aux_x", {"aux_x": AuxXConfig(width=32)}),
    ("halluc", {"halluc": HallucConfig(target="fused")}),
]  # balance_ratio acts only together with balance, so it cannot be changed alone here


def _losses(method, **cfg):
    distiller = tiny_distiller(method, **cfg).train()
    torch.manual_seed(1)  # dropout
    _, losses = distiller.forward_train(*tiny_batch(), progress=0.1)
    return {k: v.item() for k, v in losses.items()}


@pytest.mark.parametrize("method", METHODS)
def test_options_read_lists_exactly_the_options_that_change_a_method(method):
    """The study reuses finished runs across changes of options a method does not read: that must be exact."""
    from lix_train.distillers import DISTILLERS

    read = DISTILLERS[method].options_read()
    assert {"method", "ignore_index"} <= set(read)
    base = _losses(method)
    for option, change in CHANGED:
        if option in read:
            assert _losses(method, **change) != base, f"{method} lists {option} but ignores it"
        else:
            assert _losses(method, **change) == base, f"{method} reads {option} but does not list it"


def test_a_stored_config_with_the_old_flat_options_reads_as_the_per_method_groups():
    """Run folders written before each method had its option group (issue 16) still compare as the same run."""
    old = {"method": "cwd", "temperature": 4.0, "alpha": 0.5, "beta": 8.0, "at_stages": [2, 3], "lambda_l": 3.0,
           "dwld": {"mode": "confidence"}}
    new = upgrade_distill_section(old)
    assert new["cwd"] == {"temperature": 4.0} and new["kd"] == {"temperature": 4.0} and new["at"] == {"stages": [2, 3]}
    assert new["dkd"] == {"temperature": 4.0, "alpha": 0.5, "beta": 8.0}
    assert new["dwld"] == {"mode": "confidence", "temperature": 4.0, "alpha": 0.5, "beta": 8.0}
    assert "temperature" not in new and new["lambda_l"] == 3.0 and old["temperature"] == 4.0  # input untouched
    cfg = from_dict(DistillConfig, new)
    assert (cfg.cwd.temperature, cfg.dkd.beta, cfg.at.stages) == (4.0, 8.0, (2, 3))
    assert upgrade_distill_section({"method": "kd", "kd": {"temperature": 2.0}}) == {"method": "kd", "kd": {"temperature": 2.0}}


def test_a_new_method_is_one_registered_class(monkeypatch):
    """Issue 16: adding a method is its file; the names, the config and build_distiller follow."""
    from lix_train.distillers import registry
    from lix_train.distillers.base import Distiller

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry as it was

    @registry.register_distiller("half_kd")
    class HalfKD(Distiller):
        uses_teacher_logits = True
        build_options = ("num_classes",)

        def __init__(self, student, teacher, cfg, num_classes=None):
            super().__init__(student, teacher, cfg)
            self.num_classes = num_classes

        def logit_loss(self, student_logits, teacher_logits, target):
            return 0.5 * (student_logits - teacher_logits).pow(2).mean()

    assert "half_kd" in METHODS and HalfKD.method_name == "half_kd"
    assert DistillConfig(method="half_kd").method == "half_kd"  # the config validates against the registry
    distiller = build_distiller("half_kd", TinyStudent(), TinyTeacher())
    assert isinstance(distiller, HalfKD) and distiller.num_classes == C  # from the student, as declared
    with pytest.raises(ValueError, match="already registered"):
        registry.register_distiller("kd")(HalfKD)


def test_a_methods_option_group_is_a_distill_section_declared_in_its_decorator(monkeypatch):
    """A method with settings of its own declares their group where it registers: DistillConfig's sections are
    the registered groups in registration order, and a group that arrives after DistillConfig was built is refused
    with the fix, never silently dropped."""
    from lix_train.distillers import registry
    from lix_train.distillers.base import Distiller

    sections = [f.name for f in dataclasses.fields(DistillConfig)][-len(registry.option_groups()):]
    assert sections == [g.section for g in registry.option_groups()] == [
        "kd", "dkd", "cwd", "at", "dwld", "arfd", "mgd", "aux_x", "halluc"]
    assert all(isinstance(getattr(DistillConfig(), g.section), g.cls) for g in registry.option_groups())
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_OPTIONS", dict(registry._OPTIONS))

    @dataclasses.dataclass
    class LateConfig:
        weight: float = 1.0

    with pytest.raises(ValueError, match="comes after DistillConfig was built; import its file"):
        registry.register_distiller("late", registry.MethodOptions("late", LateConfig, "too late"))(
            type("Late", (Distiller,), {}))
    with pytest.raises(ValueError, match="distill.kd is already the option group of another method"):
        registry.register_distiller("kd2", registry.MethodOptions("kd", LateConfig, "clash"))(
            type("KD2", (Distiller,), {}))
