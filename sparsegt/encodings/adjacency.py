"""The weighted adjacency matrix of a `Graph`, as every encoding in this package reads it.

Convention: the graph's CSR entry ``(i, j)`` (row ``i`` = query, column ``j`` = key) is the matrix entry
``A[i, j]``, with weight ``edge_data["edge_weight"][e]`` when present and 1 otherwise. Repeated entries
add up (a multigraph). A random walk steps from ``i`` to ``j`` with probability ``A[i, j] / sum_j A[i, j]``;
for graphs stored in both directions (the usual undirected case) the direction does not matter.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..graph import Graph

__all__ = ["adjacency", "check_square", "component_labels", "edge_weights", "graph_offsets",
           "one_blas_thread"]


def check_square(graph: Graph, what: str) -> None:
    """Raise ValueError unless ``graph`` is a square (node -> node) pattern."""
    if not isinstance(graph, Graph):
        raise ValueError(f"{what} needs a sparsegt.Graph, got {type(graph).__name__}")
    if graph.num_cols != graph.num_nodes:
        raise ValueError(f"{what} needs a square graph (num_cols == num_nodes), got {graph.num_nodes} rows "
                         f"and {graph.num_cols} columns: encodings describe a graph over one node set")


def edge_weights(graph: Graph) -> np.ndarray:
    """[E] float64 edge weights in CSR order (ones when the graph has no ``edge_weight``)."""
    weight = graph.edge_data.get("edge_weight")
    if weight is None:
        return np.ones(graph.num_edges, dtype=np.float64)
    weight = weight.detach().cpu()
    if weight.dim() == 2 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if weight.dim() != 1:
        raise ValueError(f"edge_data['edge_weight'] must have shape [E] or [E, 1], got {tuple(weight.shape)}")
    weight = np.array(weight.numpy(), dtype=np.float64)  # a copy: scipy may reorder it in place
    if weight.size and weight.min() < 0:
        e = int(np.argmin(weight))
        raise ValueError(f"edge_data['edge_weight'][{e}] = {weight[e]} is negative: random walks and "
                         "Laplacians need non-negative weights")
    return weight


def adjacency(graph: Graph) -> sp.csr_array:
    """[N, N] scipy CSR float64 weighted adjacency ``A[query, key]``; duplicate entries summed."""
    check_square(graph, "adjacency")
    n = graph.num_nodes
    # copies: scipy sorts and merges in place, and the index arrays must not alias the graph's tensors
    matrix = sp.csr_array((edge_weights(graph), graph.indices.cpu().numpy().copy(),
                           graph.indptr.cpu().numpy().copy()), shape=(n, n))
    matrix.sum_duplicates()
    return matrix


def graph_offsets(graph: Graph) -> np.ndarray:
    """[B+1] node offsets of the graphs of a batch ([0, N] for a single graph)."""
    if graph.ptr is None:
        return np.array([0, graph.num_nodes], dtype=np.int64)
    return graph.ptr.cpu().numpy().astype(np.int64)


def component_labels(adj: sp.sparray) -> tuple[int, np.ndarray]:
    """``(count, labels [N])`` of the weakly connected components of ``adj`` (zero weights are no edge),
    numbered ``0..count-1`` in order of each component's smallest node index (so the components of the graphs
    of a block-diagonal batch are numbered graph by graph)."""
    from scipy.sparse.csgraph import connected_components

    adj = sp.csr_array(adj, copy=True)
    adj.eliminate_zeros()
    count, labels = connected_components(adj, directed=True, connection="weak")
    first = np.full(count, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    rank = np.empty(count, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(count)
    return count, rank[labels]


def one_blas_thread():
    """A context holding BLAS to one thread: the small dense and vector work here gains nothing from
    threads, and threaded BLAS spins badly (10x slower) when the machine is busy."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's usual installs
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")
