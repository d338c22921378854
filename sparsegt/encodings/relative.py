"""Relative (pair) encodings on the entries of an attention pattern: RRWP (GRIT) and shortest-path distance.

Both take the structure ``graph`` and an attention ``pattern`` over the same nodes (``pattern.num_nodes ==
pattern.num_cols == graph.num_nodes``) and return one value per pattern entry, in the pattern's CSR order,
so they plug straight into ``sparse_attention(..., bias=...)``. Batches: graph and pattern are disjoint
unions over the same ``ptr``; an entry joining two different graphs gets 0 (RRWP) or ``max_distance`` (SPD).
Walks and paths follow the graph's CSR direction (row i -> its keys), like `random_walk`'s ``P``.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..graph import Graph
from .adjacency import check_square, edge_weights, graph_offsets
from .random_walk import rwse

__all__ = ["rrwp", "rrwp_node", "shortest_path_distance"]

_DENSE_MAX_NODES = 512
_SIZE_BUCKET = 16  # dense RRWP pads graphs up to a multiple of this, to batch them in few matmuls


def _check_pair(graph: Graph, pattern: Graph, what: str) -> None:
    check_square(graph, what)
    if not isinstance(pattern, Graph):
        raise ValueError(f"{what} needs the attention pattern as a sparsegt.Graph, "
                         f"got {type(pattern).__name__}")
    if pattern.num_nodes != graph.num_nodes or pattern.num_cols != graph.num_nodes:
        raise ValueError(f"{what}: the pattern is {pattern.num_nodes} x {pattern.num_cols} but the graph has "
                         f"{graph.num_nodes} nodes; pattern and graph must be over the same nodes")


def _num_chunks(n: int) -> int:
    return max(1, min(n, 8 * (numba.get_num_threads() or os.cpu_count() or 1)))


# ---------------------------------------------------------------------------------------------- RRWP
def rrwp(graph: Graph, pattern: Graph, steps: int) -> Tensor:
    """[E_pattern, steps] float32 ``[I, P, P^2, ..., P^(steps-1)][i, j]`` for each pattern entry (i, j).

    ``P = D^-1 A`` (weights from ``graph.edge_data["edge_weight"]``; zero rows for nodes without edges).
    Graphs of up to 512 nodes: dense powers per graph (graphs of similar size batched in one matmul chain,
    on the graph's device) — O(steps * n^3) per graph, no N^2 of the whole batch. Larger graphs: a numba
    walk from each query row over the nodes it reaches, memory O(N) per thread. Runs on the CPU and returns
    on ``pattern``'s device.
    """
    _check_pair(graph, pattern, "rrwp")
    if steps < 1:
        raise ValueError(f"steps = {steps}: RRWP needs at least one power (the identity)")
    device = pattern.device
    out = torch.zeros(pattern.num_edges, steps, dtype=torch.float32, device=device)
    if pattern.num_edges == 0:
        return out
    ptr = graph_offsets(graph)
    sizes = np.diff(ptr)
    node_graph = np.repeat(np.arange(len(sizes)), sizes)
    p_indptr = pattern.indptr.cpu().numpy()
    p_rows = np.repeat(np.arange(pattern.num_nodes), np.diff(p_indptr))
    p_cols = pattern.indices.cpu().numpy()
    same_graph = node_graph[p_rows] == node_graph[p_cols]
    g_indptr = graph.indptr.cpu().numpy()
    g_cols = graph.indices.cpu().numpy()
    weight = edge_weights(graph)
    small = sizes <= _DENSE_MAX_NODES
    if small.any():
        _rrwp_dense(graph, ptr, sizes, small, node_graph, p_rows, p_cols, same_graph, weight, steps, out)
    if (~small).any():
        degree = np.bincount(np.repeat(np.arange(graph.num_nodes), np.diff(g_indptr)), weights=weight,
                             minlength=graph.num_nodes)
        pvals = weight / np.where(degree > 0, degree, 1.0)[np.repeat(np.arange(graph.num_nodes),
                                                                     np.diff(g_indptr))]
        rows_wanted = ~small[node_graph]  # query rows handled by the sparse walk
        result = np.zeros((pattern.num_edges, steps))
        walk = sp.csr_array((pvals, g_cols, g_indptr), shape=(graph.num_nodes, graph.num_nodes))
        back = sp.csr_array(walk.T)  # row j: the nodes l stepping into j, with P[l, j]
        back.sort_indices()
        _rrwp_walk(g_indptr.astype(np.int64), g_cols.astype(np.int64), pvals, back.indptr.astype(np.int64),
                   back.indices.astype(np.int64), back.data, p_indptr.astype(np.int64),
                   p_cols.astype(np.int64), rows_wanted, steps, _num_chunks(graph.num_nodes), result)
        take = torch.from_numpy(np.nonzero(rows_wanted[p_rows])[0]).to(device)
        out[take] = torch.from_numpy(result[rows_wanted[p_rows]].astype(np.float32)).to(device)
    out[torch.from_numpy(~same_graph).to(device)] = 0.0
    return out


def _rrwp_dense(graph: Graph, ptr, sizes, small, node_graph, p_rows, p_cols, same_graph, weight, steps,
                out: Tensor) -> None:
    device = out.device
    g_rows = graph.row_index().cpu().numpy()
    g_cols = graph.indices.cpu().numpy()
    padded = -(-sizes // _SIZE_BUCKET) * _SIZE_BUCKET
    edge_graph = node_graph[g_rows]
    entry_graph = node_graph[p_rows]
    for size in np.unique(padded[small]):
        members = np.nonzero(small & (padded == size))[0]
        slot = np.full(len(sizes), -1)
        slot[members] = np.arange(len(members))
        b = len(members)
        # adjacency of the members, [b, size, size]
        sel = np.nonzero(slot[edge_graph] >= 0)[0]
        g_of = slot[edge_graph[sel]]
        offset = ptr[edge_graph[sel]]
        flat = (g_of * size + (g_rows[sel] - offset)) * size + (g_cols[sel] - offset)
        adj = np.bincount(flat, weights=weight[sel], minlength=b * size * size).reshape(b, size, size)
        a = torch.from_numpy(adj).to(device=device, dtype=torch.float32)
        degree = a.sum(dim=2, keepdim=True)
        p = a / torch.where(degree > 0, degree, torch.ones_like(degree))
        # pattern entries of the members
        ent = np.nonzero((slot[entry_graph] >= 0) & same_graph)[0]
        e_g = slot[entry_graph[ent]]
        e_off = ptr[entry_graph[ent]]
        e_flat = (e_g * size + (p_rows[ent] - e_off)) * size + (p_cols[ent] - e_off)
        e_flat = torch.from_numpy(e_flat).to(device)
        # all powers side by side [b * size * size, steps], then one gather of whole rows per entry
        stacked = torch.empty(b, size, size, steps, dtype=torch.float32, device=device)
        stacked[..., 0] = torch.eye(size, dtype=torch.float32, device=device)
        power = p
        for k in range(1, steps):
            stacked[..., k] = power
            if k + 1 < steps:
                power = torch.bmm(power, p)
        out[torch.from_numpy(ent).to(device)] = stacked.reshape(-1, steps)[e_flat]


@numba.njit(parallel=True, cache=True)
def _rrwp_walk(indptr, indices, pvals, b_indptr, b_indices, b_vals, p_indptr, p_indices, rows_wanted, steps,
               num_chunks, out):  # pragma: no cover - numba
    """Walk from every wanted query row: push the distribution for steps 1..K-2 over the nodes it reaches,
    then *pull* the last step only at the row's pattern keys (in-edges of each key), which saves the
    largest push of all."""
    n = len(indptr) - 1
    chunk = (n + num_chunks - 1) // num_chunks
    for c in numba.prange(num_chunks):
        cur = np.zeros(n)
        nxt = np.zeros(n)
        in_next = np.zeros(n, dtype=np.bool_)
        active = np.empty(n, dtype=np.int64)
        next_active = np.empty(n, dtype=np.int64)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            if not rows_wanted[i] or p_indptr[i] == p_indptr[i + 1]:
                continue
            for e in range(p_indptr[i], p_indptr[i + 1]):
                out[e, 0] = 1.0 if p_indices[e] == i else 0.0
            cur[i] = 1.0
            active[0] = i
            num_active = 1
            for k in range(1, steps):
                if k == steps - 1:  # last step: pull at the keys only
                    for e in range(p_indptr[i], p_indptr[i + 1]):
                        j = p_indices[e]
                        total = 0.0
                        for f in range(b_indptr[j], b_indptr[j + 1]):
                            total += cur[b_indices[f]] * b_vals[f]
                        out[e, k] = total
                    break
                num_next = 0
                for a in range(num_active):
                    u = active[a]
                    mass = cur[u]
                    for e in range(indptr[u], indptr[u + 1]):
                        v = indices[e]
                        if not in_next[v]:
                            in_next[v] = True
                            next_active[num_next] = v
                            num_next += 1
                        nxt[v] += mass * pvals[e]
                for e in range(p_indptr[i], p_indptr[i + 1]):
                    out[e, k] = nxt[p_indices[e]]
                for a in range(num_active):
                    cur[active[a]] = 0.0
                for a in range(num_next):
                    v = next_active[a]
                    cur[v] = nxt[v]
                    nxt[v] = 0.0
                    in_next[v] = False
                    active[a] = v
                num_active = num_next
            for a in range(num_active):
                cur[active[a]] = 0.0


def rrwp_node(graph: Graph, steps: int) -> Tensor:
    """[N, steps] float32 diagonal of ``[I, P, ..., P^(steps-1)]`` (GRIT's node-level RRWP; column 0 is 1).

    The same numbers as `rrwp` on a diagonal pattern, computed as ``[1, rwse(graph, steps - 1)]`` (half
    the matrix products); on ``graph``'s device.
    """
    check_square(graph, "rrwp_node")
    if steps < 1:
        raise ValueError(f"steps = {steps}: RRWP needs at least one power (the identity)")
    ones = torch.ones(graph.num_nodes, 1)
    out = ones if steps == 1 else torch.cat([ones, rwse(graph, steps - 1)], dim=1)
    return out.to(graph.device)


# ---------------------------------------------------------------------------------------------- SPD
def shortest_path_distance(graph: Graph, pattern: Graph, max_distance: int) -> Tensor:
    """[E_pattern] int64 hop distance from query i to key j along the graph's edges, for each pattern entry.

    Breadth-first search from every query row that has pattern entries, stopped at depth ``max_distance``;
    unreachable pairs and pairs farther away get ``max_distance``. Edge weights are ignored (hops).
    """
    _check_pair(graph, pattern, "shortest_path_distance")
    if max_distance < 1:
        raise ValueError(f"max_distance = {max_distance} must be >= 1")
    out = np.zeros(pattern.num_edges, dtype=np.int64)
    if pattern.num_edges:
        as_int = lambda t: t.cpu().numpy().astype(np.int64)
        _bfs_distances(as_int(graph.indptr), as_int(graph.indices), as_int(pattern.indptr),
                       as_int(pattern.indices), max_distance, _num_chunks(graph.num_nodes), out)
    return torch.from_numpy(out).to(pattern.device)


@numba.njit(parallel=True, cache=True)
def _bfs_distances(indptr, indices, p_indptr, p_indices, max_distance, num_chunks, out):  # pragma: no cover
    n = len(indptr) - 1
    chunk = (n + num_chunks - 1) // num_chunks
    for c in numba.prange(num_chunks):
        dist = np.full(n, -1, dtype=np.int64)
        queue = np.empty(n, dtype=np.int64)
        wanted = np.zeros(n, dtype=np.bool_)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            if p_indptr[i] == p_indptr[i + 1]:
                continue
            remaining = 0  # distinct keys of row i not reached yet: the search stops when none is left
            for e in range(p_indptr[i], p_indptr[i + 1]):
                if not wanted[p_indices[e]]:
                    wanted[p_indices[e]] = True
                    remaining += 1
            head = 0
            tail = 1
            queue[0] = i
            dist[i] = 0
            if wanted[i]:
                remaining -= 1
            while head < tail and remaining > 0:
                u = queue[head]
                head += 1
                du = dist[u]
                if du + 1 >= max_distance:  # farther nodes read as max_distance anyway
                    continue
                for e in range(indptr[u], indptr[u + 1]):
                    v = indices[e]
                    if dist[v] < 0:
                        dist[v] = du + 1
                        queue[tail] = v
                        tail += 1
                        if wanted[v]:
                            remaining -= 1
            for e in range(p_indptr[i], p_indptr[i + 1]):
                d = dist[p_indices[e]]
                out[e] = max_distance if d < 0 else d
                wanted[p_indices[e]] = False
            for q in range(tail):
                dist[queue[q]] = -1
