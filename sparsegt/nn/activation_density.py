"""How many FFN hidden units fire: the fraction of nonzero activations of every `FeedForward` of a model.

Li et al., "The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in Transformers", ICLR 2023
(arXiv:2210.06313) measure, per layer, the fraction of nonzero entries of the FFN's activation map
``act(W1 x)`` [tokens, hidden] over a data set (a few percent in trained T5 and ViT). Here the same number is
read from forward hooks on ``FeedForward.activation`` of every FFN (node and edge FFNs alike)::

    density_l = #{(i, u) : act(W1 x_i)_u != 0} / (#rows * hidden)          over all batches

(1 - density is the activation sparsity). The model runs in eval mode without gradients; its mode and the
hooks are restored and removed afterwards, also on an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import FeedForward

__all__ = ["activation_density"]


@torch.no_grad()
def activation_density(model: nn.Module, batches: Iterable[Any],
                       forward: Callable[[nn.Module, Any], Any] | None = None) -> dict[str, float]:
    """{qualified name of each `FeedForward`: fraction of its activations that are nonzero}, in module order.

    Args:
        model: any module containing `FeedForward` blocks (a `GraphTransformer`, a layer).
        batches: what to run: inputs for ``forward`` (e.g. `Graph` batches from a loader).
        forward: ``forward(model, batch)`` (default ``model(batch)``).
    Raises ValueError if the model has no `FeedForward`, or no batch was given.
    """
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, FeedForward)]
    if not blocks:
        raise ValueError(f"activation_density: {type(model).__name__} has no sparsegt.nn.FeedForward to measure")
    nonzero = {name: 0 for name, _ in blocks}
    total = {name: 0 for name, _ in blocks}

    def counter(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            nonzero[name] += int(torch.count_nonzero(output))
            total[name] += output.numel()
        return hook

    was_training = model.training
    handles = [block.activation.register_forward_hook(counter(name)) for name, block in blocks]
    try:
        model.eval()
        ran = False
        for batch in batches:
            model(batch) if forward is None else forward(model, batch)
            ran = True
        if not ran:
            raise ValueError("activation_density: no batches to run")
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: nonzero[name] / total[name] if total[name] else 0.0 for name, _ in blocks}
