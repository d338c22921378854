"""GINE: the graph isomorphism network with edge features (Hu et al., 2020).

    h_i' = MLP( (1 + eps) h_i + sum_{j in N(i)} ReLU(h_j + e_ij) )

``MLP`` is Linear(C, C) -> ReLU -> Linear(C, C) as in GraphGPS. Shapes: ``x`` [N, C], ``edge_attr``
[E, C] in the graph's CSR order (or None: graphs without edge features, where GraphGPS embeds one
constant "dummy" edge vector; then ``ReLU(h_j + c)`` is a per-node quantity and the neighbour sum is
one sparse-matrix product with no per-edge tensor at all). Returns ``(x [N, C], edge_attr)`` with
``edge_attr`` unchanged: the one convention of local MPNN modules (`sparsegt.nn.local`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..graph import Graph
from .renamed import renamed_keywords
from .segment import gather_keys, neighbour_sum, segment_sum

__all__ = ["GINEConv"]


class GINEConv(nn.Module):
    """GINE convolution on the rows of a CSR graph (rows aggregate their keys).

    ``residual = False``: the layer around it adds the input (`sparsegt.nn.local.local_update`).

    Args:
        hidden: C (input = output width). train_eps: learn ``eps`` (initialised at 0).
        edge_dim: width of ``edge_attr`` if it differs from C (a linear map brings it to C).
    """

    residual = False

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, train_eps: bool = False, edge_dim: int | None = None) -> None:
        super().__init__()
        self.hidden = hidden
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.eps = nn.Parameter(torch.zeros(1), requires_grad=train_eps)
        self.edge_lin = nn.Linear(edge_dim, hidden) if edge_dim not in (None, hidden) else None
        # The learned constant edge vector used when a graph has no edge features.
        self.dummy_edge = nn.Parameter(torch.zeros(hidden))

    @property
    def channels(self) -> int:
        """Deprecated: the old name of ``hidden``."""
        warnings.warn(f"{type(self).__name__}.channels is deprecated and will be removed in the next release; "
                      "use .hidden", DeprecationWarning, stacklevel=2)
        return self.hidden

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.eps)
        nn.init.zeros_(self.dummy_edge)
        if self.edge_lin is not None:
            self.edge_lin.reset_parameters()

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x [N, C], edge_attr [E, C or edge_dim] or None -> (x [N, C], edge_attr unchanged)."""
        messages = edge_attr
        if edge_attr is None:
            aggregated = neighbour_sum(graph, torch.relu(x + self.dummy_edge))
        else:
            if self.edge_lin is not None:
                messages = self.edge_lin(edge_attr)
            aggregated = segment_sum(graph, torch.relu(gather_keys(graph, x) + messages))
        return self.mlp((1 + self.eps) * x + aggregated), edge_attr
