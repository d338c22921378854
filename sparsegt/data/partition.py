"""Split the seed nodes of one large graph among the processes of a distributed run: one graph partition each.

Under ``torchrun`` every rank samples its mini-batches from its own part of the training nodes
(`sparsegt.data.NeighborLoader` with ``partition=``), so the neighbourhoods one rank samples overlap little with
another's (fewer cut edges: each rank's batches stay inside its region of the graph, the way distributed GNN
trainers such as DistDGL split the work). Gradients are still all-reduced by DDP every step, so the model is
one model; only which seeds a rank draws changes.

Methods (``PARTITIONS``):

- ``"metis"``: METIS k-way partition (Karypis & Kumar 1998, through ``pymetis``, the optional extra
  ``sparsegt[large]``) of the whole graph, symmetrised and without self-loops, with vertex weight 1 on the
  seed nodes and 0 on the others, so each part holds about the same number of seeds; part r's seeds go to
  rank r. Without ``pymetis`` it falls back to ``"contiguous"`` with a one-line warning.
- ``"contiguous"``: the seeds in id order, cut into equal runs (a cheap locality when ids follow the graph's
  structure, e.g. communities or a crawl order).

A partition is a pure function of (graph, seeds, number of parts): every rank computes the same one.
METIS memory: the symmetrised CSR in int64 (16 bytes an edge) plus METIS's own copy.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..graph import Graph

__all__ = ["PARTITIONS", "partition_seeds", "metis_parts"]

PARTITIONS = ("none", "metis", "contiguous")


def metis_parts(graph: Graph, num_parts: int, vertex_weights: np.ndarray | None = None) -> np.ndarray:
    """[N] part id (0..num_parts-1) of every node: METIS k-way on the symmetrised graph (needs ``pymetis``)."""
    import pymetis  # the optional extra sparsegt[large]; callers catch the ImportError

    n = graph.num_nodes
    indptr, indices = graph.indptr.cpu().numpy(), graph.indices.cpu().numpy()
    adj = sp.csr_array((np.ones(indices.shape[0], np.int8), indices, indptr), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj.sort_indices()
    adjacency = pymetis.CSRAdjacency(adj.indptr.astype(np.int64), adj.indices.astype(np.int64))
    result = pymetis.part_graph(num_parts, adjacency, vweights=vertex_weights)
    return np.asarray(result.vertex_part, dtype=np.int64)


def partition_seeds(graph: Graph, seeds: np.ndarray, num_parts: int, method: str = "metis") -> list[np.ndarray]:
    """``num_parts`` sorted arrays of node ids that together hold ``seeds`` [T] once each (see the module).

    Raises ValueError for an unknown method or fewer seeds than parts (a part without seeds cannot train)."""
    if method not in PARTITIONS or method == "none":
        raise ValueError(f"partition method must be one of {PARTITIONS[1:]}, got {method!r}")
    seeds = np.sort(np.asarray(seeds, dtype=np.int64))
    if num_parts < 1 or seeds.shape[0] < num_parts:
        raise ValueError(f"cannot split {seeds.shape[0]} seed nodes into {num_parts} parts: every rank needs "
                         "seeds (use fewer processes or more training nodes)")
    if num_parts == 1:
        return [seeds]
    if method == "metis":
        try:
            weights = np.zeros(graph.num_nodes, np.int64)
            weights[seeds] = 1
            part = metis_parts(graph, num_parts, weights)[seeds]
            parts = [seeds[part == p] for p in range(num_parts)]
            if min(p.shape[0] for p in parts) > 0:
                return parts
            warnings.warn("METIS left a part without seed nodes; splitting the seeds contiguously instead",
                          stacklevel=2)
        except ImportError:
            warnings.warn("data.partition=metis needs pymetis (pip install 'sparsegt[large]'); splitting the seed "
                          "nodes contiguously by id instead", stacklevel=2)
    return list(np.array_split(seeds, num_parts))
