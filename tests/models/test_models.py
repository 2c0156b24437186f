"""Model architecture: encoder strides and widths, fusion semantics, student/teacher pairing, errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from lix_train.config import ConfigError, from_dict
from lix_train.models import (
    STRIDES, DuplexTeacher, ExportWrapper, ModelConfig, RGBStudent, build_encoder, count_parameters, create_model,
    list_encoders, list_models, model_options, pad_to_multiple, padded_size,
)
from lix_train.models.encoders import round_channels
from lix_train.models.encoders.timm_encoder import TIMM_MISSING

TINY = dict(width=0.25, decoder_channels=32, num_classes=5)
H, W = 64, 96


def _image(batch=2, channels=3, height=H, width=W, seed=0):
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


# ----- encoders -----------------------------------------------------------------------------------

def test_round_channels_reference_values():
    assert round_channels(64 * 0.25) == 16
    assert round_channels(16 * 0.25) == 8  # never below the divisor
    assert round_channels(11.2) == 16  # 8 would be more than 10 % under
    assert round_channels(100) == 104
    with pytest.raises(ValueError, match="positive"):
        round_channels(0)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenetv2"])
@pytest.mark.parametrize("width,in_channels", [(0.25, 3), (0.5, 1)])
def test_encoder_features_have_strides_and_channels(name, width, in_channels):
    encoder = build_encoder(name, in_channels=in_channels, width=width).eval()
    with torch.no_grad():
        features = encoder(_image(channels=in_channels))
    assert encoder.strides == STRIDES == (4, 8, 16, 32)
    assert len(features) == len(encoder.out_channels) == 4
    for feat, channels, stride in zip(features, encoder.out_channels, encoder.strides):
        assert feat.shape == (2, channels, H // stride, W // stride)
        assert channels % 8 == 0


@pytest.mark.parametrize("name,expected", [
    ("resnet18", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048]), ("mobilenetv2", [24, 32, 96, 320]),
])
def test_full_width_channels_match_the_reference_networks(name, expected):
    assert build_encoder(name, width=1.0).out_channels == expected


def test_width_scales_channels():
    assert build_encoder("resnet18", width=0.25).out_channels == [16, 32, 64, 128]
    assert build_encoder("resnet18", width=0.5).out_channels == [32, 64, 128, 256]


def test_stage_by_stage_equals_forward():
    encoder = build_encoder("mobilenetv2", width=0.25).eval()
    image = _image()
    with torch.no_grad():
        whole = encoder(image)
        x, parts = image, []
        for index in range(len(encoder.stages)):
            x = encoder.forward_stage(index, x)
            parts.append(x)
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_encoder_argument_errors():
    with pytest.raises(ValueError, match="unknown encoder 'resnet19'.*resnet18.*mobilenetv2"):
        build_encoder("resnet19")
    with pytest.raises(ValueError, match="width"):
        build_encoder("resnet18", width=0)
    with pytest.raises(ValueError, match="in_channels"):
        build_encoder("resnet18", in_channels=0)
    assert list_encoders() == ["resnet18", "resnet34", "resnet50", "mobilenetv2"]


def test_timm_encoder_without_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, installed or not
    with pytest.raises(ImportError) as info:
        build_encoder("timm:resnet18")
    assert str(info.value) == "timm is not installed: pip install 'lix-seg[timm]'" == TIMM_MISSING


class _FakeFeatureInfo:
    def __init__(self, reductions, channels):
        self._r, self._c = reductions, channels

    def reduction(self):
        return list(self._r)

    def channels(self):
        return list(self._c)


class _FakeTimmBackbone(nn.Module):
    """Stands in for a timm features_only model: strided convs with features at strides 2..32."""

    REDUCTIONS, CHANNELS = (2, 4, 8, 16, 32), (8, 16, 24, 32, 40)

    def __init__(self, in_chans, out_indices=None):
        super().__init__()
        self.out_indices = tuple(out_indices if out_indices is not None else range(5))
        convs, prev = [], in_chans
        for c in self.CHANNELS:
            convs.append(nn.Conv2d(prev, c, 3, 2, 1))
            prev = c
        self.convs = nn.ModuleList(convs)
        self.feature_info = _FakeFeatureInfo(
            [self.REDUCTIONS[i] for i in self.out_indices], [self.CHANNELS[i] for i in self.out_indices]
        )

    def forward(self, x):
        out = []
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i in self.out_indices:
                out.append(x)
        return out


def _fake_timm():
    calls = []

    def create_model(name, pretrained=False, features_only=False, in_chans=3, out_indices=None):
        calls.append(dict(name=name, pretrained=pretrained, features_only=features_only, out_indices=out_indices))
        return _FakeTimmBackbone(in_chans, out_indices)

    return types.SimpleNamespace(create_model=create_model), calls


def test_timm_encoder_picks_the_stride_4_to_32_features(monkeypatch):
    fake, calls = _fake_timm()
    monkeypatch.setitem(sys.modules, "timm", fake)
    encoder = build_encoder("timm:fakenet", in_channels=1)
    assert encoder.out_channels == [16, 24, 32, 40]
    assert calls[-1]["out_indices"] == (1, 2, 3, 4) and calls[-1]["features_only"] and not calls[-1]["pretrained"]
    features = encoder(_image(channels=1))
    assert [f.shape[-1] for f in features] == [W // s for s in STRIDES]
    with pytest.raises(ValueError, match="fusion='late'"):
        DuplexTeacher("timm:fakenet", num_classes=3, fusion="intermediate")
    logits, _ = DuplexTeacher("timm:fakenet", num_classes=3, fusion="late", decoder_channels=16)(_image(), _image())
    assert logits.shape == (2, 3, H, W)


# ----- student and teacher ------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ["resnet18", "mobilenetv2"])
def test_student_returns_logits_at_input_size_and_stage_features(encoder):
    student = create_model("student", encoder=encoder, **TINY).eval()
    with torch.no_grad():
        logits, features = student(_image())
    assert logits.shape == (2, 5, H, W)
    assert [f.shape[1] for f in features] == student.out_channels
    assert [H // f.shape[2] for f in features] == list(student.strides) == [4, 8, 16, 32]


@pytest.mark.parametrize("fusion,mode", [("intermediate", "sum"), ("late", "sum"), ("late", "concat")])
def test_teacher_fusions_run_and_train_both_branches(fusion, mode):
    torch.manual_seed(0)
    teacher = create_model("teacher", encoder="resnet18", x_channels=1, fusion=fusion, late_fusion_mode=mode, **TINY)
    logits, features = teacher(_image(), _image(channels=1, seed=1))
    assert logits.shape == (2, 5, H, W)
    assert [f.shape[1] for f in features] == teacher.out_channels
    assert [H // f.shape[2] for f in features] == [4, 8, 16, 32]
    (logits.square().mean() + sum(f.mean() for f in features)).backward()
    for branch in (teacher.rgb_encoder, teacher.x_encoder):
        first = branch.stages[0].stem.conv.weight.grad
        # residual blocks start as the identity (last BN scale 0), so the gradient shows on that scale
        last = branch.stages[3].blocks[-1].bn2.weight.grad
        assert first is not None and first.abs().sum() > 0
        assert last is not None and last.abs().sum() > 0
    assert all(p.grad is not None for p in teacher.parameters())


def test_student_is_the_teachers_rgb_branch():
    teacher = create_model("teacher", encoder="resnet34", x_channels=3, **TINY)
    student = create_model("student", encoder="resnet34", **TINY)
    assert student.out_channels == teacher.out_channels and student.strides == teacher.strides
    branch = teacher.rgb_branch_state_dict()
    assert {k: v.shape for k, v in branch.items()} == {k: v.shape for k, v in student.state_dict().items()}
    student.load_state_dict(branch, strict=True)
    # the teacher is the student plus an X encoder (and nothing else, for summing fusion)
    assert count_parameters(teacher) == count_parameters(student) + count_parameters(teacher.x_encoder)


@pytest.mark.parametrize("fusion", ["intermediate", "late"])
def test_teacher_with_zero_x_equals_its_rgb_branch(fusion):
    """With X = 0 a freshly initialised X encoder outputs exactly 0, so summing fusion is the identity."""
    torch.manual_seed(0)
    teacher = create_model("teacher", encoder="resnet18", x_channels=3, fusion=fusion, **TINY).eval()
    student = create_model("student", encoder="resnet18", **TINY).eval()
    student.load_state_dict(teacher.rgb_branch_state_dict())
    image = _image()
    with torch.no_grad():
        t_logits, t_features = teacher(image, torch.zeros_like(image))
        s_logits, s_features = student(image)
        x_logits, _ = teacher(image, _image(seed=5))
    torch.testing.assert_close(t_logits, s_logits, rtol=0, atol=0)
    for a, b in zip(t_features, s_features):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (x_logits - s_logits).abs().max() > 1e-3, "a non-zero X must change the teacher's output"


def test_channels_last_matches_contiguous():
    student = create_model("student", encoder="mobilenetv2", **TINY).eval()
    image = _image()
    with torch.no_grad():
        reference, _ = student(image)
        student = student.to(memory_format=torch.channels_last)
        logits, features = student(image.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)
    assert len(features) == 4


# ----- input checks -------------------------------------------------------------------------------

def test_input_not_divisible_by_32_names_the_padded_size():
    student = create_model("student", encoder="resnet18", **TINY)
    with pytest.raises(ValueError, match=r"divisible by 32.*50x100.*pad it to 64x128"):
        student(torch.zeros(1, 3, 50, 100))
    assert padded_size(50, 100) == (64, 128) and padded_size(64, 96) == (64, 96)
    padded = pad_to_multiple(torch.ones(1, 3, 50, 100))
    assert padded.shape == (1, 3, 64, 128) and padded[..., 50:, :].abs().sum() == 0
    assert student.eval()(padded)[0].shape == (1, 5, 64, 128)


def test_input_shape_errors_name_the_tensor():
    student = create_model("student", encoder="resnet18", **TINY)
    with pytest.raises(ValueError, match="image must have 3 channels"):
        student(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"image must be a 4-D tensor"):
        student(torch.zeros(3, 64, 64))
    teacher = create_model("teacher", encoder="resnet18", x_channels=1, **TINY)
    with pytest.raises(ValueError, match="x must have 1 channels"):
        teacher(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="share batch size and spatial size"):
        teacher(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 96))


# ----- registry and config ------------------------------------------------------------------------

def test_create_model_names_and_errors():
    names = list_models()
    assert {"student", "teacher", "student_resnet18", "teacher_mobilenetv2"} <= set(names)
    with pytest.raises(ValueError, match="unknown model 'studnet'.*student.*teacher"):
        create_model("studnet")
    with pytest.raises(TypeError, match="unknown option 'x_channels'.*valid options: encoder"):
        create_model("student", x_channels=1)
    with pytest.raises(TypeError, match="unknown option 'encoder'"):
        create_model("student_resnet18", encoder="resnet50")
    with pytest.raises(ValueError, match="fusion='mid'"):
        create_model("teacher", fusion="mid", **TINY)
    model = create_model("student_mobilenetv2", **TINY)
    assert isinstance(model, RGBStudent) and model.encoder_name == "mobilenetv2"
    assert "pretrained" in model_options("teacher_resnet50") and "encoder" not in model_options("teacher_resnet50")


def test_model_config_validates_and_builds_a_matched_pair():
    cfg = ModelConfig(encoder="mobilenetv2", width=0.25, num_classes=5, x_channels=1, decoder_channels=32)
    student = create_model("student", **cfg.kwargs_for("student"))
    teacher = create_model("teacher", **cfg.kwargs_for("teacher"))
    assert "x_channels" not in cfg.kwargs_for("student")
    assert isinstance(teacher, DuplexTeacher) and teacher.x_channels == 1
    assert student.out_channels == teacher.out_channels
    for bad, name in [
        (dict(encoder="vgg16"), "model.encoder"), (dict(width=0.0), "model.width"),
        (dict(num_classes=0), "model.num_classes"), (dict(x_channels=0), "model.x_channels"),
        (dict(encoder="timm:convnext_tiny"), "model.fusion"),
        (dict(pretrained="/nonexistent/w.pth"), "model.pretrained"),
    ]:
        with pytest.raises(ConfigError, match=name):
            ModelConfig(**bad)
    with pytest.raises(ConfigError, match="unknown option 'widht'"):
        from_dict(ModelConfig, {"widht": 0.5})
    assert from_dict(ModelConfig, {"fusion": "late", "width": "0.5"}).width == 0.5


def test_export_wrapper_outputs():
    student = create_model("student", encoder="resnet18", **TINY)
    wrapper = ExportWrapper(student, output="both", label_dtype="uint8")
    assert not student.training, "the wrapper exports inference behaviour"
    with torch.no_grad():
        logits, labels = wrapper(_image())
    assert labels.dtype == torch.uint8 and labels.shape == (2, H, W)
    assert torch.equal(labels.long(), logits.argmax(1))
    with pytest.raises(ValueError, match="output='probs'"):
        ExportWrapper(student, output="probs")


def test_real_timm_backbones_when_timm_is_installed():
    """The `timm:` path against the real library (skipped where timm is absent, as on CPU CI)."""
    pytest.importorskip("timm", reason="timm is an optional extra: pip install 'lix-seg[timm]'")
    torch.manual_seed(0)
    student = create_model("student", encoder="timm:resnet18", num_classes=5, decoder_channels=32)
    teacher = create_model("teacher", encoder="timm:resnet18", x_channels=1, fusion="late", num_classes=5,
                           decoder_channels=32)
    logits, features = student(_image())
    assert logits.shape == (2, 5, H, W)
    assert [H // f.shape[2] for f in features] == [4, 8, 16, 32]
    t_logits, t_features = teacher(_image(), _image(channels=1, seed=1))
    assert t_logits.shape == (2, 5, H, W)
    assert [f.shape[1] for f in t_features] == teacher.out_channels
    with pytest.raises(ValueError, match="late"):
        create_model("teacher", encoder="timm:resnet18", x_channels=1, fusion="intermediate", num_classes=5)
