"""MPNN + virtual node (Gilmer et al., 2017; Cai et al., "On the Connection Between MPNN and Graph
Transformer", ICML 2023): a local MPNN plus one global token per graph that reads every node and is
read by every node, as OGB's GNN-VN.

    x_in = x + vn[graph(i)]
    x', e' = MPNN(x_in, e)                                   (residual and norm as in `GPSLayer`)
    vn'   = vn + Dropout(MLP(vn + sum_{i in graph} x_in_i))

Reads and returns a `LayerState`: ``x`` [N, C], ``edge_attr`` [E, C] or None, ``virtual`` [B, C] (one
token per graph). The local MPNN is a module (`sparsegt.nn.local`) or its name.
The sums run per graph over the batch's ``ptr``, so graphs never see each other. The MLP uses
LayerNorm (BatchNorm over B virtual tokens breaks on single-graph batches).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .blocks import make_norm
from .local import local_update, make_local
from .renamed import renamed_keywords
from .state import LayerState

__all__ = ["MPNNVirtualNodeLayer"]


class MPNNVirtualNodeLayer(nn.Module):
    """Local MPNN (``"gine"`` or ``"gatedgcn"``) plus a per-graph virtual node.

    Args:
        hidden: C. local: MPNN kind. dropout: on the MPNN and virtual-node updates.
        norm: ``"batch"``, ``"layer"`` or ``"none"`` for the node update.
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, local: str | nn.Module = "gine", dropout: float = 0.0,
                 norm: str = "batch") -> None:
        super().__init__()
        self.local_model: nn.Module = make_local(local, hidden, dropout, norm, ("gine", "gatedgcn"))
        # a module with its own residual brings its own norm (GatedGCN)
        self.norm = nn.Identity() if getattr(self.local_model, "residual", False) else make_norm(norm, hidden)
        self.virtual_mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.ReLU(),
            nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C], ``state.edge_attr``, ``state.virtual`` [B, C] -> the state with new ``x``,
        ``edge_attr`` and ``virtual``."""
        x, graph, virtual = state.x, state.graph, state.virtual
        if virtual is None or virtual.shape[0] != graph.num_graphs:
            raise ValueError(f"virtual has {None if virtual is None else virtual.shape[0]} rows but the batch has "
                             f"{graph.num_graphs} graphs")
        graph_index = graph.batch_index
        x_in = x + virtual.index_select(0, graph_index)
        h, edge_attr = local_update(self.local_model, x_in, graph, state.edge_attr, self.dropout)
        pooled = virtual.new_zeros(virtual.shape).index_add(0, graph_index, x_in)
        virtual = virtual + self.dropout(self.virtual_mlp(virtual + pooled))
        return replace(state, x=self.norm(h), edge_attr=edge_attr, virtual=virtual)
