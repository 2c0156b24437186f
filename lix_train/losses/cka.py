"""HSIC and centred kernel alignment (CKA), batched over leading dimensions.

CKA compares two representations of the same n samples up to orthogonal rotation and
isotropic scaling, and works across different widths (C_s != C_t) - the right invariances for
matching a student's features to a differently-built teacher's. Linear CKA is computed in
feature space, O(n C^2) time and O(C^2) extra memory, never forming an n x n matrix.
"""

from __future__ import annotations

import torch


def center_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T / n, for [..., n, n] Gram matrices (without forming H)."""
    k = k - k.mean(dim=-1, keepdim=True)
    return k - k.mean(dim=-2, keepdim=True)


def hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / (n - 1)^2 for [..., n, n] Gram matrices."""
    if k.shape[-2:] != l.shape[-2:] or k.shape[-1] != k.shape[-2]:
        raise ValueError(f"hsic: expected two [..., n, n] Gram matrices, got {tuple(k.shape)} and {tuple(l.shape)}")
    n = k.shape[-1]
    return (center_gram(k) * l.transpose(-1, -2)).sum(dim=(-2, -1)) / (n - 1) ** 2


def kernel_cka(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for [..., n, n] Gram matrices; O(n^2) memory."""
    denom = (hsic(k, k) * hsic(l, l)).sqrt()
    return hsic(k, l) / denom.clamp_min(torch.finfo(k.dtype).tiny)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of x [..., n, c1] and y [..., n, c2]: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), columns centred.

    Equal to `kernel_cka(X X^T, Y Y^T)` but never forms the n x n Gram matrices.
    """
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"linear_cka: x {tuple(x.shape)} and y {tuple(y.shape)} need the same [..., n] samples")
    if x.shape[-2] < 2:
        raise ValueError(f"linear_cka: need at least 2 samples, got {x.shape[-2]}")
    x = x - x.mean(dim=-2, keepdim=True)
    y = y - y.mean(dim=-2, keepdim=True)
    xt = x.transpose(-1, -2)
    yt = y.transpose(-1, -2)
    cross = (yt @ x).pow(2).sum(dim=(-2, -1))
    norm_x = (xt @ x).pow(2).sum(dim=(-2, -1)).sqrt()
    norm_y = (yt @ y).pow(2).sum(dim=(-2, -1)).sqrt()
    return cross / (norm_x * norm_y).clamp_min(torch.finfo(x.dtype).tiny)
