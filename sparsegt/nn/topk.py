"""Top-k attention with neighbourhood aggregation (TANGNN: "Top-m Attention and Neighbourhood
Aggregation GNN", 2024).

Each node attends only to the ``k`` candidates (default: all nodes of its own graph) whose keys score
highest against its query, and separately aggregates its graph neighbours; the two are combined::

    h_T = TopkAttn(x)            keys: argtop-k_j <q_i, k_j> over the candidates (no gradient through
                                 the selection), softmax and values on `sparse_attention`
    h_N = W_N mean_{j in N(i)} x_j
    h   = Norm(x + Dropout(W_C [h_T || h_N]));   out = Norm(h + FFN(h))

Reads and returns a `LayerState`: ``x`` [N, C] -> [N, C]; the candidates are ``state.pattern``. The kept
pattern is O(N k), independent of the candidates' size after scoring (scoring the full candidate set costs
O(sum n_b^2 H D) without gradients).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..patterns import full
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .renamed import renamed_keywords
from .segment import neighbour_sum
from .state import LayerState

__all__ = ["TopKAttentionLayer"]


class TopKAttentionLayer(nn.Module):
    """TANGNN-style layer.

    Args:
        hidden: C. num_heads: H. k: keys kept per node. dropout, attn_dropout, norm: as in `GPSLayer`.
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, k: int = 16, dropout: float = 0.0,
                 attn_dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        self.k = int(k)
        self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=attn_dropout)
        self.neighbour_lin = nn.Linear(hidden, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = make_norm(norm, hidden)
        self.feed_forward = FeedForward(hidden, 2, dropout)
        self.norm_out = make_norm(norm, hidden)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C]; ``state.graph``: the batch (neighbours); ``state.pattern``: the [N, N]
        candidates (default ``full(graph)``) -> the state with new ``x``."""
        x, graph = state.x, state.graph
        candidates = full(graph) if state.pattern is None else state.pattern
        h_top = self.attention(x, pattern=candidates, keep_top=self.k)
        mean = neighbour_sum(graph, x) / graph.degree().clamp_min(1).to(x.dtype)[:, None]
        h = torch.cat([h_top, self.neighbour_lin(mean)], dim=-1)
        h = self.norm(x + self.dropout(self.combine(h)))
        return replace(state, x=self.norm_out(h + self.feed_forward(h)))
