"""Encoder weights from local files: torchvision ResNet names, wrappers, channel adaptation, clear errors."""

from __future__ import annotations

import pytest
import torch

from lix_train.models import (
    MobileNetV2Encoder, ResNetEncoder, WeightsError, build_encoder, create_model, load_encoder_weights, read_state_dict,
)
from lix_train.models.encoders import round_channels

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def _bn(prefix, channels, with_counter):
    out = {
        f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
    }
    if with_counter:
        out[f"{prefix}.num_batches_tracked"] = ()
    return out


def torchvision_resnet_shapes(depth: str, width: float = 1.0, with_counter: bool = True) -> dict[str, tuple]:
    """Key -> shape of a torchvision-layout ResNet (written out from the architecture, fc included)."""
    bottleneck = depth == "resnet50"
    expansion = 4 if bottleneck else 1
    widths = [round_channels(c * width) for c in (64, 128, 256, 512)]
    shapes = {"conv1.weight": (widths[0], 3, 7, 7), **_bn("bn1", widths[0], with_counter)}
    channels = widths[0]
    for layer, (blocks, w) in enumerate(zip(LAYERS[depth], widths), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            stride_block = b == 0 and (layer > 1 or channels != w * expansion)
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (w, channels, 1, 1)
                shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
                shapes[f"{p}.conv3.weight"] = (w * 4, w, 1, 1)
                shapes.update(_bn(f"{p}.bn1", w, with_counter) | _bn(f"{p}.bn2", w, with_counter))
                shapes.update(_bn(f"{p}.bn3", w * 4, with_counter))
            else:
                shapes[f"{p}.conv1.weight"] = (w, channels, 3, 3)
                shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
                shapes.update(_bn(f"{p}.bn1", w, with_counter) | _bn(f"{p}.bn2", w, with_counter))
            if stride_block:
                shapes[f"{p}.downsample.0.weight"] = (w * expansion, channels, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", w * expansion, with_counter))
            channels = w * expansion
    shapes["fc.weight"] = (1000, channels)
    shapes["fc.bias"] = (1000,)
    return shapes


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(7, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
        for k, s in shapes.items()
    }


def test_torchvision_resnet18_file_loads_strictly_at_full_width(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet18"))
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    encoder = ResNetEncoder("resnet18", width=1.0)
    report = load_encoder_weights(encoder, path, strict=True)
    assert report.ignored == ["fc.weight", "fc.bias"]
    assert not report.missing and not report.unexpected
    assert len(report.loaded) == len(state) - 2
    ours = encoder.state_dict()
    pairs = {
        "conv1.weight": "stages.0.stem.conv.weight",
        "bn1.running_var": "stages.0.stem.bn.running_var",
        "layer1.1.conv2.weight": "stages.0.blocks.1.conv2.weight",
        "layer2.0.downsample.0.weight": "stages.1.blocks.0.downsample.conv.weight",
        "layer3.0.downsample.1.bias": "stages.2.blocks.0.downsample.bn.bias",
        "layer4.1.bn2.running_mean": "stages.3.blocks.1.bn2.running_mean",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], state[theirs], rtol=0, atol=0)


def test_bottleneck_layout_and_old_checkpoints_without_bn_counters(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet50", width=0.25, with_counter=False))
    path = tmp_path / "r50.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP checkpoint wrapper
    encoder = ResNetEncoder("resnet50", width=0.25)
    report = load_encoder_weights(encoder, path)
    assert not report.missing and len(report.loaded) == len(state) - 2
    ours = encoder.state_dict()
    torch.testing.assert_close(ours["stages.0.blocks.0.downsample.conv.weight"], state["layer1.0.downsample.0.weight"])
    torch.testing.assert_close(ours["stages.3.blocks.2.conv3.weight"], state["layer4.2.conv3.weight"])


def test_one_channel_x_encoder_gets_rgb_kernels_summed(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet18", width=0.25))
    path = tmp_path / "w.pth"
    torch.save(state, path)
    encoder = ResNetEncoder("resnet18", in_channels=1, width=0.25)
    report = load_encoder_weights(encoder, path)
    assert report.adapted == ["stages.0.stem.conv.weight (3 -> 1 input channels)"]
    torch.testing.assert_close(encoder.stages[0].stem.conv.weight, state["conv1.weight"].sum(1, keepdim=True))
    mismatch = r"stages.0.stem.conv.weight: file \(16, 3, 7, 7\) vs model \(16, 1, 7, 7\)"
    with pytest.raises(WeightsError, match=mismatch):
        load_encoder_weights(ResNetEncoder("resnet18", in_channels=1, width=0.25), path, adapt_in_channels=False)


def test_shape_mismatch_names_keys_and_the_width(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(random_state(torchvision_resnet_shapes("resnet18", width=0.5)), path)
    with pytest.raises(WeightsError) as info:
        load_encoder_weights(ResNetEncoder("resnet18", width=0.25), path)
    message = str(info.value)
    assert str(path) in message and "stages.0.stem.conv.weight: file (32, 3, 7, 7) vs model (16, 3, 7, 7)" in message
    assert "width=1.0" in message


def test_missing_and_unexpected_keys_strict_and_lenient(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet18", width=0.25))
    del state["layer4.1.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    both = r"missing from the file: stages.3.blocks.1.conv2.weight.*unexpected in the file: layer5.0.conv1.weight"
    with pytest.raises(WeightsError, match=both):
        load_encoder_weights(ResNetEncoder("resnet18", width=0.25), path, strict=True)
    encoder = ResNetEncoder("resnet18", width=0.25)
    before = encoder.stages[3].blocks[1].conv2.weight.clone()
    report = load_encoder_weights(encoder, path, strict=False)
    assert report.missing == ["stages.3.blocks.1.conv2.weight"] and report.unexpected == ["layer5.0.conv1.weight"]
    torch.testing.assert_close(encoder.stages[3].blocks[1].conv2.weight, before)  # left as initialised
    torch.testing.assert_close(encoder.stages[3].blocks[1].conv1.weight, state["layer4.1.conv1.weight"])
    assert "missing 1" in report.summary()


#: MobileNetV2 inverted-residual settings (expand t, channels c, repeats n, stride s) as published
MBV2_SETTINGS = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def torchvision_mobilenetv2_shapes() -> dict[str, tuple]:
    """Key -> shape of a torchvision-layout MobileNetV2 at width 1.0 (last 1280 conv and classifier included)."""
    shapes = {"features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32, True)}
    index, channels = 1, 32
    for t, c, n, _ in MBV2_SETTINGS:
        for _ in range(n):
            p, hidden = f"features.{index}.conv", channels * t
            if t == 1:
                shapes[f"{p}.0.0.weight"] = (hidden, 1, 3, 3)
                shapes.update(_bn(f"{p}.0.1", hidden, True))
                shapes[f"{p}.1.weight"] = (c, hidden, 1, 1)
                shapes.update(_bn(f"{p}.2", c, True))
            else:
                shapes[f"{p}.0.0.weight"] = (hidden, channels, 1, 1)
                shapes.update(_bn(f"{p}.0.1", hidden, True))
                shapes[f"{p}.1.0.weight"] = (hidden, 1, 3, 3)
                shapes.update(_bn(f"{p}.1.1", hidden, True))
                shapes[f"{p}.2.weight"] = (c, hidden, 1, 1)
                shapes.update(_bn(f"{p}.3", c, True))
            index, channels = index + 1, c
    shapes[f"features.{index}.0.weight"] = (1280, 320, 1, 1)
    shapes.update(_bn(f"features.{index}.1", 1280, True))
    shapes["classifier.1.weight"], shapes["classifier.1.bias"] = (1000, 1280), (1000,)
    return shapes


def test_torchvision_mobilenetv2_file_loads_strictly(tmp_path):
    state = random_state(torchvision_mobilenetv2_shapes())
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    encoder = MobileNetV2Encoder(width=1.0)
    report = load_encoder_weights(encoder, path, strict=True)
    assert sorted(report.ignored) == sorted(k for k in state if k.startswith(("features.18.", "classifier.")))
    assert len(report.loaded) == len(state) - len(report.ignored)
    ours = encoder.state_dict()
    pairs = {
        "features.0.0.weight": "stages.0.stem.conv.weight",
        "features.1.conv.1.weight": "stages.0.blocks.0.block.1.conv.weight",  # t = 1: depthwise, project
        "features.2.conv.1.1.running_var": "stages.0.blocks.1.block.1.bn.running_var",
        "features.4.conv.0.0.weight": "stages.1.blocks.0.block.0.conv.weight",  # first stride-8 block
        "features.13.conv.3.bias": "stages.2.blocks.6.block.2.bn.bias",  # last stride-16 block
        "features.17.conv.2.weight": "stages.3.blocks.3.block.2.conv.weight",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], state[theirs], rtol=0, atol=0)


def test_own_format_roundtrip_and_file_errors(tmp_path):
    source = build_encoder("mobilenetv2", width=0.25)
    path = tmp_path / "mbv2.pth"
    torch.save(source.state_dict(), path)
    target = build_encoder("mobilenetv2", width=0.25)
    load_encoder_weights(target, path)
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(WeightsError, match="not found.*never downloaded"):
        read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"expected a .pth or .pt"):
        read_state_dict(tmp_path / "weights.onnx")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a readable torch state dict"):
        read_state_dict(tmp_path / "junk.pth")


def test_create_model_pretrained_initialises_every_encoder(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet18", width=0.25))
    path = tmp_path / "w.pth"
    torch.save(state, path)
    student = create_model("student", encoder="resnet18", width=0.25, num_classes=3, pretrained=path)
    teacher = create_model("teacher", encoder="resnet18", width=0.25, num_classes=3, x_channels=1, pretrained=str(path))
    torch.testing.assert_close(student.encoder.stages[2].blocks[0].conv1.weight, state["layer3.0.conv1.weight"])
    torch.testing.assert_close(teacher.rgb_encoder.stages[0].stem.conv.weight, state["conv1.weight"])
    torch.testing.assert_close(teacher.x_encoder.stages[0].stem.conv.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(teacher.x_encoder.stages[3].blocks[1].bn2.bias, state["layer4.1.bn2.bias"])
