"""Readouts: per-graph pooling and the output MLPs for node-, graph- and edge-level tasks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import Graph

__all__ = ["graph_pool", "MLPHead", "EdgeHead"]


def graph_pool(x: Tensor, batch: Graph, kind: str = "mean") -> Tensor:
    """Sum or mean of the node rows of each graph: x [N, C] -> [B, C] (an empty graph pools to zeros)."""
    graph_index = batch.batch_index
    total = x.new_zeros(batch.num_graphs, x.shape[1]).index_add(0, graph_index, x)
    if kind == "sum":
        return total
    if kind == "mean":
        counts = (batch.ptr.diff() if batch.ptr is not None else graph_index.new_tensor([batch.num_nodes]))
        return total / counts.clamp_min(1).to(x.dtype)[:, None]
    raise ValueError(f"pooling must be 'mean' or 'sum' here, got {kind!r}")


class L2Normalize(nn.Module):
    """Each row scaled to unit Euclidean norm (``F.normalize(x, dim=-1)``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=-1)


class MLPHead(nn.Module):
    """``layers`` Linear layers with ReLU between: C -> ... -> out_dim (widths halve if ``shrink``).

    ``l2norm``: each hidden layer's output (after its ReLU) is scaled to unit norm, as GraphGym's
    ``GeneralLayer`` does by default (``has_l2norm=True``) in the heads of GraphGPS, GRIT and Exphormer.
    """

    def __init__(self, in_dim: int, out_dim: int, layers: int = 3, shrink: bool = False,
                 l2norm: bool = False) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            nxt = max(width // 2, 1) if shrink else width
            modules += [nn.Linear(width, nxt), nn.ReLU()] + ([L2Normalize()] if l2norm else [])
            width = nxt
        modules.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class EdgeHead(nn.Module):
    """Edge-level output from ``[h_query || h_key]`` of every graph edge: [N, C] -> [E, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, layers: int = 3, shrink: bool = False,
                 l2norm: bool = False) -> None:
        super().__init__()
        self.mlp = MLPHead(2 * in_dim, out_dim, layers, shrink, l2norm)

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        pairs = x.index_select(0, graph.row_index()), x.index_select(0, graph.indices)
        return self.mlp(torch.cat(pairs, dim=-1))
