"""Graph-Aware Isomorphic Attention: GIN (and PNA) aggregation over the attention matrix read as a graph.

Buehler, "Graph-Aware Isomorphic Attention for Adaptive Dynamics in Transformers", 2025 (arXiv:2501.02393).
The softmax weights a_ij^h of head h are a weighted adjacency on the pattern; standard attention is one
weighted-sum aggregation over it. GIN-Attention replaces it by a GIN update per head on the values::

    GIN:  h_i^h = MLP((1 + eps) v_i^h + sum_j a_ij^h v_j^h)                      out_i = W_o concat_h h_i^h
    PNA:  h_i^h = MLP([(1 + eps) v_i^h, mean, std, max, min])                   (aggregators over row i)
          mean = sum_j a_ij v_j,  std = sqrt(relu(sum_j a_ij v_j^2 - mean^2) + 1e-5),
          max / min: elementwise over the keys of row i (unweighted; 0 for an empty row)

With eps = 0 and the MLP the identity, GIN gives ``W_o concat(sum_j a_ij v_j) + W_o v_i``: standard attention
plus a residual through the output projection. The weighted sums run in `sparse_attention` (O(E*H)); max and
min gather the keys' values per entry (O(E*C)), which only the PNA variant pays.

`GINAttentionAdapter` is Sparse GIN-Attention fine-tuning: a trained `SparseMultiheadAttention` is frozen and a
small GIN over its head-averaged attention graph is added to its output, ``out_i + MLP((1 + eps) x_i +
mean_h sum_j a_ij^h x_j)`` with an MLP C -> r -> C whose last layer starts at zero (the model starts unchanged);
only eps and the MLP train (2Cr + r + C + 1 parameters a layer).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import sparse_attention
from ..graph import Graph
from .attention import SparseMultiheadAttention
from .renamed import renamed_keywords
from .segment import gather_keys, gather_queries

__all__ = ["GINAttention", "GINAttentionAdapter", "AGGREGATORS"]

AGGREGATORS = ("gin", "pna")


class GINAttention(nn.Module):
    """Multi-head attention with a GIN or PNA update per head (module docstring): x [N, C] -> [N, C].

    Args:
        hidden: C. num_heads: H. aggregation: ``"gin"`` or ``"pna"``.
        mlp: the per-head MLP on the last dimension (input D for GIN, 5D for PNA; output D); default
            Linear -> ReLU -> Linear with hidden width ``mlp_hidden`` (default D).
        eps: initial eps (learned, one per head). attn_dropout: on the attention weights (``dropout=``, its
            name before, is deprecated).
    """

    @renamed_keywords(channels="hidden", dropout="attn_dropout")
    def __init__(self, hidden: int, num_heads: int, aggregation: str = "gin", mlp: nn.Module | None = None,
                 mlp_hidden: int | None = None, eps: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if aggregation not in AGGREGATORS:
            raise ValueError(f"aggregation must be one of {AGGREGATORS}, got {aggregation!r}")
        self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=attn_dropout)
        self.aggregation = aggregation
        D = self.attention.head_dim
        width = D if aggregation == "gin" else 5 * D
        mlp_width = mlp_hidden or D
        self.mlp = mlp if mlp is not None else nn.Sequential(nn.Linear(width, mlp_width), nn.ReLU(),
                                                             nn.Linear(mlp_width, D))
        self.eps = nn.Parameter(torch.full((num_heads,), float(eps)))

    def forward(self, x: Tensor, pattern: Graph) -> Tensor:
        att = self.attention
        q, k, v = att.project(x)
        dropout_p = att.attn_dropout if self.training else 0.0
        mean = sparse_attention(q, k, v, pattern, dropout_p=dropout_p, backend=att.backend)
        own = (1 + self.eps)[:, None] * v
        if self.aggregation == "gin":
            features = own + mean
        else:
            square = sparse_attention(q, k, v * v, pattern, backend=att.backend)
            std = torch.sqrt(torch.relu(square - mean * mean) + 1e-5)
            values = gather_keys(pattern, v)                                   # [E, H, D]
            row = pattern.row_index()[:, None, None].expand_as(values)
            empty = (pattern.degree() == 0)[:, None, None]
            top = v.new_zeros(v.shape).scatter_reduce(0, row, values, "amax", include_self=False)
            bottom = v.new_zeros(v.shape).scatter_reduce(0, row, values, "amin", include_self=False)
            features = torch.cat([own, mean, std, top.masked_fill(empty, 0), bottom.masked_fill(empty, 0)], -1)
        return att.out_proj(self.mlp(features).flatten(1))  # [N, H * D], also for N = 0


class GINAttentionAdapter(nn.Module):
    """Sparse GIN-Attention fine-tuning of a trained attention (module docstring); called as the attention it
    wraps (same arguments and returns), with the wrapped attention frozen.

    Args:
        attention: the trained `SparseMultiheadAttention` (its parameters get ``requires_grad=False``).
        hidden: r, the MLP's hidden width (the parameter budget: 2Cr + r + C + 1).
    """

    def __init__(self, attention: SparseMultiheadAttention, hidden: int) -> None:
        super().__init__()
        channels = attention.out_proj.out_features
        self.attention = attention.requires_grad_(False)
        self.eps = nn.Parameter(torch.zeros(()))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        weight = attention.in_proj_weight
        self.to(device=weight.device, dtype=weight.dtype)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                pattern: Graph | None = None, *, edge_attr: Tensor | None = None, edge_bias: Tensor | None = None,
                edge_gate: Tensor | None = None, keep_top: int | None = None, keep_top_rule: str = "exact",
                return_edge_products: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        att = self.attention
        if keep_top is not None:
            raise ValueError("GINAttentionAdapter does not support keep_top (top-k attention): its GIN reads the "
                             "attention graph of a fixed pattern")
        if not isinstance(pattern, Graph):
            raise ValueError(f"GINAttentionAdapter needs pattern=<Graph>, got {type(pattern).__name__}")
        q, k, v = att.project(query, key, value)
        bias, gate = att.edge_terms(pattern, edge_attr, edge_bias, edge_gate)
        dropout_p = att.attn_dropout if self.training else 0.0
        kernel = {"bias": bias, "gate": gate, "score_clamp": att.score_clamp, "backend": att.backend}
        out = sparse_attention(q, k, v, pattern, dropout_p=dropout_p, **kernel)
        out = att.out_proj(out.reshape(out.shape[0], -1))
        keys = query if key is None else key
        heads = q.shape[1]
        neighbours = sparse_attention(q, k, keys[:, None, :].expand(-1, heads, -1).contiguous(), pattern,
                                      **kernel).mean(1)                      # mean_h sum_j a_ij^h x_j  [Nq, C]
        out = out + self.mlp((1 + self.eps) * query + neighbours)
        if not return_edge_products:
            return out
        products = gather_queries(pattern, q) * gather_keys(pattern, k)
        products = (products if gate is None else products * gate) * att.head_dim ** -0.5
        return out, products
