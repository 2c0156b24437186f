"""Scoring trained networks on a held-out split, and the example predictions the report draws.

Both work under torchrun: every process scores its own shard (ShardSampler) and the engine
all-reduces the confusion matrix, so each rank returns the metrics of the whole split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lix_train.engine.config import EvalConfig
from lix_train.engine.distributed import ShardSampler
from lix_train.engine.loader_scoring import score_loader
from lix_train.engine.inference import predict_logits

TEACHER_INPUTS = ("image", "x")
STUDENT_INPUTS = ("image",)


def input_keys(role: str) -> tuple[str, ...]:
    """Batch entries the teacher ("image", "x") or the student ("image") reads."""
    return TEACHER_INPUTS if role == "teacher" else STUDENT_INPUTS


def score_network(network: nn.Module, role: str, dataset, eval_cfg: EvalConfig, device: torch.device,
                  num_workers: int = 0, progress: bool = False) -> dict:
    """Metrics (mIoU, pixel accuracy, per-class IoU, confusion) of `network` on `dataset`."""
    loader = DataLoader(dataset, batch_size=eval_cfg.batch_size, sampler=ShardSampler(dataset),
                        num_workers=num_workers)
    was_training = network.training
    network.to(device).eval()
    try:
        return score_loader(network, loader, dataset.class_set.num_classes, input_keys=input_keys(role),
                        eval_cfg=eval_cfg, device=device, class_names=dataset.class_set.names, progress=progress)
    finally:
        network.train(was_training)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised [3, H, W] image tensor back to uint8 (H, W, 3) RGB for display."""
    rgb = image.detach().cpu().float().numpy().transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


@torch.no_grad()
def example_predictions(networks: dict[str, tuple[nn.Module, str]], dataset, indices: Sequence[int], eval_cfg: EvalConfig,
                        device: torch.device, mean: Sequence[float], std: Sequence[float]):
    """(rgbs, labels, {name: predictions}) on dataset[indices] for the qualitative grid.

    `networks` maps a display name to (network, role); the role ("teacher" reads X, "student"
    does not) decides its inputs. Predictions are argmax class maps at the label resolution.
    """
    rgbs, labels = [], []
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in networks}
    for index in indices:
        item = dataset[index]
        rgbs.append(denormalize(item["image"], mean, std))
        labels.append(item["label"].numpy())
        for name, (network, role) in networks.items():
            network.to(device).eval()
            inputs = [item[k][None].to(device).float() for k in input_keys(role)]
            logits = predict_logits(network, inputs, eval_cfg.mode, eval_cfg.crop_size, eval_cfg.stride,
                                    eval_cfg.size_divisor)
            if logits.shape[-2:] != item["label"].shape:
                logits = torch.nn.functional.interpolate(logits, size=item["label"].shape, mode="bilinear",
                                                         align_corners=False)
            predictions[name].append(logits.argmax(1)[0].cpu().numpy().astype(np.uint8))
    return rgbs, labels, predictions
