"""Performer (FAVOR+) linear attention per graph of a batch (Choromanski et al., 2021).

With positive random features ``phi(u) = exp(W u - |u|^2 / 2) / sqrt(m)`` (``W`` [m, D] Gaussian),
softmax attention over all nodes of node i's graph G(i) is approximated by::

    out_i = phi(q_i)^T (sum_{j in G(i)} phi(k_j) v_j^T)  /  phi(q_i)^T (sum_{j in G(i)} phi(k_j))

The two sums run **per graph** (segment sums over the batch's ``ptr``), so a graph's output never
depends on the other graphs of its batch (PyG's ``PerformerAttention`` pads and lets padding into the
normaliser). The exponent of the key features is stabilised by a per-graph maximum, which cancels
between numerator and denominator of the same graph. Cost O(N m D) per head, memory O(B H m D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import Graph

__all__ = ["PerformerAttention"]


def _graph_sum(values: Tensor, graph_index: Tensor, num_graphs: int) -> Tensor:
    """Sum of [N, *F] rows per graph -> [B, *F]."""
    out = values.new_zeros((num_graphs, *values.shape[1:]))
    return out.index_add(0, graph_index, values)


class PerformerAttention(nn.Module):
    """Multi-head FAVOR+ attention of every node over the nodes of its own graph.

    Args:
        embed_dim: C. num_heads: H (C divisible by H). num_features: m random features per head.
        seed: seed of the fixed random projection (a buffer; call `redraw` to draw a new one).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_features: int = 64, seed: int = 0) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:  # num_heads 0 was a ZeroDivisionError
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_features = num_features
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.register_buffer("projection", torch.empty(num_heads, num_features, self.head_dim))
        self.redraw(torch.Generator().manual_seed(seed))

    def reset_parameters(self) -> None:
        """Fresh projections (``nn.Linear``'s default); the random features are kept (`redraw` draws them)."""
        self.qkv.reset_parameters()
        self.out_proj.reset_parameters()

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw a new Gaussian projection [H, m, D] (kept on the module's device and dtype)."""
        fresh = torch.randn(self.projection.shape, generator=generator, dtype=torch.float64)
        self.projection.copy_(fresh.to(self.projection.dtype))

    def _features(self, u: Tensor, stabiliser: Tensor) -> Tensor:
        """u [N, H, D] (already scaled), stabiliser [N, H, 1] -> phi(u) [N, H, m]."""
        projected = torch.einsum("nhd,hmd->nhm", u, self.projection.to(u.dtype))
        sq = 0.5 * (u * u).sum(-1, keepdim=True)
        return torch.exp(projected - sq - stabiliser) / math.sqrt(self.num_features)

    def forward(self, x: Tensor, batch: Graph) -> Tensor:
        """x [N, C] -> [N, C]; ``batch.ptr`` defines the graphs (no ptr: one graph)."""
        H, D = self.num_heads, self.head_dim
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).view(-1, 3, H, D).unbind(1)
        scale = D ** -0.25  # split the usual D^-1/2 between q and k
        q, k = q * scale, k * scale
        graph_index, num_graphs = batch.batch_index, batch.num_graphs
        with torch.no_grad():
            q_proj = torch.einsum("nhd,hmd->nhm", q, self.projection.to(q.dtype))
            k_proj = torch.einsum("nhd,hmd->nhm", k, self.projection.to(k.dtype))
            q_stab = q_proj.amax(-1, keepdim=True)  # per query: cancels in its own ratio
            k_max = k_proj.amax(-1)                  # [N, H]
            graph_max = k_max.new_full((num_graphs, H), -torch.inf)
            graph_max = graph_max.scatter_reduce(0, graph_index[:, None].expand_as(k_max), k_max, "amax")
            k_stab = graph_max.index_select(0, graph_index)[..., None]  # per graph: cancels in its ratio
        q_feat = self._features(q, q_stab)
        k_feat = self._features(k, k_stab)
        kv = _graph_sum(torch.einsum("nhm,nhd->nhmd", k_feat, v), graph_index, num_graphs)  # [B, H, m, D]
        k_sum = _graph_sum(k_feat, graph_index, num_graphs)                                 # [B, H, m]
        numerator = torch.einsum("nhm,nhmd->nhd", q_feat, kv.index_select(0, graph_index))
        denominator = torch.einsum("nhm,nhm->nh", q_feat, k_sum.index_select(0, graph_index))
        out = numerator / denominator.clamp_min(torch.finfo(x.dtype).tiny)[..., None]
        return self.out_proj(out.reshape(-1, self.embed_dim))
