"""GRIT: graph inductive-bias transformer (Ma et al., "Graph Inductive Biases in Transformers without
Message Passing", ICML 2023).

Every pair (i, j) of a pattern (GRIT: all pairs of each graph, ``patterns.full``) carries a learned
representation ``e_ij`` [C], initialised from RRWP (``[I, M, M^2, ..., M^(K-1)]_ij``, ``M = D^-1 A``)
and updated in every layer. Attention reads and writes it. For head h (width D)::

    ê_ij  = ReLU( ρ((W_Q x_i + W_K x_j) ⊙ W_Ew e_ij) + W_Eb e_ij )       ρ(u) = sign(u) sqrt|u|
    a_ij  = softmax_j clamp(w_A · ê_ij, -5, 5)
    x̂_i   = sum_j a_ij (W_V x_j + W_Ev ê_ij)
    x̂_i   <- θ_1 ⊙ x̂_i + log(1 + d_i) θ_2 ⊙ x̂_i                  (degree scaler, d_i: graph degree)
    x_out = Norm(x' + FFN(x')),  x' = Norm(x + Dropout(O_h x̂))
    e_out = Norm(e + Dropout(O_e ê))

The values depend on the edge (``W_Ev ê_ij``), which the `sparse_attention` contract (values per key)
does not cover, so the softmax and the sums run on the shared CSR segment primitives; GRIT keeps
O(E*C) pair states by design, so nothing here is larger than its inputs.
Shapes: ``x`` [N, C]; ``pattern`` [N, N] with E entries; ``pair`` [E, C]; ``log_degree`` [N].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import Graph
from .blocks import FeedForward, make_norm
from .segment import gather_keys, gather_queries, segment_softmax, segment_sum

__all__ = ["GRITAttention", "GRITLayer"]


def signed_sqrt(u: Tensor) -> Tensor:
    """sign(u) sqrt(|u|) with a finite gradient at 0."""
    return torch.sqrt(torch.relu(u) + 1e-8) - torch.sqrt(torch.relu(-u) + 1e-8)


class GRITAttention(nn.Module):
    """GRIT's attention over a pattern with pair representations. Returns ``(x̂ [N, C], ê [E, C])``."""

    def __init__(self, channels: int, num_heads: int, attn_dropout: float = 0.0,
                 clamp: float | None = 5.0) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a multiple of num_heads ({num_heads})")
        self.channels, self.num_heads, self.head_dim = channels, num_heads, channels // num_heads
        self.clamp = clamp
        self.qkv = nn.Linear(channels, 3 * channels)
        self.edge_lin = nn.Linear(channels, 2 * channels)  # W_Ew and W_Eb
        self.score = nn.Parameter(torch.empty(num_heads, self.head_dim))                       # w_A
        self.edge_value = nn.Parameter(torch.empty(num_heads, self.head_dim, self.head_dim))  # W_Ev
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.edge_lin.reset_parameters()
        nn.init.xavier_normal_(self.score)
        nn.init.xavier_normal_(self.edge_value)

    def forward(self, x: Tensor, pattern: Graph, pair: Tensor) -> tuple[Tensor, Tensor]:
        H, D = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(-1, 3, H, D).unbind(1)
        e_weight, e_bias = self.edge_lin(pair).view(-1, 2, H, D).unbind(1)
        pair_hat = (gather_queries(pattern, q) + gather_keys(pattern, k)) * e_weight
        pair_hat = torch.relu(signed_sqrt(pair_hat) + e_bias)                       # [E, H, D]
        score = torch.einsum("ehd,hd->eh", pair_hat, self.score)
        if self.clamp is not None:
            score = score.clamp(-self.clamp, self.clamp)
        weight = self.attn_dropout(segment_softmax(pattern, score))                 # [E, H]
        message = gather_keys(pattern, v) + torch.einsum("ehd,hdc->ehc", pair_hat, self.edge_value)
        out = segment_sum(pattern, weight[..., None] * message)                    # [N, H, D]
        return out.reshape(-1, self.channels), pair_hat.reshape(-1, self.channels)


class GRITLayer(nn.Module):
    """One GRIT transformer layer (attention, degree scaler, node FFN; pair states updated).

    Args:
        channels: C. num_heads: H. dropout: residual-branch dropout. attn_dropout: on the weights.
        norm: ``"batch"`` (GRIT default) or ``"layer"``. degree_scaler: apply the log-degree scaler.
        clamp: score clamp (GRIT: 5), None for none.
    """

    def __init__(self, channels: int, num_heads: int, dropout: float = 0.0, attn_dropout: float = 0.0,
                 norm: str = "batch", degree_scaler: bool = True, clamp: float | None = 5.0) -> None:
        super().__init__()
        self.attention = GRITAttention(channels, num_heads, attn_dropout, clamp)
        self.degree_scaler = nn.Parameter(torch.empty(2, channels)) if degree_scaler else None
        self.node_out = nn.Linear(channels, channels)
        self.pair_out = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)
        self.norm_node = make_norm(norm, channels)
        self.norm_pair = make_norm(norm, channels)
        self.feed_forward = FeedForward(channels, 2, dropout)
        self.norm_out = make_norm(norm, channels)
        if self.degree_scaler is not None:
            nn.init.xavier_normal_(self.degree_scaler)

    def forward(self, x: Tensor, pattern: Graph, pair: Tensor, log_degree: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """x [N, C], pattern [N, N] (E entries), pair [E, C], log_degree [N] = log(1 + graph degree)."""
        if pair.shape[0] != pattern.num_edges:
            raise ValueError(f"pair has {pair.shape[0]} rows but the pattern has {pattern.num_edges} entries")
        h, pair_hat = self.attention(x, pattern, pair)
        if self.degree_scaler is not None:
            if log_degree is None:
                raise ValueError("GRITLayer(degree_scaler=True) needs log_degree [N] = log(1 + degree)")
            h = h * self.degree_scaler[0] + h * log_degree.to(h.dtype)[:, None] * self.degree_scaler[1]
        h = self.norm_node(x + self.dropout(self.node_out(h)))
        pair = self.norm_pair(pair + self.dropout(self.pair_out(pair_hat)))
        return self.norm_out(h + self.feed_forward(h)), pair
