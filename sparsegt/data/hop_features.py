"""Precomputed hop aggregates ``Â X, Â² X, ...`` of one large graph's node features (LargeGT's 2-hop tokens).

LargeGT (Dwivedi et al., "Graph Transformers for Large Graphs", 2023, Algorithm InputTokens) gives every
sampled node three tokens, ``X_v``, ``(Â X)_v`` and ``(Â² X)_v``, with the renormalised adjacency of GCN

    Â = D̃^-1/2 (A + I) D̃^-1/2,        D̃ = diag(rowsum(A + I)),

computed once on the **whole** graph before sampling. Attention over a sampled 2-hop neighbourhood then reads
information from up to 4 hops away while sampling only 2. `propagated_features` computes the [N, hops, F]
array (one sparse product per hop, float32; memory 4 N hops F bytes plus the graph's CSR as scipy arrays);
`add_hop_features` attaches it as ``node_data["hop_x"]`` to the splits of a `one_graph_dataset` (all splits
share one tensor and the graph's CSR, so the neighbour sampler gathers it for every batch like ``x``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..graph import Graph

__all__ = ["HOP_FEATURES", "propagated_features", "add_hop_features"]

HOP_FEATURES = "hop_x"  # node_data key: [N, hops, F] float32, hop h-1 holds Â^h X


def _renormalised_adjacency(graph: Graph) -> sp.csr_array:
    """Â = D̃^-1/2 (A + I) D̃^-1/2 of a square graph (edge weights 1; a stored self-loop counts once more)."""
    n = graph.num_nodes
    indptr, indices = graph.indptr.cpu().numpy(), graph.indices.cpu().numpy()
    adj = sp.csr_array((np.ones(indices.shape[0], np.float32), indices, indptr), shape=(n, n))
    adj = (adj + sp.eye_array(n, dtype=np.float32, format="csr")).tocsr()
    # D̃ from rows (queries) and columns (keys) separately: on a directed graph Â = D̃_row^-1/2 Ã D̃_col^-1/2,
    # which is GCN's normalisation when the graph is undirected
    row = np.asarray(adj.sum(axis=1)).reshape(-1) ** -0.5
    col = np.asarray(adj.sum(axis=0)).reshape(-1) ** -0.5
    return sp.diags_array(row.astype(np.float32)) @ adj @ sp.diags_array(col.astype(np.float32))


def propagated_features(graph: Graph, hops: int = 2, x: Tensor | None = None) -> Tensor:
    """[N, hops, F] float32: ``out[:, h - 1] = Â^h X`` for h = 1..hops (``X``: ``x`` or ``graph.x``).

    ``graph``: one square graph (`Graph`); its rows are the nodes that aggregate (row i sums over its columns)."""
    if hops < 1:
        raise ValueError(f"hops must be >= 1 (Â X, Â² X, ...), got {hops}")
    if graph.num_graphs != 1 or graph.num_cols != graph.num_nodes:
        raise ValueError(f"hop features are computed on one square graph; got {graph.num_graphs} graph(s) with "
                         f"{graph.num_nodes} rows and {graph.num_cols} columns")
    x = graph.x if x is None else x
    if x is None or not torch.is_floating_point(x) or x.dim() != 2:
        kind = "none" if x is None else f"{x.dtype} of shape {tuple(x.shape)}"
        raise ValueError(f"hop features average continuous node features [N, F]; the graph's x is {kind} "
                         "(categorical features must be embedded first; LargeGT needs continuous features)")
    adj = _renormalised_adjacency(graph)
    current = x.detach().cpu().numpy().astype(np.float32, copy=False)
    out = np.empty((graph.num_nodes, hops, x.shape[1]), np.float32)
    for h in range(hops):
        current = np.asarray(adj @ current, dtype=np.float32)
        out[:, h] = current
    return torch.from_numpy(out)


def add_hop_features(dataset, hops: int = 2, splits: tuple[str, ...] = ("train", "val", "test")):
    """The `Dataset` with ``node_data["hop_x"]`` = `propagated_features` on each graph of ``splits``.

    Splits that are views of one graph (a `one_graph_dataset`: same CSR storage) share one computed tensor.
    A dataset of many graphs gets the features per graph (each graph aggregated on its own)."""
    computed: dict[tuple[int, int, int], Tensor] = {}

    def with_features(graph: Graph) -> Graph:
        key = (graph.indptr.data_ptr(), graph.indices.data_ptr(), graph.num_nodes)
        if key not in computed:
            computed[key] = propagated_features(graph, hops)
        return graph.with_data(node_data={HOP_FEATURES: computed[key]}, validate=False)

    return replace(dataset, **{name: [with_features(g) for g in getattr(dataset, name)] for name in splits})
