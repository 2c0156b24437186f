"""Optimizers with parameter groups: no weight decay on norm layers and biases.

Decaying a norm layer's scale or a bias towards zero only fights the normalisation; they are
the 1-D parameters (ndim <= 1), which is how they are recognised here, so the rule also holds
for parameter lists that come without module names (a Distiller's get_learnable_parameters()).
Extra trainable modules (the DWC) get their own groups, named in `group["name"]` for logging.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def param_groups(params: Iterable[nn.Parameter], weight_decay: float, name: str = "model") -> list[dict]:
    """Split trainable `params` into a decayed group (>= 2-D) and an undecayed one (norms, biases)."""
    decay, no_decay, seen = [], [], set()
    for p in params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "name": f"{name}"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    return groups


def make_optimizer(
    learnable: Iterable[nn.Parameter],
    extra: Iterable[nn.Parameter] = (),
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over the learnable parameters plus the extra ones."""
    extra = list(extra)
    extra_ids = {id(p) for p in extra}
    learnable = [p for p in learnable if id(p) not in extra_ids]  # a Distiller lists its extras in both
    groups = param_groups(learnable, weight_decay, "model") + param_groups(extra, weight_decay, "extra")
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"optimizer={name!r} is not one of 'sgd', 'adamw'")
