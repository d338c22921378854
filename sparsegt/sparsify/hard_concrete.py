"""Hard-concrete gates: differentiable 0/1 masks trained with an expected-L0 penalty toward a sparsity target.

Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0 Regularization", ICLR 2018
(arXiv:1712.01312). A gate z in [0, 1] with a learned location ``log_alpha``; with u ~ U(0, 1),
temperature beta = 2/3 and the stretch (gamma, zeta) = (-0.1, 1.1)::

    training:  s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    eval:      s = sigmoid(log_alpha)                                   (deterministic)
    z = clamp(s * (zeta - gamma) + gamma, 0, 1)                         (exact 0 and exact 1 have mass)
    P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))          (the expected L0 norm, per gate)

The stretch-and-clamp gives exact zeros (pruned) and exact ones (kept unchanged) with nonzero probability,
so a gate that ends closed at eval time can be removed and one that ends open changes nothing.
`density_penalty` pulls the mean open probability of a group of gates toward ``1 - target_sparsity``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["HardConcreteGate", "hard_concrete", "open_probability", "density_penalty", "OPEN_LOG_ALPHA",
           "BETA", "GAMMA", "ZETA"]

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
# sigmoid(3) * 1.2 - 0.1 = 1.04 > 1: a gate initialised here is exactly 1 at eval (the wrapped model is unchanged)
OPEN_LOG_ALPHA = 3.0


def hard_concrete(log_alpha: Tensor, stochastic: bool) -> Tensor:
    """Gate values z in [0, 1], same shape as ``log_alpha``: sampled (``stochastic``) or deterministic."""
    if stochastic:
        u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    else:
        s = torch.sigmoid(log_alpha)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def open_probability(log_alpha: Tensor) -> Tensor:
    """P(z != 0) per gate (same shape): the expected L0 norm's terms, differentiable in ``log_alpha``."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def density_penalty(open_probabilities: Tensor, target_sparsity: float) -> Tensor:
    """``(mean P(z != 0) - (1 - target_sparsity))^2``: zero when the expected fraction of open gates is the
    target density. ``open_probabilities``: any shape (all gates of one group)."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target sparsity {target_sparsity!r} must be in [0, 1) (the fraction to prune)")
    return (open_probabilities.mean() - (1.0 - target_sparsity)) ** 2


class HardConcreteGate(nn.Module):
    """A tensor of hard-concrete gates with learned ``log_alpha`` (initialised open: z = 1 at eval).

    ``gate()`` samples in training mode and is deterministic in eval mode; ``open_probability()`` gives
    P(z != 0) per gate for the penalty.
    """

    def __init__(self, shape: int | tuple[int, ...], init_log_alpha: float = OPEN_LOG_ALPHA) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((shape,) if isinstance(shape, int) else tuple(shape),
                                                 float(init_log_alpha)))

    def forward(self) -> Tensor:
        return hard_concrete(self.log_alpha, self.training)

    def open_probability(self) -> Tensor:
        return open_probability(self.log_alpha)


class FixedGate(nn.Module):
    """Gate values frozen as a buffer (what a pruned model keeps of a gate that ended strictly between 0 and 1)."""

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.register_buffer("values", values.detach().clone())

    def forward(self) -> Tensor:
        return self.values
