"""`MPNNLayer`: one plain message-passing layer (GINE, GatedGCN or GCN) with residual, norm, ReLU and
dropout, the Benchmarking-GNNs recipe; the baselines of the published tables are stacks of these.

    GINE / GCN:  h = x + Dropout(ReLU(Norm(Conv(x, e))))
    GatedGCN:    its own residual / BatchNorm / ReLU / dropout, updating edge states (`GatedGCNConv`)

Reads and returns a `LayerState`: ``x`` [N, C], ``edge_attr`` [E, C] or None (updated by GatedGCN only).
The convolution is a local MPNN module (`sparsegt.nn.local`): its ``residual`` attribute says whether it
brings its own residual and norm (GatedGCN) or takes the recipe above (GINE, GCN).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .blocks import make_norm
from .gatedgcn import GatedGCNConv
from .gcn import GCNConv
from .gine import GINEConv
from .renamed import renamed_keywords
from .state import LayerState

__all__ = ["MPNNLayer", "MPNN_KINDS"]

MPNN_KINDS = ("gine", "gatedgcn", "gcn")


class MPNNLayer(nn.Module):
    """Residual MPNN layer. Args: kind (``MPNN_KINDS``), hidden C, dropout, norm."""

    @renamed_keywords(channels="hidden")
    def __init__(self, kind: str, hidden: int, dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        if kind not in MPNN_KINDS:
            raise ValueError(f"kind must be one of {MPNN_KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "gatedgcn":
            self.conv: nn.Module = GatedGCNConv(hidden, dropout=dropout, norm=norm)
        else:
            self.conv = GINEConv(hidden) if kind == "gine" else GCNConv(hidden, hidden)
            self.norm = make_norm(norm, hidden)
            self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C], ``state.edge_attr`` -> the state with new ``x`` and ``edge_attr``."""
        x, edge_attr = self.conv(state.x, state.graph, state.edge_attr)
        if not self.conv.residual:
            x = state.x + self.dropout(torch.relu(self.norm(x)))
        return replace(state, x=x, edge_attr=edge_attr)
