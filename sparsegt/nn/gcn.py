"""GCN: graph convolution with symmetric normalisation (Kipf & Welling, 2017).

    h' = D^-1/2 (A + I) D^-1/2 h W + b

Shapes: ``x`` [N, C_in] -> [N, C_out]. Self-loops are implied (added to the degree and as the
``h_i / d_i`` term), so the graph need not contain them; a graph that already has self-loops gets
them twice, as PyG's ``add_self_loops=True`` would not: pass graphs without self-loops.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..graph import Graph
from .segment import neighbour_sum

__all__ = ["GCNConv"]


class GCNConv(nn.Module):
    """GCN convolution: ``in_channels`` -> ``out_channels``; ``residual = False`` (`sparsegt.nn.local`)."""

    residual = False

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels, bias=bias)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x [N, C_in] -> (x [N, C_out], edge_attr): ``edge_attr`` is returned unchanged (GCN does not read it;
        the local-MPNN convention of `sparsegt.nn.local`)."""
        if graph.num_cols != graph.num_nodes:
            raise ValueError(f"GCNConv needs a square graph, got {graph.num_nodes} rows and "
                             f"{graph.num_cols} columns")
        h = x @ self.lin.weight.t()
        degree = graph.degree().to(h.dtype) + 1.0
        inv_sqrt = degree.rsqrt()
        edge_weight = inv_sqrt.index_select(0, graph.row_index()) * inv_sqrt.index_select(0, graph.indices)
        out = neighbour_sum(graph, h, edge_weight) + h / degree[:, None]
        return (out if self.lin.bias is None else out + self.lin.bias), edge_attr
