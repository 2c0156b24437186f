"""Peers a practitioner would pick instead of LIX: MGD (masked generative distillation), aux_x (no teacher) and
halluc (modality hallucination)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lix_train.config import ConfigError, from_dict
from lix_train.distillers import DISTILLERS, DistillConfig, build_distiller
from lix_train.distillers.channels import stage_channels, x_branch_channels
from lix_train.distillers.config import SCHEDULE_OPTIONS
from lix_train.engine.checkpoint import build_checkpoint
from lix_train.engine.task import extra_modules
from lix_train.losses.aux_x import AuxXConfig, AuxXLoss, aux_x_loss, known_x_mask
from lix_train.losses.halluc import HallucConfig, HallucLoss, halluc_loss, halluc_stage_loss
from lix_train.losses.mgd import MGDConfig, MGDLoss, mgd_loss, mgd_stage_loss, random_keep_mask
from lix_train.models import create_model

from distill_fakes import C, TinyStudent, TinyTeacher, tiny_batch


def _feats(channels=(4, 6, 8, 10), size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, size >> k, size >> k, generator=g) for k, c in enumerate(channels)]


def _conv_identity(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        conv.bias.zero_()
    return conv


# --- MGD -------------------------------------------------------------------------------------------

def test_mgd_with_no_mask_identity_align_and_identity_generator_is_the_mse():
    s, t = _feats(seed=0), _feats(seed=1)
    stages = (2, 3)
    loss = mgd_loss(s, t, [_conv_identity(8), _conv_identity(10)], [nn.Identity(), nn.Identity()], stages, 0.0)
    torch.testing.assert_close(loss, F.mse_loss(s[2], t[2]) + F.mse_loss(s[3], t[3]))
    # The module: equal channels need no align (as in the paper); swap the generators for identities.
    module = MGDLoss(MGDConfig(stages=stages, mask_ratio=0.0), [4, 6, 8, 10], [4, 6, 8, 10])
    assert all(isinstance(a, nn.Identity) for a in module.align)
    module.generate = nn.ModuleList([nn.Identity(), nn.Identity()])
    torch.testing.assert_close(module(s, t), loss)


def test_mgd_mask_zeroes_about_mask_ratio_of_the_positions_of_all_channels_at_once():
    torch.manual_seed(0)
    keep = random_keep_mask(torch.zeros(8, 5, 40, 40), 0.75)
    assert keep.shape == (8, 1, 40, 40)
    assert abs(1 - keep.mean().item() - 0.75) < 0.02
    assert random_keep_mask(torch.zeros(2, 3, 4, 4), 0.0).min() == 1
    # Drawn from the global RNG: the same seed, the same mask (reproducible and resumable runs).
    torch.manual_seed(3)
    a = random_keep_mask(torch.zeros(2, 3, 8, 8), 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, random_keep_mask(torch.zeros(2, 3, 8, 8), 0.5))


def test_mgd_masked_positions_reach_the_generator_as_zeros():
    seen = {}

    def generator(h):
        seen["input"] = h
        return h

    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2, :] = 1
    loss = mgd_stage_loss(s, t, generator, keep)
    assert torch.equal(seen["input"][..., 2:, :], torch.zeros(1, 3, 2, 4))
    expected = torch.cat([(s - t)[..., :2, :], -t[..., 2:, :]], dim=-2).pow(2).mean()
    torch.testing.assert_close(loss, expected)


def test_mgd_ignores_padded_cells():
    s, teacher = _feats(seed=0), _feats((5, 7, 9, 12), seed=2)
    target = torch.randint(0, C, (2, 32, 32))
    target[:, 16:, :] = 255  # padding: the bottom half of every stage
    module = MGDLoss(MGDConfig(stages=(1, 2)), [4, 6, 8, 10], [5, 7, 9, 12])

    def loss(student, teach, labels=target):
        torch.manual_seed(0)  # the same masks
        return module(student, teach, labels)

    def changed(feats, first_row):
        out = [f.clone() for f in feats]
        for f in out:
            rows = slice(f.shape[-2] // 2 + first_row, None)
            f[..., rows, :] = 100.0 * torch.randn_like(f[..., rows, :])
        return out

    base = loss(s, teacher)
    assert loss(s, changed(teacher, 0)) == base
    # The generator's two 3x3 convs see 2 cells across the border: the student's padding changes
    # nothing from there on, and inside the valid half it does.
    assert loss(changed(s, 2), teacher) == base
    assert loss(changed(s, -1), teacher) != base
    assert loss(s, changed(teacher, 0), None) != loss(s, teacher, None)  # without labels every cell counts


def test_mgd_gradients_reach_the_student_and_its_modules_never_the_teacher():
    distiller = build_distiller("mgd", TinyStudent(), TinyTeacher()).train()
    _, losses = distiller.forward_train(*tiny_batch(), progress=1.0)
    assert losses["loss_f"] > 0 and losses["loss_l"] == 0
    losses["loss_f"].backward()
    for conv in distiller.student.stages[1:]:  # stages 2 and 3 are distilled
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.get_extra_parameters())
    assert all(p.grad is None for p in distiller.teacher.parameters())
    # Channels differ (8 -> 9, 10 -> 12): 1x1 align convs; generators at the teacher's width.
    assert [a.out_channels for a in distiller.mgd.align] == [9, 12]
    assert [g[0].in_channels for g in distiller.mgd.generate] == [9, 12]


def test_mgd_config_validation():
    assert DistillConfig().mgd == MGDConfig(stages=(2, 3), mask_ratio=0.75)
    assert from_dict(DistillConfig, {"method": "mgd", "mgd": {"stages": [3], "mask_ratio": 0.5}}).mgd.stages == (3,)
    for bad, message in [({"stages": []}, "mgd.stages"), ({"stages": [2, 2]}, "mgd.stages"), ({"stages": [-1]}, "mgd.stages"),
                         ({"mask_ratio": 1.0}, "mask_ratio"), ({"mask_ratio": -0.1}, "mask_ratio")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(DistillConfig, {"mgd": bad})
    with pytest.raises(ValueError, match="stage 4 out of range"):
        build_distiller("mgd", TinyStudent(), TinyTeacher(), DistillConfig(mgd=MGDConfig(stages=(4,))))


# --- aux_x -----------------------------------------------------------------------------------------

def _normals(seed=0, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=1)


def test_aux_x_cosine_is_0_for_a_perfect_prediction_and_2_for_the_opposite():
    x = _normals()
    torch.testing.assert_close(aux_x_loss(x, x), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(aux_x_loss(3.0 * x, x), torch.tensor(0.0), atol=1e-6, rtol=0)  # direction only
    torch.testing.assert_close(aux_x_loss(-x, x), torch.tensor(2.0))
    # A prediction at a lower resolution is upsampled to X's size.
    assert aux_x_loss(x[..., ::2, ::2], x).shape == ()


def test_aux_x_ignores_unknown_x_and_ignored_labels():
    x = _normals()
    x[:, :, :4] = 0  # unknown (sky, padding)
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, :, :3] = 255
    pred = x.clone()
    pred[:, :, :4] = torch.randn(2, 3, 4, 16)  # wrong only where X is unknown
    pred[:, :, 4:, :3] = -x[:, :, 4:, :3]  # wrong only where the label is ignored
    torch.testing.assert_close(aux_x_loss(pred, x, target), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert aux_x_loss(pred, x) > 0  # without labels the ignored columns count
    assert known_x_mask(x)[:, :4].sum() == 0 and known_x_mask(x)[:, 4:].all()
    assert aux_x_loss(pred, torch.zeros_like(x)) == 0  # nothing known: exactly 0


def test_aux_x_l1_for_depth_like_x_and_auto_choice():
    x = torch.rand(2, 1, 8, 8) + 0.1
    x[..., 0, :] = 0
    pred = x + 0.25
    torch.testing.assert_close(aux_x_loss(pred, x, loss="l1"), torch.tensor(0.25))
    assert AuxXConfig().resolved_loss(3) == "cosine" and AuxXConfig().resolved_loss(1) == "l1"
    assert AuxXConfig(loss="l1").resolved_loss(3) == "l1"
    with pytest.raises(ValueError, match="cosine needs a vector X"):
        AuxXConfig(loss="cosine").resolved_loss(1)
    for bad, message in [({"loss": "l2"}, "aux_x.loss"), ({"stages": []}, "aux_x.stages"), ({"width": 0}, "aux_x.width")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(DistillConfig, {"aux_x": bad})


def test_aux_x_head_predicts_x_at_x_size_and_checks_channels():
    module = AuxXLoss(AuxXConfig(width=8), [4, 6, 8, 10], x_channels=1)
    feats = _feats()
    pred = module.head([feats[k] for k in module.stages], (64, 64))
    assert pred.shape == (2, 1, 64, 64)
    assert module.loss == "l1"
    with pytest.raises(ValueError, match="x_channels=3"):
        module(feats, torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="needs the X modality"):
        module(feats, None)


def test_aux_x_needs_no_teacher_and_trains_student_and_head_only():
    distiller = build_distiller("aux_x", TinyStudent(), None).train()
    assert not distiller.uses_teacher and distiller.aux_x.x_channels == 3
    image, x, y = tiny_batch()
    _, losses = distiller.forward_train(image, x, y, progress=1.0)
    assert set(losses) == {"loss_h", "loss_l", "loss_f"} and losses["loss_l"] == 0 and losses["loss_f"] > 0
    losses["loss_f"].backward()
    for conv in distiller.student.stages:  # stages 1..3 feed the head
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert distiller.student.head.weight.grad is None
    assert all(p.grad is not None for p in distiller.get_extra_parameters())
    with pytest.raises(ValueError, match="needs the X modality"):
        distiller.forward_train(image, None, y)
    # A teacher, when given, is never run.
    teacher = TinyTeacher()
    with_teacher = build_distiller("aux_x", TinyStudent(), teacher).train()
    with_teacher.forward_train(image, x, y)
    assert teacher.calls == 0


def test_aux_x_reads_lambda_f_and_warmup():
    assert DISTILLERS["aux_x"].options_read() == ("method", "ignore_index", "lambda_f", *SCHEDULE_OPTIONS, "aux_x")  # no logit_stride: no logit loss
    assert DISTILLERS["mgd"].options_read() == ("method", "ignore_index", "lambda_f", *SCHEDULE_OPTIONS, "mgd")
    assert DISTILLERS["halluc"].options_read() == ("method", "ignore_index", "lambda_f", *SCHEDULE_OPTIONS, "halluc")


# --- halluc ----------------------------------------------------------------------------------------

def test_halluc_plain_l2_with_identity_projectors_is_the_mse():
    s, t = _feats(seed=0), _feats(seed=1)
    loss = halluc_loss(s, t, [nn.Identity(), nn.Identity()], (2, 3), normalise=False)
    torch.testing.assert_close(loss, F.mse_loss(s[2], t[2]) + F.mse_loss(s[3], t[3]))


def test_halluc_normalised_loss_is_the_relative_squared_error_and_scale_free():
    s, t = _feats(seed=0), _feats(seed=1)
    # A zero prediction scores exactly 1 per stage, whatever the teacher's scale.
    zero = [torch.zeros_like(f) for f in s]
    for scale in (1e-3, 1.0, 1e3):
        torch.testing.assert_close(halluc_loss(zero, [scale * f for f in t], [nn.Identity()] * 2, (2, 3)),
                                   torch.tensor(2.0))
    # A perfect prediction scores 0; scaling student and teacher together leaves the value unchanged.
    torch.testing.assert_close(halluc_stage_loss(t[3], t[3]), torch.tensor(0.0))
    relative = ((s[3] - t[3]) ** 2).sum() / (t[3] ** 2).sum()
    torch.testing.assert_close(halluc_stage_loss(s[3], t[3]), relative)
    torch.testing.assert_close(halluc_stage_loss(7 * s[3], 7 * t[3]), relative)


def test_halluc_ignores_padded_cells_and_detaches_the_teacher():
    s = [f.requires_grad_() for f in _feats(seed=0)]
    t = [f.requires_grad_() for f in _feats((5, 7, 9, 12), seed=2)]
    target = torch.randint(0, C, (2, 32, 32))
    target[:, 16:, :] = 255  # padding: the bottom half of every stage
    module = HallucLoss(HallucConfig(stages=(1, 2)), [4, 6, 8, 10], [5, 7, 9, 12])
    base = module(s, t, target)
    changed = [f.detach().clone() for f in t]
    for f in changed:
        f[..., f.shape[-2] // 2:, :] = 100.0 * torch.randn_like(f[..., f.shape[-2] // 2:, :])
    assert module(s, changed, target) == base
    assert module(s, changed, None) != module(s, t, None)  # without labels every cell counts
    base.backward()
    assert all(f.grad is None for f in t) and s[1].grad.abs().sum() > 0


def test_halluc_x_branch_distils_the_teachers_x_encoder_alone():
    distiller = build_distiller("halluc", TinyStudent(), TinyTeacher()).train()
    assert distiller.cfg.halluc.target == "x_branch"
    image, x, y = tiny_batch()
    _, losses = distiller.forward_train(image, x, y, progress=1.0)
    assert distiller.teacher.calls == 0  # no full teacher forward: only its X branch
    assert losses["loss_f"] > 0 and losses["loss_l"] == 0
    # The target is the X branch: another image changes nothing on the teacher's side, another X does.
    _, feats = distiller.teacher_forward(torch.randn_like(image), x)
    torch.testing.assert_close(feats, distiller.teacher.x_features(x))
    losses["loss_f"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.get_extra_parameters())
    assert all(p.grad is None for p in distiller.teacher.parameters())
    for conv in distiller.student.stages[1:]:  # stages 2 and 3 are hallucinated
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    fused = build_distiller("halluc", TinyStudent(), TinyTeacher(), DistillConfig(halluc=HallucConfig(target="fused")))
    fused.train().forward_train(image, x, y, progress=1.0)
    assert fused.teacher.calls == 1


def test_the_project_teachers_x_features_are_its_x_branch_inside_fusion():
    for fusion in ("intermediate", "late"):
        torch.manual_seed(0)
        teacher = create_model("teacher", num_classes=C, width=0.25, decoder_channels=8, x_channels=3,
                               fusion=fusion).eval()
        image, x = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
        branch = teacher.x_features(x)
        assert [f.shape[1] for f in branch] == teacher.x_out_channels == x_branch_channels(teacher)
        # Intermediate fusion: fused stage k = RGB stage k of the previous fused feature + X-branch stage k.
        if fusion == "intermediate":
            fused, rgb = teacher.fused_features(image, x), image
            for k, stage in enumerate(teacher.rgb_encoder.stages):
                torch.testing.assert_close(fused[k], stage(rgb) + branch[k])
                rgb = fused[k]
        else:
            rgb = teacher.rgb_encoder(image)
            for k, f in enumerate(teacher.fused_features(image, x)):
                torch.testing.assert_close(f, rgb[k] + branch[k])


def test_x_branch_channels_probes_or_says_what_the_teacher_lacks():
    teacher = TinyTeacher().train()
    assert x_branch_channels(teacher) == [5, 7, 9, 12] and teacher.training
    plain = TinyTeacher()
    plain.x_features = None
    with pytest.raises(ValueError, match="no X branch"):
        build_distiller("halluc", TinyStudent(), plain)
    build_distiller("halluc", TinyStudent(), plain, DistillConfig(halluc=HallucConfig(target="fused")))


def test_halluc_config_validation():
    assert DistillConfig().halluc == HallucConfig(target="x_branch", stages=(2, 3), normalise=True)
    cfg = from_dict(DistillConfig, {"method": "halluc", "halluc": {"target": "fused", "stages": [1, 3]}})
    assert cfg.halluc.stages == (1, 3) and cfg.halluc.target == "fused"
    for bad, message in [({"stages": []}, "halluc.stages"), ({"stages": [3, 3]}, "halluc.stages"),
                         ({"target": "depth"}, "halluc.target")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(DistillConfig, {"halluc": bad})
    with pytest.raises(ValueError, match="stage 4 out of range"):
        build_distiller("halluc", TinyStudent(), TinyTeacher(), DistillConfig(halluc=HallucConfig(stages=(4,))))


# --- both: real networks, export, a training step ------------------------------------------------

def _real(x_channels=1):
    torch.manual_seed(0)
    common = {"num_classes": C, "width": 0.25, "decoder_channels": 8}
    return create_model("student", **common), create_model("teacher", x_channels=x_channels, **common)


@pytest.mark.parametrize("method", ["mgd", "aux_x", "halluc"])
def test_training_step_on_project_networks_and_a_clean_exported_student(method):
    student, teacher = _real(x_channels=1)
    distiller = build_distiller(method, student, teacher, DistillConfig(warmup=0.0))
    if method == "aux_x":
        assert distiller.aux_x.x_channels == 1 and distiller.aux_x.loss == "l1"  # from teacher.x_channels
    distiller.train()
    image, _, y = tiny_batch()
    x = torch.rand(2, 1, 64, 64)
    optimiser = torch.optim.SGD(distiller.get_learnable_parameters(), lr=0.1)
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    _, losses = distiller.forward_train(image, x, y, progress=0.5)
    assert losses["loss_f"] > 0 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimiser.step()
    after = distiller.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("teacher."))
    extra_name = method
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(extra_name + "."))
    # What the trainer saves: the student's weights, the extra module beside them (for resuming).
    extras = extra_modules(distiller, distiller.student)
    assert list(extras) == [extra_name]
    ckpt = build_checkpoint(model=distiller.student, signature={}, iteration=1, extra_modules=extras)
    assert not any(extra_name in k or "align" in k or "generate" in k or "project" in k for k in ckpt["model"])
    plain = create_model("student", num_classes=C, width=0.25, decoder_channels=8)
    plain.load_state_dict(ckpt["model"])  # strict: exactly a plain student
    plain.eval(), distiller.eval()
    torch.testing.assert_close(plain(image)[0], distiller(image))


def test_stage_channels_reads_out_channels_or_probes_without_side_effects():
    student, teacher = _real(x_channels=3)
    assert stage_channels(student) == student.out_channels and stage_channels(teacher) == teacher.out_channels
    def unlabelled(net):  # a network that does not say its stage widths: it is probed
        del net.feature_channels
        return net

    tiny = unlabelled(TinyStudent()).train()
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    rng = torch.get_rng_state()
    assert stage_channels(tiny) == [4, 6, 8, 10] and tiny.training
    assert all(torch.equal(state[k], v) for k, v in tiny.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert stage_channels(unlabelled(TinyTeacher()), x_channels=3) == [5, 7, 9, 12]
    with pytest.raises(ValueError, match="out_channels"):
        stage_channels(unlabelled(TinyTeacher()))  # no x_channels known: the probe cannot call it
