"""Patterns over the nodes of a graph batch: `full`, `khop`, `seed_neighbourhood` (LargeGT), `expander`
(Exphormer), `virtual_nodes`.

All take a `Graph` (a batch from `Graph.batch`, or one graph) or PyG's tensors (``edge_index`` [2, E] with
``batch`` [N] or ``ptr`` [B+1]; `full` and `expander` need only ``batch`` or ``ptr``) and never connect nodes
of different graphs, so a graph's pattern does not depend on which graphs share its batch. Results are sorted
CSR without duplicates and keep ``ptr``/``col_ptr``/``edge_ptr`` (still a batch), except
`virtual_nodes`, whose extra tokens are not contiguous per graph (see its docstring).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..attention.dropout import MASK32, hash32_torch
from ..graph import Graph
from ._csr import as_batch, check_int, csr_from_pairs, finish, graph_offsets, segment_arange

__all__ = ["full", "khop", "seed_neighbourhood", "expander", "virtual_nodes", "virtual_token_graph"]


def _square_batch(batch: Graph, name: str) -> tuple[Tensor, Tensor]:
    ptr, col_ptr = graph_offsets(batch)
    if batch.num_nodes != batch.num_cols or not torch.equal(ptr, col_ptr):
        raise ValueError(f"{name} needs a square pattern whose graphs own the same rows and columns, got "
                         f"{batch.num_nodes} rows x {batch.num_cols} columns")
    return ptr, ptr.diff()


def full(batch: Graph | Tensor | None = None, *, ptr: Tensor | None = None) -> Graph:
    """Every node attends to every node of its own graph (itself included); no padding across graphs.

    Args:
        batch: a `Graph` with N nodes, whose ``ptr`` [B+1] splits it into graphs (none: one graph); or
            PyG's ``batch`` vector [N] (the graph of every node, as ``GPSConv`` takes it).
        ptr: instead of ``batch``: PyG's ``ptr`` [B+1] node offsets.
    Returns:
        `Graph` [N, N] with ``sum_b n_b**2`` entries, rows sorted, keeping ``ptr``/``col_ptr`` and a
        fresh ``edge_ptr``.
    """
    batch = as_batch(batch, "full", ptr=ptr)
    ptr, sizes = _square_batch(batch, "full")
    dev = batch.device
    graph_of_node = torch.repeat_interleave(torch.arange(len(sizes), device=dev), sizes)
    degree = sizes[graph_of_node]
    indptr = torch.zeros(batch.num_nodes + 1, dtype=torch.long, device=dev)
    indptr[1:] = torch.cumsum(degree, 0)
    # row i lists its graph's nodes ptr[g], ptr[g]+1, ...: entry e of row i is key e - (indptr[i] - ptr[g])
    shift = indptr[:-1] - ptr[graph_of_node]
    indices = torch.arange(int(indptr[-1]), device=dev) - torch.repeat_interleave(shift, degree)
    pattern = finish(indptr, indices, batch.num_nodes, batch.ptr, batch.col_ptr)
    if pattern.num_edges:
        # The transpose (`Graph.csc`), which every backward pass needs, is known without a sort: the
        # pattern is symmetric, column j holds the rows row j lists as keys, and the CSR position of
        # (i, j) is indptr[i] + (j - first node of the graph). Built when a backward asks for it.
        num_nodes = batch.num_nodes

        def transpose_of_full() -> tuple[Tensor, Tensor, Tensor]:  # no reference to the pattern: no cycle
            row = torch.repeat_interleave(torch.arange(num_nodes, device=dev), degree)
            first_key = indices.index_select(0, indptr[:-1].clamp_max(indices.numel() - 1))
            edge_id = indptr.index_select(0, indices) + (row - first_key.index_select(0, row))
            return indptr, indices, edge_id

        pattern.offer_plan("csc", transpose_of_full)
    return pattern


def _reach(adjacency: Graph, rows: Tensor, cols: Tensor, first_hop: int, last_hop: int,
           num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Breadth-first walks along ``adjacency``'s edges from distinct starting pairs (rows[i], cols[i]), at hop
    ``first_hop``, up to ``last_hop``: ``(indptr [num_rows + 1], indices, hop)`` of every (row, node) pair
    reached, sorted within rows, each with the length of its shortest walk. Memory: the pairs reached plus
    one frontier expansion."""
    width = max(adjacency.num_nodes, 1)
    reach_key = rows * width + cols
    hop = torch.full_like(reach_key, first_hop)
    frontier_row, frontier_col = rows, cols
    for step in range(first_hop + 1, last_hop + 1):
        counts = adjacency.indptr.diff()[frontier_col]
        row = torch.repeat_interleave(frontier_row, counts)
        first_edge = torch.repeat_interleave(adjacency.indptr[frontier_col], counts)
        col = adjacency.indices[first_edge + segment_arange(counts)]
        new_key = torch.unique(row * width + col)
        new_key = new_key[~torch.isin(new_key, reach_key)]
        if new_key.numel() == 0:
            break
        reach_key = torch.cat([reach_key, new_key])
        hop = torch.cat([hop, torch.full_like(new_key, step)])
        frontier_row = torch.div(new_key, width, rounding_mode="floor")
        frontier_col = new_key - frontier_row * width
    order = torch.argsort(reach_key)
    reach_key, hop = reach_key[order], hop[order]
    row = torch.div(reach_key, width, rounding_mode="floor")
    indptr = torch.zeros(num_rows + 1, dtype=torch.long, device=adjacency.device)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return indptr, (reach_key - row * width).contiguous(), hop


def khop(graph: Graph | Tensor, k: int, *, batch: Tensor | None = None, ptr: Tensor | None = None,
         num_nodes: int | None = None) -> Graph:
    """All pairs joined by a walk of 1..k pattern edges: the pattern of ``A + A^2 + ... + A^k``.

    Row i lists key l when there is a walk i -> j_1 -> ... -> l of at most k steps through the input
    rows (query i attends to j_1, j_1 to j_2, ...). A node reaches itself when a walk of length
    <= k returns to it (e.g. any node with a neighbour, for k >= 2 on an undirected graph).

    Args:
        graph: square `Graph` (a batch or one graph), or PyG's ``edge_index`` [2, E] with ``batch`` [N] or
            ``ptr`` [B+1] (neither: one graph) and optionally ``num_nodes``. k: number of hops, >= 1.
    Returns:
        `Graph` with ``edge_data["hop"]`` [E] int64: the length of the shortest such walk (1..k).
        Memory grows with the number of k-hop pairs (plus one frontier expansion).
    """
    graph = as_batch(graph, "khop", batch=batch, ptr=ptr, num_nodes=num_nodes, needs_edges=True)
    k = check_int("khop: k", k, 1)
    _square_batch(graph, "khop")
    n = graph.num_nodes
    base = csr_from_pairs(graph.row_index(), graph.indices, n, n)
    indptr, indices, hop = _reach(base, base.row_index(), base.indices, 1, k, n)
    return finish(indptr, indices, n, graph.ptr, graph.col_ptr, {"hop": hop})


def seed_neighbourhood(graph: Graph, seeds: Tensor, hops: int) -> Graph:
    """The rectangular pattern [S, N] from each seed to every node within ``hops`` steps of it, itself included.

    Row s lists node j when a walk ``seeds[s] -> ... -> j`` of 0..hops pattern edges exists (rows of ``graph``
    are the nodes that look, as everywhere: seed i's first hop is its row). On a sampled subgraph
    (`sparsegt.data.NeighborSampler`, fan-outs f_1, f_2) with ``hops = 2`` this is LargeGT's local token set of
    each seed: the seed, its sampled neighbours and theirs (at most 1 + f_1 + f_1 f_2 nodes).

    Args:
        graph: one square `Graph` (or a batch: walks never leave a graph). seeds: [S] row ids.
        hops: >= 0.
    Returns:
        `Graph` with S rows and ``graph.num_nodes`` columns, sorted, no duplicates, and ``edge_data["hop"]``
        [E] int64: the length of the shortest walk (0 for the seed itself). Memory O(entries + one frontier).
    """
    hops = check_int("seed_neighbourhood: hops", hops, 0)
    _square_batch(graph, "seed_neighbourhood")
    seeds = torch.as_tensor(seeds, dtype=torch.long, device=graph.device).reshape(-1)
    n, num_seeds = graph.num_nodes, seeds.numel()
    if num_seeds and (int(seeds.min()) < 0 or int(seeds.max()) >= n):
        raise ValueError(f"seed_neighbourhood: seed ids must lie in 0..{n - 1}, got {seeds.min()}..{seeds.max()}")
    indptr, indices, hop = _reach(graph, torch.arange(num_seeds, device=graph.device), seeds, 0, hops, num_seeds)
    return finish(indptr, indices, n, None, None, {"hop": hop})


def _graph_permutation_keys(sizes: Tensor, graph_of_node: Tensor, local: Tensor, seed: int, j: int) -> Tensor:
    """32-bit pseudo-random sort keys that depend only on (seed, graph size, permutation j, local index)."""
    seed_mix = hash32_torch(torch.tensor(seed & MASK32, device=local.device)
                            + hash32_torch(torch.tensor((seed >> 32) & MASK32, device=local.device)))
    per_graph = hash32_torch(hash32_torch(sizes[graph_of_node] * 0x9E3779B1 + j) ^ seed_mix)
    return hash32_torch(hash32_torch(local ^ per_graph) + per_graph)


def expander(batch: Graph | Tensor | None, degree: int, seed: int = 0, *, ptr: Tensor | None = None) -> Graph:
    """Exphormer's random expander, one per graph: ``degree / 2`` random permutations, both directions.

    For each permutation ``pi`` of a graph's nodes, node i gets keys ``pi(i)`` and ``pi^-1(i)``, so
    before clean-up the pattern is ``degree``-regular. Self-loops and duplicate pairs are then removed,
    so a node has at most ``degree`` keys (exactly ``degree`` on all but a small fraction of nodes
    once graphs have more than ~``degree`` nodes). Exphormer's ``exp_deg = d`` (d permutations) is
    ``degree = 2 * d`` here.

    Batch independence: each graph's permutations are a pure function of ``(seed, number of nodes,
    permutation index)`` (a counter-based hash, the same on every device), never of the graph's
    position in the batch or of the other graphs. Graphs of equal size get the same expander.

    Args:
        batch: square `Graph` (a batch or one graph), or PyG's ``batch`` vector [N]. degree: even, >= 2.
        seed: any int. ptr: instead of ``batch``: PyG's ``ptr`` [B+1].
    Returns:
        `Graph` [N, N], sorted, no self-loops, keeping the batch offsets.
    """
    batch = as_batch(batch, "expander", ptr=ptr)
    degree = check_int("expander: degree", degree, 2)
    if degree % 2:
        raise ValueError(f"expander: degree = {degree} must be even (each random permutation adds 2 keys per "
                         "node); Exphormer's exp_deg=d is degree=2*d")
    ptr, sizes = _square_batch(batch, "expander")
    dev = batch.device
    n = batch.num_nodes
    graph_of_node = torch.repeat_interleave(torch.arange(len(sizes), device=dev), sizes)
    local = torch.arange(n, device=dev) - ptr[graph_of_node]
    rows, cols = [], []
    for j in range(degree // 2):
        key = _graph_permutation_keys(sizes, graph_of_node, local, seed, j)
        order = torch.sort(graph_of_node * (MASK32 + 1) + key, stable=True).indices  # sorted within graphs
        rows += [torch.arange(n, device=dev), order]
        cols += [order, torch.arange(n, device=dev)]
    row, col = torch.cat(rows), torch.cat(cols)
    not_loop = row != col
    return csr_from_pairs(row[not_loop], col[not_loop], n, n, ptr=batch.ptr, col_ptr=batch.col_ptr,
                          device=dev)


def virtual_nodes(batch: Graph, num_virtual: int = 1) -> Graph:
    """Global virtual tokens per graph (MPNN + virtual node, Exphormer): a square pattern over
    ``T = N + B * num_virtual`` tokens.

    Token layout: tokens ``0..N-1`` are the real nodes in batch order; token
    ``N + b * num_virtual + v`` is virtual token ``v`` of graph ``b`` (graph-major). Build the token
    features as ``torch.cat([x, virtual_embedding.repeat(B, 1)])`` for a ``virtual_embedding``
    [num_virtual, F]. Entries (both directions):

    - real node i of graph b -> the ``num_virtual`` virtual tokens of graph b (row i has exactly these);
    - virtual token (b, v) -> every real node of graph b and every virtual token of graph b.

    Real nodes get no real keys here: take the `union` with the graph (or `full`) for those. The
    result has no ``ptr`` (its tokens are not contiguous per graph); `virtual_token_graph` gives the
    graph of every token.

    Args:
        batch: square `Graph` with N nodes in B graphs. num_virtual: virtual tokens per graph, >= 1.
    Returns:
        `Graph` [T, T], sorted CSR.
    """
    batch = as_batch(batch, "virtual_nodes")
    num_virtual = check_int("virtual_nodes: num_virtual", num_virtual, 1)
    ptr, sizes = _square_batch(batch, "virtual_nodes")
    dev = batch.device
    n, num_graphs, nv = batch.num_nodes, len(sizes), num_virtual
    total = n + num_graphs * nv
    graph_of_node = torch.repeat_interleave(torch.arange(num_graphs, device=dev), sizes)
    virtual_degree = (sizes + nv).repeat_interleave(nv)  # [B * nv]
    degree = torch.cat([torch.full((n,), nv, device=dev, dtype=torch.long), virtual_degree])
    indptr = torch.zeros(total + 1, dtype=torch.long, device=dev)
    indptr[1:] = torch.cumsum(degree, 0)
    real_keys = (n + graph_of_node * nv)[:, None] + torch.arange(nv, device=dev)  # [N, nv], sorted per row
    vgraph = torch.arange(num_graphs, device=dev).repeat_interleave(nv)  # graph of each virtual row
    within = segment_arange(virtual_degree)  # 0..n_b + nv - 1 per virtual row
    vg = vgraph.repeat_interleave(virtual_degree)
    real_part = within < sizes[vg]
    virtual_keys = torch.where(real_part, ptr[vg] + within, n + vg * nv + (within - sizes[vg]))
    indices = torch.cat([real_keys.reshape(-1), virtual_keys])
    return Graph(indptr, indices, total, validate=False)


def virtual_token_graph(batch: Graph, num_virtual: int = 1) -> Tensor:
    """[N + B * num_virtual] graph index of every token of `virtual_nodes` (same layout)."""
    sizes = graph_offsets(batch)[0].diff()
    graphs = torch.arange(len(sizes), device=batch.device)
    return torch.cat([graphs.repeat_interleave(sizes), graphs.repeat_interleave(num_virtual)])
