"""Encoder weights from a local file (ImageNet-style .pth / .pt state dicts); nothing is downloaded.

Files with torchvision ResNet key names (conv1, bn1, layer1.0.conv1, ..., fc) or MobileNetV2 key
names (features.N..., classifier) are renamed onto our encoder keys; files saved from our own
encoders load as they are. When the model's first
convolution has a different number of input channels than the file (an X encoder for 1-channel
depth fed RGB weights), the file's kernel is averaged over its input channels and spread over
the model's, which keeps the response to a constant image the same. Shape mismatches are always
errors that list the keys; missing or unexpected keys are errors with `strict=True` and are
reported (LoadReport) otherwise.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .encoders.mobilenet import MOBILENETV2_STAGES

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt")
#: wrappers training scripts commonly put around a state dict
WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict")
#: torchvision classifier keys with no place in an encoder
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
#: older checkpoints lack BN's step counter; it carries no learned value
OPTIONAL_SUFFIX = "num_batches_tracked"


class WeightsError(ValueError):
    """A weights file that cannot be loaded into the model; the message names the file and keys."""


@dataclass
class LoadReport:
    """What a weight load did: keys loaded, missing from the file, unexpected in it, adapted, ignored."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for name in ("missing", "unexpected", "adapted", "ignored"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name} {len(keys)} ({_preview(keys)})")
        return "; ".join(parts)


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a local .pth/.pt file (wrappers and `module.` prefixes removed)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsError(f"{path}: expected a {' or '.join(SUFFIXES)} state-dict file")
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (weights are never downloaded; give a local path)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors come in many types
        raise WeightsError(f"{path}: not a readable torch state dict ({type(err).__name__}: {err})") from None
    for key in WRAPPER_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return dict(data)


_TV_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")


def is_torchvision_resnet(state: dict[str, torch.Tensor]) -> bool:
    """True for a state dict with torchvision ResNet key names."""
    return "conv1.weight" in state and any(k.startswith("layer1.0.") for k in state)


def torchvision_resnet_to_encoder(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename torchvision ResNet keys onto `ResNetEncoder` keys; returns (renamed, ignored classifier keys)."""
    renamed, ignored = {}, []
    for key, value in state.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            ignored.append(key)
            continue
        if key.startswith(("conv1.", "bn1.")):
            module, rest = key.split(".", 1)
            renamed[f"stages.0.stem.{'conv' if module == 'conv1' else 'bn'}.{rest}"] = value
            continue
        match = _TV_LAYER.match(key)
        if match is None:
            renamed[key] = value  # left as is: reported as unexpected
            continue
        layer, block, rest = match.groups()
        rest = rest.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
        renamed[f"stages.{int(layer) - 1}.blocks.{block}.{rest}"] = value
    return renamed, ignored


def _mobilenetv2_blocks() -> list[tuple[str, bool]]:
    """(our path, has an expansion conv) of each inverted residual, in order (torchvision features.1 on)."""
    blocks = []
    for stage, groups in enumerate(MOBILENETV2_STAGES):
        ratios = [t for t, _, n, _ in groups for _ in range(n)]
        blocks.extend((f"stages.{stage}.blocks.{j}", t != 1) for j, t in enumerate(ratios))
    return blocks


_TV_MBV2 = re.compile(r"^features\.(\d+)\.(.+)$")
#: inside a torchvision block: conv.<a>[.<b>] -> our block.<layer>.<conv|bn>, for expand ratio 1 and > 1
_TV_MBV2_INNER = {
    False: {"conv.0.0": "block.0.conv", "conv.0.1": "block.0.bn", "conv.1": "block.1.conv", "conv.2": "block.1.bn"},
    True: {
        "conv.0.0": "block.0.conv", "conv.0.1": "block.0.bn", "conv.1.0": "block.1.conv",
        "conv.1.1": "block.1.bn", "conv.2": "block.2.conv", "conv.3": "block.2.bn",
    },
}


def is_torchvision_mobilenetv2(state: dict[str, torch.Tensor]) -> bool:
    """True for a state dict with torchvision MobileNetV2 key names."""
    return "features.0.0.weight" in state and any(k.startswith("features.1.conv.") for k in state)


def torchvision_mobilenetv2_to_encoder(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename torchvision MobileNetV2 keys onto `MobileNetV2Encoder` keys; returns (renamed, ignored keys).

    The classifier and the final 1x1 convolution to 1280 channels (absent from our encoder) are ignored.
    """
    blocks = _mobilenetv2_blocks()
    last_conv = len(blocks) + 1
    renamed, ignored = {}, []
    for key, value in state.items():
        match = _TV_MBV2.match(key)
        if key.startswith(CLASSIFIER_PREFIXES) or (match and int(match.group(1)) == last_conv):
            ignored.append(key)
            continue
        if match is None:
            renamed[key] = value
            continue
        index, rest = int(match.group(1)), match.group(2)
        if index == 0:
            layer, param = rest.split(".", 1)
            renamed[f"stages.0.stem.{'conv' if layer == '0' else 'bn'}.{param}"] = value
            continue
        if index > len(blocks):
            renamed[key] = value
            continue
        path, expands = blocks[index - 1]
        inner = next((k for k in _TV_MBV2_INNER[expands] if rest.startswith(k + ".")), None)
        if inner is None:
            renamed[key] = value
            continue
        renamed[f"{path}.{_TV_MBV2_INNER[expands][inner]}{rest[len(inner):]}"] = value
    return renamed, ignored


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv kernel for `in_channels` inputs from one with another count.

    The file's kernel is averaged over its input channels and spread evenly over the new ones,
    so a constant image gives the same response (RGB weights summed for a 1-channel input).
    """
    file_channels = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (file_channels / in_channels)


def load_encoder_weights(
    encoder: nn.Module,
    source: str | Path | dict[str, torch.Tensor],
    strict: bool = True,
    adapt_in_channels: bool = True,
) -> LoadReport:
    """Load a local state dict (path or dict) into an encoder; returns what was loaded.

    Args:
        encoder: the encoder module (its own key names, e.g. `stages.0.stem.conv.weight`).
        source: a .pth/.pt path, or an already-read state dict.
        strict: raise WeightsError on missing or unexpected keys instead of reporting them.
        adapt_in_channels: adapt the first convolution when the input channel counts differ.
    """
    label = str(source) if not isinstance(source, dict) else "<state dict>"
    state = read_state_dict(source) if not isinstance(source, dict) else dict(source)
    report = LoadReport(path=label)
    if is_torchvision_resnet(state):
        state, report.ignored = torchvision_resnet_to_encoder(state)
    elif is_torchvision_mobilenetv2(state):
        state, report.ignored = torchvision_mobilenetv2_to_encoder(state)

    own = encoder.state_dict()
    first_conv = getattr(encoder, "first_conv_key", "")
    mismatched = []
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if key == first_conv and adapt_in_channels and value.ndim == 4 and target.ndim == 4 \
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:] \
                and value.shape[1] != target.shape[1]:
            value = adapt_input_channels(value, target.shape[1])
            report.adapted.append(f"{key} ({state[key].shape[1]} -> {target.shape[1]} input channels)")
        if value.shape != target.shape:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        own[key] = value.to(dtype=target.dtype)
        report.loaded.append(key)
    if mismatched:
        raise WeightsError(
            f"{label}: {len(mismatched)} tensor shape(s) do not match the model ({_preview(mismatched, 6)}); "
            "ImageNet weights need width=1.0 and the same encoder depth"
        )
    loaded = set(report.loaded)
    report.missing = [k for k in own if k not in loaded and not k.endswith(OPTIONAL_SUFFIX)]
    if strict and (report.missing or report.unexpected):
        problems = []
        if report.missing:
            problems.append(f"missing from the file: {_preview(report.missing)}")
        if report.unexpected:
            problems.append(f"unexpected in the file: {_preview(report.unexpected)}")
        raise WeightsError(
            f"{label}: keys do not match the encoder ({'; '.join(problems)}); pass strict=False to load the rest"
        )
    if not report.loaded:
        raise WeightsError(
            f"{label}: no tensor in the file matches the encoder (first keys: {_preview(list(state), 5)})"
        )
    encoder.load_state_dict(own)
    (log.warning if report.missing or report.unexpected else log.info)("%s", report.summary())
    return report
