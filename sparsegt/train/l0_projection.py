"""Parameter sparsity by projected gradient descent onto an l0 ball (TEDDY's weight sparsification).

Seo, Yun & Yang, "TEDDY: Trimming Edges with Degree-based Discrimination strategY", ICLR 2024
(arXiv:2402.01261), section "parameter sparsification": instead of iterative magnitude pruning and
rewinding, train once and keep every weight tensor on the l0 ball of its target size. After each optimizer
step the weights are projected::

    w <- P_k(w) = argmin_{||z||_0 <= k} ||z - w||_2        k = round(keep_fraction * numel(w))

and the Euclidean projection onto ``{z : ||z||_0 <= k}`` keeps the k entries of largest magnitude and
zeroes the others (hard thresholding). Equal magnitudes are ranked by flat position (lower first), so the
projection is deterministic; it is idempotent (``P_k(P_k(w)) = P_k(w)``), and leaves exactly k nonzeros
whenever w had at least k.

Use it in any loop (the `Trainer` wiring is a separate step)::

    projection = L0BallProjection(keep_fraction=0.2)
    for batch in loader:
        loss = criterion(model(batch), batch.y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        projection.project(model)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["L0BallProjection", "weight_matrices"]


def weight_matrices(name: str, parameter: nn.Parameter) -> bool:
    """The default selection: trainable tensors with at least two dimensions (the weights of linear, attention
    and embedding layers), not biases or norm scales, which TEDDY leaves dense."""
    return parameter.requires_grad and parameter.dim() >= 2


class L0BallProjection:
    """Project the selected parameters of a model onto their l0 balls, in place (module docstring).

    Args:
        keep_fraction: in [0, 1]; every selected tensor keeps ``round(keep_fraction * numel)`` entries
            (halves round up; TEDDY's "1 - target weight sparsity").
        select: ``select(name, parameter) -> bool`` picks the tensors to sparsify (default
            `weight_matrices`).
    """

    def __init__(self, keep_fraction: float,
                 select: Callable[[str, nn.Parameter], bool] = weight_matrices) -> None:
        if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) \
                or not 0.0 <= float(keep_fraction) <= 1.0:
            raise ValueError(f"L0BallProjection: keep_fraction must be a number in [0, 1] (the fraction of each "
                             f"weight tensor kept), got {keep_fraction!r}")
        self.keep_fraction = float(keep_fraction)
        self.select = select

    def kept_count(self, numel: int) -> int:
        """k, the entries a tensor of ``numel`` entries keeps."""
        return min(numel, math.floor(self.keep_fraction * numel + 0.5 + 1e-9))

    def selected(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of every tensor the projection sparsifies."""
        return ((name, p) for name, p in model.named_parameters() if self.select(name, p))

    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        """{name: bool mask of the k kept entries} of the selected tensors, for the current weights."""
        return {name: self._mask(p.detach()) for name, p in self.selected(model)}

    @torch.no_grad()
    def project(self, model: nn.Module) -> None:
        """Zero all but the k largest-magnitude entries of every selected parameter (call after
        ``optimizer.step()``). Raises ValueError if nothing is selected (a wrong ``select``)."""
        found = False
        for _, parameter in self.selected(model):
            found = True
            if self.kept_count(parameter.numel()) < parameter.numel():
                parameter.masked_fill_(~self._mask(parameter), 0)
        if not found:
            raise ValueError("L0BallProjection.project: the model has no parameter that `select` picks (the "
                             "default picks trainable tensors with >= 2 dimensions); pass another select=")

    def _mask(self, weight: Tensor) -> Tensor:
        k = self.kept_count(weight.numel())
        magnitude = weight.reshape(-1).abs().nan_to_num(nan=math.inf)   # a NaN is never silently zeroed away
        order = torch.sort(magnitude, descending=True, stable=True).indices
        mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[order[:k]] = True
        return mask.view(weight.shape)

    @staticmethod
    def nonzero_fraction(model: nn.Module,
                         select: Callable[[str, nn.Parameter], bool] = weight_matrices) -> float:
        """Fraction of nonzero entries over the selected parameters of ``model`` (1 - weight sparsity)."""
        total = nonzero = 0
        for name, p in model.named_parameters():
            if select(name, p):
                total += p.numel()
                nonzero += int(torch.count_nonzero(p.detach()))
        return nonzero / total if total else 1.0
