"""Poly learning-rate decay with a linear warm-up, the usual schedule for segmentation.

The schedule is a pure function of the iteration, so a resumed run is on exactly the same
learning rate as an uninterrupted one; the LambdaLR wrapper only applies it to the optimizer.
"""

from __future__ import annotations

import torch


def poly_warmup_factor(iteration: int, total_iters: int, power: float, warmup_iters: int = 0) -> float:
    """Multiplier of the peak learning rate at `iteration` (0-based).

    (1 - iteration / total) ** power, times a linear ramp (iteration + 1) / warmup_iters
    during the first `warmup_iters` iterations; 0 from `total_iters` on.
    """
    if total_iters < 1:
        raise ValueError(f"total_iters={total_iters} must be positive")
    progress = min(max(iteration, 0), total_iters) / total_iters
    factor = (1.0 - progress) ** power
    if warmup_iters > 0 and iteration < warmup_iters:
        factor *= (iteration + 1) / warmup_iters
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, total_iters: int, power: float,
                   warmup_iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepping once per iteration with the poly + warm-up factor.

    The factor is a closure, which LambdaLR leaves out of its state_dict: on resume the
    schedule comes from the current config (e.g. a longer budget), only the position is restored.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_warmup_factor(iteration, total_iters, power, warmup_iters)
    )
