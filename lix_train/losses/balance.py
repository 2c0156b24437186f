"""Gradient-norm balancing of a distillation term against the label loss, per batch.

Early in training the distillation gradients at the student's logits were 1.5-3x the CE
gradient and pointed partly against it (cosine -0.27 for NCKD at iteration 50), so the student
first learnt to imitate a teacher it could not follow. Balancing rescales a term by a detached
factor so that its gradient norm, at the tensor it acts on (logits for L_L, features for L_F),
is at most (``cap``) or exactly (``match``) `ratio` times that of L_H there. The factor is a
constant for autograd: the term's direction is untouched, only its size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BALANCE_MODES = ("cap", "match")


def gradient_norm(loss: torch.Tensor, wrt: Sequence[torch.Tensor]) -> torch.Tensor:
    """||d loss / d wrt|| over all tensors in `wrt` (unused ones count 0), detached; the graph is kept."""
    grads = torch.autograd.grad(loss, list(wrt), retain_graph=True, allow_unused=True)
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(squares).sum().sqrt() if squares else loss.new_zeros((), dtype=torch.float32)


def balance_factor(term_norm: torch.Tensor, reference_norm: torch.Tensor, mode: str, ratio: float = 1.0
                   ) -> torch.Tensor:
    """Detached scale for a term: cap -> min(1, ratio * ref / term), match -> ratio * ref / term (1 if term is 0)."""
    if mode not in BALANCE_MODES:
        raise ValueError(f"balance mode {mode!r} is not one of {', '.join(BALANCE_MODES)}")
    if not ratio > 0:
        raise ValueError(f"balance ratio must be > 0, got {ratio!r}")
    tiny = torch.finfo(torch.float32).tiny
    scale = ratio * reference_norm.detach().float() / term_norm.detach().float().clamp_min(tiny)
    scale = torch.where(term_norm > 0, scale, torch.ones_like(scale))
    return scale.clamp_max(1.0) if mode == "cap" else scale


def balanced(term: torch.Tensor, reference: torch.Tensor, wrt: Sequence[torch.Tensor], mode: str,
             ratio: float = 1.0) -> torch.Tensor:
    """`term` times its balance factor against `reference` at the tensors `wrt`."""
    factor = balance_factor(gradient_norm(term, wrt), gradient_norm(reference, wrt), mode, ratio)
    return term * factor.to(term.dtype)
