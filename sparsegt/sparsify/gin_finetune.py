"""Sparse GIN-Attention fine-tuning of a trained `GraphTransformer` (Buehler 2025, arXiv:2501.02393).

Every GT / GPS layer's trained attention is frozen and wrapped in a `sparsegt.nn.GINAttentionAdapter`: a GIN
over the layer's own (sparse) attention graph, ``MLP((1 + eps) x_i + mean_h sum_j a_ij^h x_j)`` with a hidden
width r, added to the attention's output and starting at zero. All other parameters are frozen too, so the
fine-tuned set is exactly the adapters: ``L * (2 C r + r + C + 1)`` parameters for L layers of width C.
"""

from __future__ import annotations

from torch import nn

from ..models import GraphTransformer
from ..nn import GINAttentionAdapter, GPSLayer, GTLayer, SparseMultiheadAttention

__all__ = ["add_sparse_gin_attention"]


def add_sparse_gin_attention(model: GraphTransformer, hidden: int) -> list[nn.Parameter]:
    """Freeze ``model`` and wrap each GT/GPS attention in a `GINAttentionAdapter` of hidden width ``hidden``
    (in place). Returns the parameters to train (the adapters'); the model's output is unchanged at first."""
    if not isinstance(model, GraphTransformer):
        raise ValueError(f"add_sparse_gin_attention takes a sparsegt GraphTransformer, got {type(model).__name__}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden = {hidden!r} must be a positive int (the adapter MLP's width r)")
    model.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    for index, layer in enumerate(model.layers):
        attention = getattr(layer, "attention", None)
        if not isinstance(layer, (GTLayer, GPSLayer)) or not isinstance(attention, SparseMultiheadAttention):
            raise ValueError(f"Sparse GIN-Attention wraps the softmax attention of GTLayer / GPSLayer; layer {index} "
                             f"is {type(layer).__name__} with attention {type(attention).__name__}")
        if getattr(layer, "attention_kind", "") == "topk":
            raise ValueError(f"layer {index} is GPS with topk attention, whose pattern changes every call: the "
                             "adapter needs a fixed pattern (attention 'full' or 'pattern')")
        layer.attention = GINAttentionAdapter(attention, hidden)
        trainable += [p for p in layer.attention.parameters() if p.requires_grad]
    return trainable
