"""GatedGCN with edge features (Bresson & Laurent, 2017; the Benchmarking-GNNs / GraphGPS version).

For an edge e = (i <- j) (query i aggregates key j)::

    ê_ij  = D h_i + E h_j + C e_ij
    σ_ij  = sigmoid(ê_ij)
    h_i'  = A h_i + (sum_j σ_ij ⊙ B h_j) / (sum_j σ_ij + 1e-6)
    h_out = h + Dropout(ReLU(BN(h')))          e_out = e + Dropout(ReLU(BN(ê)))

Shapes: ``x`` [N, C], ``edge_attr`` [E, C] in CSR order (None: zeros, i.e. GraphGPS's constant
"dummy" edge embedding absorbed into C's bias). The layer updates edge states, so it returns both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import Graph
from .segment import gather_keys, gather_queries, segment_sum

__all__ = ["GatedGCNConv"]


class GatedGCNConv(nn.Module):
    """GatedGCN layer (residual, BatchNorm, ReLU and dropout inside, as in GraphGPS).

    Args:
        channels: C (nodes and edges). dropout: on both outputs. batch_norm: BN (else identity).
        residual: add the inputs to the outputs.
    """

    def __init__(self, channels: int, dropout: float = 0.0, batch_norm: bool = True,
                 residual: bool = True) -> None:
        super().__init__()
        self.channels, self.residual = channels, residual
        self.node_lin = nn.Linear(channels, 4 * channels)  # A, B, D, E stacked
        self.edge_lin = nn.Linear(channels, channels)      # C
        self.norm_x = nn.BatchNorm1d(channels) if batch_norm else nn.Identity()
        self.norm_e = nn.BatchNorm1d(channels) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in (self.node_lin, self.edge_lin, self.norm_x, self.norm_e):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [N, C], edge_attr [E, C] or None -> (x [N, C], edge_attr [E, C])."""
        if edge_attr is None:
            edge_attr = x.new_zeros(graph.num_edges, self.channels)
        a, b, d, e = self.node_lin(x).chunk(4, dim=-1)
        edge_hat = gather_queries(graph, d) + gather_keys(graph, e) + self.edge_lin(edge_attr)
        sigma = torch.sigmoid(edge_hat)
        numerator = segment_sum(graph, sigma * gather_keys(graph, b))
        denominator = segment_sum(graph, sigma)
        x_new = a + numerator / (denominator + 1e-6)
        x_new = self.dropout(torch.relu(self.norm_x(x_new)))
        e_new = self.dropout(torch.relu(self.norm_e(edge_hat)))
        if self.residual:
            x_new, e_new = x + x_new, edge_attr + e_new
        return x_new, e_new
