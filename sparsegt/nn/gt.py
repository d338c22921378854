"""GT: the graph transformer of Dwivedi & Bresson ("A Generalization of Transformer Networks to
Graphs", 2020): attention restricted to graph neighbours, edge features gating the scores.

For head h and an edge (i <- j) of the graph::

    ŵ_ij = (Q h_i ⊙ K h_j / sqrt(D)) ⊙ E e_ij          [D]    (without edge features: no E e_ij)
    a_ij = softmax_{j in N(i)} clamp(sum_d ŵ_ij[d], -5, 5)
    h_i' = Norm(h_i + Dropout(O_h concat_h sum_j a_ij V h_j));  h_out = Norm(h' + FFN(h'))
    e_ij' = Norm(e_ij + Dropout(O_e concat_h ŵ_ij));            e_out = Norm(e' + FFN_e(e'))

The node update is one `SparseMultiheadAttention` call with ``gate = E e`` [E, H, D]; the edge update
needs ŵ itself, so with edge features the layer asks the attention for it (``return_edge_products``;
O(E*C), the size of the edge states it updates anyway). The paper's clamp of the scores to [-5, 5] is
applied (``score_clamp``; None turns it off): it bounds the logits, and no gradient flows through a
clamped score.
Norm is BatchNorm (the paper's best on PATTERN/CLUSTER/ZINC) or LayerNorm.
"""

from __future__ import annotations

import math
from dataclasses import replace

from torch import nn

from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .renamed import renamed_keywords
from .state import LayerState

__all__ = ["GTLayer"]


class GTLayer(nn.Module):
    """Graph transformer layer over the graph's own edges.

    Args:
        hidden: C. num_heads: H. dropout: on the residual branches. norm: ``"batch"``/``"layer"``.
        edge_features: the layer takes and updates edge states ``edge_attr`` [E, C].
        attn_dropout: dropout on the attention weights (0 in the paper).
        score_clamp: the scores are clamped to [-c, c] before the softmax (5 in the paper; None: off).
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0, norm: str = "batch",
                 edge_features: bool = False, attn_dropout: float = 0.0, score_clamp: float | None = 5.0) -> None:
        super().__init__()
        self.edge_features = edge_features
        # Q, K, V (and the edge projection E) without bias, O with one: GT's use_bias=False
        self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=attn_dropout,
                                                  edge_dim=hidden if edge_features else None,
                                                  edge_mode="gate" if edge_features else None,
                                                  score_clamp=score_clamp, qkv_bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = make_norm(norm, hidden)
        self.feed_forward = FeedForward(hidden, 2, dropout)
        self.norm_out = make_norm(norm, hidden)
        if edge_features:
            self.edge_out = nn.Linear(hidden, hidden)
            self.norm_edge_attention = make_norm(norm, hidden)
            self.edge_feed_forward = FeedForward(hidden, 2, dropout)
            self.norm_edge_out = make_norm(norm, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GT's initialisation: PyTorch's ``nn.Linear`` defaults everywhere, Q, K and V as three separate
        [C, C] Linears (not ``nn.MultiheadAttention``'s xavier on the fused matrix), O with its bias."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for weight in self.attention.in_proj_weight.data.chunk(3):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.attention.out_proj.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C] over ``state.graph``'s edges, ``state.edge_attr`` [E, C] (required iff
        ``edge_features``) -> the state with new ``x`` and ``edge_attr``."""
        x, graph, edge_attr = state.x, state.graph, state.edge_attr
        if self.edge_features != (edge_attr is not None):
            raise ValueError(f"GTLayer(edge_features={self.edge_features}) got edge_attr="
                             f"{'None' if edge_attr is None else list(edge_attr.shape)}")
        if edge_attr is None:
            h = self.attention(x, pattern=graph)
        else:
            h, weighted = self.attention(x, pattern=graph, edge_attr=edge_attr, return_edge_products=True)
            e = self.norm_edge_attention(edge_attr + self.dropout(self.edge_out(weighted.flatten(1))))
            edge_attr = self.norm_edge_out(e + self.edge_feed_forward(e))
        h = self.norm_attention(x + self.dropout(h))
        return replace(state, x=self.norm_out(h + self.feed_forward(h)), edge_attr=edge_attr)
