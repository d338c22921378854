"""`MPNNLayer`: one plain message-passing layer (GINE, GatedGCN or GCN) with residual, norm, ReLU and
dropout, the Benchmarking-GNNs recipe; the baselines of the published tables are stacks of these.

    GINE / GCN:  h = x + Dropout(ReLU(Norm(Conv(x, e))))
    GatedGCN:    its own residual / BatchNorm / ReLU / dropout, updating edge states (`GatedGCNConv`)

Shapes: ``x`` [N, C], ``edge_attr`` [E, C] or None -> ``(x [N, C], edge_attr)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import Graph
from .blocks import make_norm
from .gatedgcn import GatedGCNConv
from .gcn import GCNConv
from .gine import GINEConv

__all__ = ["MPNNLayer", "MPNN_KINDS"]

MPNN_KINDS = ("gine", "gatedgcn", "gcn")


class MPNNLayer(nn.Module):
    """Residual MPNN layer. Args: kind (``MPNN_KINDS``), channels C, dropout, norm."""

    def __init__(self, kind: str, channels: int, dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        if kind not in MPNN_KINDS:
            raise ValueError(f"kind must be one of {MPNN_KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "gatedgcn":
            self.conv: nn.Module = GatedGCNConv(channels, dropout=dropout, batch_norm=norm == "batch")
        else:
            self.conv = GINEConv(channels) if kind == "gine" else GCNConv(channels, channels)
            self.norm = make_norm(norm, channels)
            self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        if self.kind == "gatedgcn":
            return self.conv(x, graph, edge_attr)
        return x + self.dropout(torch.relu(self.norm(self.conv(x, graph, edge_attr)))), edge_attr
