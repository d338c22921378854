"""Sparse FFN activations: exact top-k and Spark's statistical top-k, as drop-in ``FeedForward.activation``.

Li et al., "The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in Transformers", ICLR 2023
(arXiv:2210.06313): in trained ReLU transformers only a few percent of the FFN's hidden units are nonzero
for a given token, and enforcing it with top-k (keep the k largest pre-activations of each row) costs little
accuracy. You et al., "Spark Transformer: Reactivating Sparsity in FFN and Attention", 2025
(arXiv:2506.06644): top-k without a sort, by *statistical top-k*. For a row ``x`` of width d, model its
entries as Gaussian and take the threshold at the upper ``k/d`` quantile::

    theta(x, k) = mean(x) + std(x) * Phi^-1(1 - k/d)          (Phi^-1: the standard normal quantile)
    hard:  x_i * 1[x_i > theta]         soft (Spark's choice):  max(x_i - theta, 0)

Two row reductions and a comparison: O(d) time, no sort, and the kept count is k in expectation when the
row is Gaussian, not exactly k (tolerance below). The soft form shifts the kept values down by theta, which
makes it continuous in x; gradients flow through theta (a function of mean and std) as through x.

Exact top-k (`topk_mask`, `TopKReLU`) keeps exactly k entries per row (``torch.topk``; which of equal values
is kept is unspecified, deterministic on a given device); the ReLU after it zeroes the kept negatives, so a
row has at most k nonzeros.

Statistical top-k tolerance (tested): on rows of d >= 256 i.i.d. Gaussian entries with ``0 < k < d``, the mean
count over rows is within 5% of k and every row's count within ``5 sqrt(k)`` of k (the count is about
binomial(d, k/d), spread sqrt(k), widened a little by estimating mean and std from the row itself). On
non-Gaussian rows the count can be far from k: Spark applies it to pre-activations, which are close to
Gaussian; for attention scores `sparsegt.patterns.threshold_topk` starts from the same estimate and corrects
it to a guaranteed range.

Use: ``FeedForward(C, activation=TopKReLU(k))``, or `sparsify_feed_forward(model, keep=...)` on a built model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import FeedForward

__all__ = ["topk_mask", "statistical_topk_threshold", "TopKReLU", "StatisticalTopKReLU", "sparsify_feed_forward",
           "TOPK_RULES"]

TOPK_RULES = ("exact", "statistical")


def _check_k(k: int, width: int | None, name: str) -> int:
    """k as an int, clamped to the row width when one is given."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{name}: k must be a non-negative integer (entries kept per row), got {k!r}")
    return k if width is None else min(k, width)


def topk_mask(x: Tensor, k: int) -> Tensor:
    """Bool [..., d]: True at the k largest entries of every row (last dimension); exactly min(k, d) per row."""
    k = _check_k(k, x.shape[-1], "topk_mask")
    mask = torch.zeros_like(x, dtype=torch.bool)
    if k:
        mask.scatter_(-1, torch.topk(x.detach(), k, dim=-1).indices, True)
    return mask


def statistical_topk_threshold(x: Tensor, k: int) -> Tensor:
    """[..., 1] Spark's threshold ``mean + std * Phi^-1(1 - k/d)`` of every row of x [..., d] (population std).

    ``k = 0`` gives ``+inf`` (keep nothing), ``k >= d`` gives ``-inf`` (keep everything)."""
    width = x.shape[-1]
    k = _check_k(k, width, "statistical_topk_threshold")
    if k == 0 or k == width:
        return x.new_full((*x.shape[:-1], 1), torch.inf if k == 0 else -torch.inf)
    mean = x.mean(-1, keepdim=True)
    std = (x - mean).square().mean(-1, keepdim=True).sqrt()
    quantile = torch.special.ndtri(torch.tensor(1.0 - k / width, dtype=torch.float64)).item()
    return mean + std * quantile


class TopKReLU(nn.Module):
    """``ReLU(x) * topk_mask(x, k)``: at most k nonzeros per row of [..., d] (Lazy Neuron's top-k FFN).

    Gradients flow to the kept positive entries; the choice of entries carries none."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = _check_k(k, None, "TopKReLU")

    def forward(self, x: Tensor) -> Tensor:
        return x.masked_fill(~topk_mask(x, self.k), 0).relu()

    def extra_repr(self) -> str:
        return f"k={self.k}"


class StatisticalTopKReLU(nn.Module):
    """Spark's statistical top-k over the last dimension: ``max(x - theta, 0)`` (``soft=True``, Spark's
    operator) or ``x * 1[x > theta]`` for positive x (``soft=False``), theta = `statistical_topk_threshold`.
    About k nonzeros per row (module docstring: tolerance)."""

    def __init__(self, k: int, soft: bool = True) -> None:
        super().__init__()
        self.k = _check_k(k, None, "StatisticalTopKReLU")
        self.soft = bool(soft)

    def forward(self, x: Tensor) -> Tensor:
        theta = statistical_topk_threshold(x, self.k)
        if self.soft:
            return (x - theta).relu()
        return x.masked_fill(x <= theta, 0).relu()

    def extra_repr(self) -> str:
        return f"k={self.k}, soft={self.soft}"


def sparsify_feed_forward(model: nn.Module, keep: int | float, rule: str = "exact", soft: bool = True) -> int:
    """Give every `FeedForward` in ``model`` a top-k activation, in place; returns how many were changed.

    Args:
        keep: hidden units kept per row: an int k, or a float in (0, 1] read as a fraction of each FFN's
            hidden width (k = round(keep * width), at least 1).
        rule: ``"exact"`` (`TopKReLU`) or ``"statistical"`` (`StatisticalTopKReLU`, with ``soft``).
    """
    if rule not in TOPK_RULES:
        raise ValueError(f"sparsify_feed_forward: rule must be one of {TOPK_RULES}, got {rule!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep <= 0 \
            or (isinstance(keep, float) and keep > 1):
        raise ValueError(f"sparsify_feed_forward: keep must be a positive int (units per row) or a float in (0, 1] "
                         f"(a fraction of the hidden width), got {keep!r}")
    changed = 0
    for module in model.modules():
        if isinstance(module, FeedForward):
            width = module.lin1.out_features
            k = keep if isinstance(keep, int) else max(1, int(keep * width + 0.5))
            module.activation = TopKReLU(k) if rule == "exact" else StatisticalTopKReLU(k, soft)
            changed += 1
    if not changed:
        raise ValueError(f"sparsify_feed_forward: {type(model).__name__} has no sparsegt.nn.FeedForward to sparsify")
    return changed
