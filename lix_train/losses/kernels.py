"""Pairwise kernels, the median-distance bandwidth, and Nadaraya-Watson kernel regression.

All functions are batched over leading dimensions: points are [..., m, d] and [..., k, d].
Kernel regression normalises each row of the kernel matrix; doing that as a softmax of the
log-kernel is the same number but cannot underflow to 0 / 0 when sigma is small.
"""

from __future__ import annotations

import torch

KERNELS = ("laplace", "gaussian")


def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [..., m, k] between the rows of a [..., m, d] and b [..., k, d]."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"pairwise_distance: point dimensions differ ({a.shape[-1]} vs {b.shape[-1]})")
    return torch.cdist(a, b)


def median_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """Median of each [..., m, k] distance matrix as [..., 1, 1], detached and kept above 0.

    Detached because the bandwidth is a scale choice, not something the loss should optimise
    (the student could otherwise shrink or inflate it to game the kernel).
    """
    flat = distances.detach().flatten(-2)
    sigma = flat.median(dim=-1).values
    return sigma.clamp_min(torch.finfo(distances.dtype).eps)[..., None, None]


def log_kernel(distances: torch.Tensor, kind: str, sigma: torch.Tensor | float) -> torch.Tensor:
    """log k for a distance matrix: -d / sigma (laplace) or -d^2 / (2 sigma^2) (gaussian)."""
    if kind == "laplace":
        return -distances / sigma
    if kind == "gaussian":
        return -distances.pow(2) / (2 * sigma**2)
    raise ValueError(f"kernel {kind!r} is not one of {', '.join(KERNELS)}")


def laplace_kernel(a: torch.Tensor, b: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
    """k(u, v) = exp(-||u - v|| / sigma), [..., m, k]; sigma None = median pairwise distance."""
    d = pairwise_distance(a, b)
    return log_kernel(d, "laplace", median_bandwidth(d) if sigma is None else sigma).exp()


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
    """k(u, v) = exp(-||u - v||^2 / (2 sigma^2)), [..., m, k]; sigma None = median pairwise distance."""
    d = pairwise_distance(a, b)
    return log_kernel(d, "gaussian", median_bandwidth(d) if sigma is None else sigma).exp()


def kernel_regression(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kind: str = "laplace",
    sigma: torch.Tensor | float | None = None,
    sigma_scale: float = 1.0,
    perplexity: float | None = None,
) -> torch.Tensor:
    """Nadaraya-Watson estimate at each query: sum_j k(q, key_j) value_j / sum_j k(q, key_j).

    queries [..., m, d], keys [..., k, d], values [..., k, e] -> [..., m, e]. sigma None uses
    `sigma_scale` x the median query-key distance, or, with `perplexity`, the per-query
    bandwidth of `perplexity_bandwidth`. Limits: sigma -> 0 returns the nearest key's value;
    sigma -> inf the plain mean of the values.
    """
    if keys.shape[-2] != values.shape[-2]:
        raise ValueError(f"kernel_regression: {keys.shape[-2]} keys but {values.shape[-2]} values")
    return regression_weights(queries, keys, kind, sigma, sigma_scale, perplexity) @ values


def regression_weights(
    queries: torch.Tensor,
    keys: torch.Tensor,
    kind: str = "laplace",
    sigma: torch.Tensor | float | None = None,
    sigma_scale: float = 1.0,
    perplexity: float | None = None,
) -> torch.Tensor:
    """The Nadaraya-Watson weights [..., m, k] (rows sum to 1) that `kernel_regression` applies."""
    d = pairwise_distance(queries, keys)
    if sigma is None:
        sigma = perplexity_bandwidth(d, kind, perplexity) if perplexity else sigma_scale * median_bandwidth(d)
    return torch.softmax(log_kernel(d, kind, sigma), dim=-1)


def perplexity_bandwidth(distances: torch.Tensor, kind: str, perplexity: float, steps: int = 40) -> torch.Tensor:
    """Per-row bandwidth [..., m, 1] at which each row's weights average `perplexity` keys (detached).

    The median bandwidth is a global scale: on unit-norm channel maps, whose distances all lie
    near sqrt(2), it gives every key almost the same weight, so the regression returns the plain
    mean and the information of the values is lost. Choosing sigma per query so that
    exp(entropy) of its weight row equals `perplexity` (the t-SNE calibration) keeps each
    estimate local by construction, whatever the scale of the distances. Bisection on log sigma:
    the effective count grows monotonically with sigma, from 1 (the nearest key) to k (all keys).
    """
    k = distances.shape[-1]
    if not 1.0 <= perplexity <= k:
        raise ValueError(f"perplexity={perplexity!r} must lie in [1, {k}] (the number of keys)")
    d = distances.detach()
    scale = median_bandwidth(d)
    low = torch.full(d.shape[:-1] + (1,), -12.0, dtype=d.dtype, device=d.device)
    high = torch.full_like(low, 12.0)
    target = torch.tensor(float(perplexity), dtype=d.dtype, device=d.device)
    for _ in range(steps):
        mid = (low + high) / 2
        count = effective_count(torch.softmax(log_kernel(d, kind, scale * mid.exp()), dim=-1))[..., None]
        too_wide = count > target
        high = torch.where(too_wide, mid, high)
        low = torch.where(too_wide, low, mid)
    return scale * ((low + high) / 2).exp()


def effective_count(weights: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of each weight row [..., m, k] -> [..., m]: how many keys a row really averages
    (1 = one key, k = all equally). A recalibration whose rows are all near k only returns the mean."""
    entropy = -(weights * weights.clamp_min(torch.finfo(weights.dtype).tiny).log()).sum(dim=-1)
    return entropy.exp()
