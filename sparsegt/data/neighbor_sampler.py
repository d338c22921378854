"""k-hop neighbour sampling with per-hop fan-outs (GraphSAGE / PyG ``NeighborLoader`` semantics), in numba.

``NeighborSampler(graph).sample(seeds, fanouts, key)`` returns the sampled subgraph relabelled as a `Graph`:

- hop 0 expands the seeds; hop h expands the nodes first reached at hop h - 1. Expanding node v takes
  ``min(deg(v), fanouts[h])`` of its CSR columns (its keys: v attends over them), uniformly without
  replacement (Floyd's algorithm); ``fanouts[h] = -1`` takes them all. Every node is expanded at most once,
  as in PyG's default (non-disjoint) sampling.
- Local ids: the seeds first (0 .. S-1, in the given order), then every newly reached node in the order it was
  reached. Nodes reached at the last hop are not expanded: their rows are empty (attention returns zeros there).
- The subgraph's edge e is the original CSR entry ``edge_ids[e]``, so edge features are carried
  (``edge_data[name][edge_ids]``) and node tensors gathered (``node_data[name][node_ids]``). Rows keep their
  original column order.

Random choices are `hash_random` draws keyed by (key, node, hop): a batch is a pure function of (graph, seeds,
fanouts, key), whatever was sampled before it (resuming mid-epoch needs no replay).

Memory: the sampler keeps one int64 scratch array of ``num_nodes`` entries (global -> local id, reset after
each call, so a call costs O(sampled), not O(N)); a call allocates O(sampled nodes + sampled edges). Not
thread-safe: one sampler per thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from torch import Tensor

from ..graph import Graph
from .hash_random import below

__all__ = ["NeighborSampler", "SampledSubgraph", "check_fanouts"]


@dataclass(frozen=True)
class SampledSubgraph:
    """A sampled neighbourhood: ``graph`` (relabelled, seeds first), ``node_ids`` [n] and ``edge_ids`` [e] (its
    nodes' and edges' ids in the sampled graph), ``num_seeds`` (rows 0 .. num_seeds-1 are the seeds)."""

    graph: Graph
    node_ids: Tensor
    edge_ids: Tensor
    num_seeds: int


def check_fanouts(fanouts: Sequence[int], what: str = "fanouts") -> np.ndarray:
    """[hops] int64 fan-outs: each >= 0, or -1 for every neighbour; at least one hop."""
    values = list(fanouts) if not isinstance(fanouts, (int, np.integer)) else [fanouts]
    if not values:
        raise ValueError(f"{what} is empty: give one fan-out per hop, e.g. [10, 5] (-1 takes every neighbour)")
    for h, f in enumerate(values):
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < -1:
            raise ValueError(f"{what}[{h}] = {f!r}: a fan-out is a whole number >= 0, or -1 for every neighbour")
    return np.asarray(values, dtype=np.int64)


@njit(cache=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    out = np.zeros(max(need, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def _sample_numba(indptr, indices, seeds, fanouts, key, local_of):
    """(nodes, row_counts, local_cols, edge_ids, duplicate seed or -1); ``local_of`` is -1 on entry and exit."""
    num_seeds = seeds.shape[0]
    nodes = np.empty(max(16, 4 * num_seeds), np.int64)
    for i in range(num_seeds):
        s = seeds[i]
        if local_of[s] != -1:
            for j in range(i):
                local_of[nodes[j]] = -1
            return nodes[:0], nodes[:0], nodes[:0], nodes[:0], s
        local_of[s] = i
        nodes[i] = s
    num_nodes = num_seeds
    counts = np.zeros(nodes.shape[0], np.int64)
    cols = np.empty(max(16, 4 * num_seeds), np.int64)
    edge_ids = np.empty(cols.shape[0], np.int64)
    num_edges = 0
    widest = 1
    for h in range(fanouts.shape[0]):
        widest = max(widest, fanouts[h])
    chosen = np.empty(widest, np.int64)
    start, end = 0, num_seeds
    for hop in range(fanouts.shape[0]):
        fanout = fanouts[hop]
        for v_local in range(start, end):
            v = nodes[v_local]
            lo = indptr[v]
            degree = indptr[v + 1] - lo
            take = degree if fanout < 0 or degree <= fanout else fanout
            if take < degree:  # Floyd: a uniform `take`-subset of 0..degree-1
                for m in range(take):
                    j = degree - take + m
                    t = below(key, v, hop * 4294967296 + j, j + 1)
                    for q in range(m):
                        if chosen[q] == t:
                            t = j
                            break
                    chosen[m] = t
                chosen[:take].sort()
            cols = _grow(cols, num_edges + take)
            edge_ids = _grow(edge_ids, num_edges + take)
            for m in range(take):
                e = lo + (chosen[m] if take < degree else m)
                u = indices[e]
                if local_of[u] == -1:
                    if num_nodes == nodes.shape[0]:
                        nodes = _grow(nodes, num_nodes + 1)
                        counts = _grow(counts, nodes.shape[0])
                    local_of[u] = num_nodes
                    nodes[num_nodes] = u
                    num_nodes += 1
                cols[num_edges] = local_of[u]
                edge_ids[num_edges] = e
                num_edges += 1
            counts[v_local] = take
        start, end = end, num_nodes
    for i in range(num_nodes):
        local_of[nodes[i]] = -1
    return nodes[:num_nodes], counts[:num_nodes], cols[:num_edges], edge_ids[:num_edges], -1


class NeighborSampler:
    """Samples k-hop neighbourhoods of seed nodes of one square, unbatched ``graph`` (see the module docstring).

    ``sample(seeds, fanouts, key)``: ``seeds`` [S] distinct node ids, ``fanouts`` one per hop (-1: all),
    ``key`` a `hash_random.derive_key` value; returns a `SampledSubgraph`.
    """

    def __init__(self, graph: Graph) -> None:
        if graph.num_graphs != 1 or graph.num_cols != graph.num_nodes:
            raise ValueError(f"NeighborSampler samples one square graph; got {graph.num_graphs} graph(s) with "
                             f"{graph.num_nodes} rows and {graph.num_cols} columns")
        if graph.device.type != "cpu":
            raise ValueError(f"NeighborSampler samples on the CPU; the graph is on {graph.device}: "
                             "sample first, then move each batch")
        self.graph = graph
        self._indptr = graph.indptr.numpy().astype(np.int64, copy=False)
        self._indices = graph.indices.numpy().astype(np.int64, copy=False)
        self._local_of: np.ndarray | None = None  # allocated on the first call

    def shares_pattern(self, graph: Graph) -> bool:
        """Whether ``graph`` has this sampler's pattern (the same CSR storage), so `sample` may gather from it."""
        return (graph.num_nodes == self.graph.num_nodes and graph.num_edges == self.graph.num_edges
                and graph.indptr.data_ptr() == self.graph.indptr.data_ptr()
                and graph.indices.data_ptr() == self.graph.indices.data_ptr())

    def sample(self, seeds: Tensor | np.ndarray | Sequence[int], fanouts: Sequence[int],
               key: int | np.uint64, *, data_from: Graph | None = None) -> SampledSubgraph:
        """``data_from``: a graph with this pattern (`shares_pattern`) whose node and edge tensors the sample
        carries (e.g. another split's view of the same graph); default the sampler's own graph."""
        fanout_array = check_fanouts(fanouts)
        seed_array = np.ascontiguousarray(np.asarray(seeds, dtype=np.int64).reshape(-1))
        n = self.graph.num_nodes
        if seed_array.size and (seed_array.min() < 0 or seed_array.max() >= n):
            bad = int(seed_array.max()) if seed_array.max() >= n else int(seed_array.min())
            raise ValueError(f"seed node {bad} is outside 0..{n - 1} (the graph has {n} nodes)")
        if self._local_of is None:
            self._local_of = np.full(n, -1, dtype=np.int64)
        nodes, counts, cols, edge_ids, duplicate = _sample_numba(self._indptr, self._indices, seed_array,
                                                                 fanout_array, np.uint64(key), self._local_of)
        if duplicate >= 0:
            raise ValueError(f"seed node {duplicate} is given twice; seeds must be distinct")
        indptr = np.zeros(nodes.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        node_ids, edge_index = torch.from_numpy(nodes), torch.from_numpy(edge_ids)
        g = self.graph if data_from is None else data_from
        if data_from is not None and not self.shares_pattern(data_from):
            raise ValueError("data_from must share the sampled graph's pattern (a view of the same graph)")
        sub = Graph(torch.from_numpy(indptr), torch.from_numpy(cols),
                    node_data={k: t[node_ids] for k, t in g.node_data.items()},
                    edge_data={k: t[edge_index] for k, t in g.edge_data.items()},
                    graph_data=dict(g.graph_data), validate=False)
        return SampledSubgraph(sub, node_ids, edge_index, int(seed_array.shape[0]))
