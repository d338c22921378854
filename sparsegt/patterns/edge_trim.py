"""TEDDY's one-shot edge sparsification: score every edge by degree statistics, keep the best fraction.

Seo, Yun & Yang, "TEDDY: Trimming Edges with Degree-based Discrimination strategY", ICLR 2024
(arXiv:2402.01261). Low-degree edges carry the graph's principal information flow, so TEDDY scores an
edge by the degrees of its endpoints *and of their neighbours* (two levels of degree information
gathered by one round of message passing) and removes the lowest-scoring edges once, before training.
With ``d_v`` the degree of node v (self-loops not counted) and ``N(v)`` its neighbours::

    g~_v = (1 / d_v) sum_{u in N(v)} d_u^(-1/2)        mean inverse-sqrt degree of v's neighbours
    g_v  = g~_v / d_v
    T_uv = g_u * g_v                                    the score of edge (u, v); high = keep

(``d_v = 0`` gives ``g_v = 0``; the authors' ``compute_edge_score`` computes the same quantity as
``norm_A[row] * deg_inv[row] * norm_A[col] * deg_inv[col]``.) Self-loops are never compared by degree:
they score ``+inf`` and go first, as in the authors' ``prune_adj``.

`trim_edges` keeps exactly ``round(keep_fraction * E_b)`` entries of every graph ``b`` of a batch
(halves round up), ranked by score; equal scores are ordered by the unordered node pair ``(min(u, v),
max(u, v))`` and then by CSR position, so the result is deterministic and the two directions of an
undirected edge stay next to each other in the ranking.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import filter_edges

__all__ = ["teddy_edge_scores", "trim_edges", "kept_edge_counts"]


def teddy_edge_scores(graph: Graph) -> Tensor:
    """[E] float64 TEDDY score ``T_uv = g_u g_v`` of every entry, in CSR order (module docstring).

    ``graph`` must be square (rows and columns are the same nodes); rows are read as the nodes' neighbour
    lists, so an undirected graph should be stored with both directions (every `Graph` builder does).
    Self-loops score ``+inf``.
    """
    if not isinstance(graph, Graph):
        raise ValueError(f"teddy_edge_scores needs a sparsegt.Graph, got {type(graph).__name__}")
    if graph.num_nodes != graph.num_cols:
        raise ValueError(f"teddy_edge_scores needs a square graph (nodes to nodes), got "
                         f"{graph.num_nodes}x{graph.num_cols}")
    row, col = graph.row_index(), graph.indices
    loop = row == col
    degree = torch.zeros(graph.num_nodes, dtype=torch.float64, device=graph.device)
    degree.index_add_(0, row, (~loop).to(torch.float64))
    has_degree = degree > 0
    inv_sqrt = torch.where(has_degree, degree.clamp_min(1).rsqrt(), torch.zeros_like(degree))
    inv = torch.where(has_degree, degree.clamp_min(1).reciprocal(), torch.zeros_like(degree))
    # g~_v = mean over the (non-loop) neighbours of d_u^-1/2, then g_v = g~_v / d_v
    neighbour_sum = torch.zeros_like(degree).index_add_(0, row[~loop], inv_sqrt[col[~loop]])
    g = neighbour_sum * inv * inv
    score = g[row] * g[col]
    return score.masked_fill(loop, math.inf)


def kept_edge_counts(graph: Graph, keep_fraction: float) -> Tensor:
    """[B] entries `trim_edges` keeps in each graph of the batch: ``round(keep_fraction * E_b)``, halves up."""
    edge_counts = _edges_per_graph(graph)
    # floor(f E + 1/2) in float64 with a tiny guard: 0.3 * 10 is 3.0000000000000004, not 3.5
    return torch.floor(keep_fraction * edge_counts.to(torch.float64) + 0.5 + 1e-9).long().clamp_max(edge_counts)


def trim_edges(graph: Graph, keep_fraction: float) -> Graph:
    """TEDDY: keep the ``keep_fraction`` highest-scoring entries of every graph (`teddy_edge_scores`).

    Args:
        graph: a square `Graph` or a batch of them (``ptr``); each graph is trimmed on its own.
        keep_fraction: in [0, 1]; graph b keeps exactly ``round(keep_fraction * E_b)`` entries
            (`kept_edge_counts`), TEDDY's "1 - target edge sparsity".
    Returns:
        The `Graph` with the kept entries (CSR order unchanged), its node, edge and graph tensors
        (edge tensors follow their entries) and its batch offsets.
    """
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) \
            or not 0.0 <= float(keep_fraction) <= 1.0:
        raise ValueError(f"trim_edges: keep_fraction must be a number in [0, 1] (the fraction of edges kept), "
                         f"got {keep_fraction!r}")
    score = teddy_edge_scores(graph)
    row, col = graph.row_index(), graph.indices
    graph_of_edge = graph.batch_index[row] if graph.ptr is not None else torch.zeros_like(row)
    # lexicographic order (graph, -score, min(u, v), max(u, v), position) by stable sorts, least key first
    order = torch.arange(graph.num_edges, device=graph.device)
    for key, descending in ((torch.maximum(row, col), False), (torch.minimum(row, col), False),
                            (score, True), (graph_of_edge, False)):
        order = order[torch.sort(key[order], stable=True, descending=descending).indices]
    edge_counts = _edges_per_graph(graph)
    first_edge = torch.cumsum(edge_counts, 0) - edge_counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(graph.num_edges, device=graph.device) - first_edge[graph_of_edge[order]]
    keep = rank < kept_edge_counts(graph, float(keep_fraction))[graph_of_edge]
    trimmed = filter_edges(graph, keep)
    return trimmed.with_data(node_data=graph.node_data, graph_data=graph.graph_data, validate=False)


def _edges_per_graph(graph: Graph) -> Tensor:
    if graph.ptr is None:
        return torch.tensor([graph.num_edges], device=graph.device)
    return graph.indptr[graph.ptr].diff()
