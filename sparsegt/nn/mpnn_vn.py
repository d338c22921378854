"""MPNN + virtual node (Gilmer et al., 2017; Cai et al., "On the Connection Between MPNN and Graph
Transformer", ICML 2023): a local MPNN plus one global token per graph that reads every node and is
read by every node, as OGB's GNN-VN.

    x_in = x + vn[graph(i)]
    x', e' = MPNN(x_in, e)                                   (residual and norm as in `GPSLayer`)
    vn'   = vn + Dropout(MLP(vn + sum_{i in graph} x_in_i))

Shapes: ``x`` [N, C], ``edge_attr`` [E, C] or None, ``virtual`` [B, C] (one token per graph).
The sums run per graph over the batch's ``ptr``, so graphs never see each other. The MLP uses
LayerNorm (BatchNorm over B virtual tokens breaks on single-graph batches).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..graph import Graph
from .blocks import make_norm
from .gatedgcn import GatedGCNConv
from .gine import GINEConv

__all__ = ["MPNNVirtualNodeLayer"]


class MPNNVirtualNodeLayer(nn.Module):
    """Local MPNN (``"gine"`` or ``"gatedgcn"``) plus a per-graph virtual node.

    Args:
        channels: C. local: MPNN kind. dropout: on the MPNN and virtual-node updates.
        norm: ``"batch"``, ``"layer"`` or ``"none"`` for the node update.
    """

    def __init__(self, channels: int, local: str = "gine", dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        if local not in ("gine", "gatedgcn"):
            raise ValueError(f"local must be 'gine' or 'gatedgcn', got {local!r}")
        self.local_kind = local
        if local == "gine":
            self.local_model: nn.Module = GINEConv(channels)
            self.norm = make_norm(norm, channels)
        else:
            self.local_model = GatedGCNConv(channels, dropout=dropout, batch_norm=norm == "batch")
            self.norm = nn.Identity()
        self.virtual_mlp = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.LayerNorm(2 * channels), nn.ReLU(),
            nn.Linear(2 * channels, channels), nn.LayerNorm(channels), nn.ReLU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None, virtual: Tensor
                ) -> tuple[Tensor, Tensor | None, Tensor]:
        """-> (x [N, C], edge_attr, virtual [B, C])."""
        if virtual.shape[0] != graph.num_graphs:
            raise ValueError(f"virtual has {virtual.shape[0]} rows but the batch has "
                             f"{graph.num_graphs} graphs")
        graph_index = graph.batch_index
        x_in = x + virtual.index_select(0, graph_index)
        if self.local_kind == "gatedgcn":
            h, edge_attr = self.local_model(x_in, graph, edge_attr)
        else:
            h = x_in + self.dropout(self.local_model(x_in, graph, edge_attr))
        pooled = virtual.new_zeros(virtual.shape).index_add(0, graph_index, x_in)
        virtual = virtual + self.dropout(self.virtual_mlp(virtual + pooled))
        return self.norm(h), edge_attr, virtual
