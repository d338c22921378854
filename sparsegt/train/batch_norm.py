"""Recalibrate BatchNorm statistics before an evaluation ("precise BN").

In eval mode a BatchNorm layer normalises with its running statistics: an exponential moving average
(momentum 0.1, so mostly the last ~10-20 training batches) of batch statistics that were computed with
*the weights of those steps* and with every train-only randomness switched on. At moments of training the
average describes the current weights badly and the validation metric drops 10-15 points while the same
weights score well with fresh statistics (issue #21). `recalibrate_batch_norm` replaces the running
statistics by the plain average over a fixed set of training batches, computed with the current weights
and everything else in eval mode: no dropout, no random LapPE sign flips — exactly the network that is
then evaluated.

It draws no random numbers (eval-mode modules; the batches are a pure function of their seed), so a run
that recalibrates before every evaluation trains bit-for-bit like one that does not: only the statistics
used in eval mode differ.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..graph import Graph

__all__ = ["recalibrate_batch_norm", "batch_norms", "batch_norm_statistics"]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def batch_norm_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics of ``model``'s BatchNorm layers, keyed as in its ``state_dict`` (to
    load back with ``load_state_dict(..., strict=False)``)."""
    norms = {id(m) for m in batch_norms(model)}
    return {f"{name}.{buffer}": getattr(module, buffer).detach().clone()
            for name, module in model.named_modules() if id(module) in norms
            for buffer in ("running_mean", "running_var", "num_batches_tracked")}


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[Graph], device: torch.device | None = None) -> int:
    """Set every BatchNorm's running mean and variance to their average over ``batches``.

    The model runs in eval mode except its BatchNorm layers, which normalise with batch statistics (as in
    training) and accumulate them with equal weight per batch (``momentum=None``). Afterwards the model is
    back in the mode it was in, with its momentum values. Returns the number of batches used (0: nothing
    changed, also when the model has no BatchNorm).
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    try:
        for batch in batches:
            model(batch if device is None else batch.to(device))
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        if used == 0:  # nothing seen: keep the old statistics rather than the reset ones
            for m, (mean, var, count) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
    return used
