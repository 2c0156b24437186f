"""Stage channel counts of a network, for methods that build trainable parts (MGD's align, the aux-X head)."""

from __future__ import annotations

import torch
import torch.nn as nn

PROBE_SIZE = 64  # a multiple of every encoder's stride 32
DEFAULT_X_CHANNELS = 3  # surface normals, data.modality's default


def stage_channels(network: nn.Module, x_channels: int | None = None) -> list[int]:
    """Channels of each feature stage `network` returns.

    The project's models say it (`out_channels` / `feature_channels`). Any other network that returns (logits, features)
    is probed once with a zero input in eval mode without gradients (no BatchNorm statistic or RNG
    moves); `x_channels` given (or the network's `x_channels`) makes the probe an (image, x) call.
    """
    for name in ("out_channels", "feature_channels"):  # teachers say out_channels, students feature_channels
        channels = getattr(network, name, None)
        if channels is not None and not callable(channels):
            return [int(c) for c in channels]
    x_channels = getattr(network, "x_channels", None) or x_channels
    try:
        param = next(network.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    image = torch.zeros(1, getattr(network, "in_channels", 3), PROBE_SIZE, PROBE_SIZE, device=device, dtype=dtype)
    inputs = (image,) if x_channels is None else (image, torch.zeros(1, x_channels, PROBE_SIZE, PROBE_SIZE,
                                                                     device=device, dtype=dtype))
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            _, feats = network(*inputs)
    except Exception as err:  # noqa: BLE001 - any failure means: say what the network must provide
        raise ValueError(f"cannot tell the stage channels of {type(network).__name__}: give it an `out_channels` "
                         f"attribute ({type(err).__name__}: {err})") from None
    finally:
        network.train(was_training)
    return [int(f.shape[1]) for f in feats]


def x_branch_channels(teacher: nn.Module, x_channels: int | None = None) -> list[int]:
    """Channels of each stage of the teacher's X branch (`x_features`), for methods that distil it.

    The project's teacher says it (`x_out_channels`); any other teacher with an `x_features(x)` method is
    probed once with a zero X in eval mode without gradients. A teacher without an X branch is a ValueError.
    """
    channels = getattr(teacher, "x_out_channels", None)
    if channels is not None and not callable(channels):
        return [int(c) for c in channels]
    if not callable(getattr(teacher, "x_features", None)):
        raise ValueError(f"{type(teacher).__name__} has no X branch to distil: it needs an x_features(x) method "
                         "(the project's DuplexTeacher has one); or distil its fused features instead")
    x_channels = getattr(teacher, "x_channels", None) or x_channels or DEFAULT_X_CHANNELS
    try:
        device = next(teacher.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            feats = teacher.x_features(torch.zeros(1, x_channels, PROBE_SIZE, PROBE_SIZE, device=device))
    finally:
        teacher.train(was_training)
    return [int(f.shape[1]) for f in feats]
