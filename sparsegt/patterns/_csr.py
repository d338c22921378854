"""Internal helpers shared by the pattern builders: (row, col) pairs -> sorted CSR `Graph`, filtering.

Every builder ends here so that every pattern obeys one contract: rows sorted, keys sorted inside a
row, duplicates removed (unless asked otherwise), int64 on the device of its inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph, ptr_from_batch


def csr_from_pairs(row: Tensor, col: Tensor, num_rows: int, num_cols: int, *, dedupe: bool = True,
                   ptr: Tensor | None = None, col_ptr: Tensor | None = None,
                   device: torch.device | None = None, presorted: bool = False) -> Graph:
    """A sorted CSR pattern from [E] query indices ``row`` and key indices ``col``.

    ``ptr``/``col_ptr`` [B+1] make the result a batch (``edge_ptr`` is derived); the caller
    guarantees that no pair crosses graphs. ``presorted``: the caller guarantees the pairs are
    already sorted by (row, col) and unique, which skips the O(E log E) sort.
    """
    device = row.device if device is None else device
    row = row.to(device=device, dtype=torch.long)
    col = col.to(device=device, dtype=torch.long)
    if row.numel() and not presorted:
        key = row * max(num_cols, 1) + col
        key = torch.unique(key) if dedupe else torch.sort(key).values
        row = torch.div(key, max(num_cols, 1), rounding_mode="floor")
        col = key - row * max(num_cols, 1)
    indptr = torch.zeros(num_rows + 1, dtype=torch.long, device=device)
    if row.numel():
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return finish(indptr, col.contiguous(), num_cols, ptr, col_ptr)


def finish(indptr: Tensor, indices: Tensor, num_cols: int, ptr: Tensor | None, col_ptr: Tensor | None,
           edge_data: dict[str, Tensor] | None = None) -> Graph:
    """Wrap CSR arrays in a Graph; a batch gets ``edge_ptr = indptr[ptr]``."""
    if ptr is not None:
        ptr = ptr.to(indptr.device)
        col_ptr = ptr if col_ptr is None else col_ptr.to(indptr.device)
        edge_ptr = indptr[ptr]
    else:
        col_ptr = edge_ptr = None
    return Graph(indptr, indices, num_cols, edge_data=edge_data, ptr=ptr, col_ptr=col_ptr, edge_ptr=edge_ptr,
                 validate=False)


def filter_edges(pattern: Graph, keep: Tensor, keep_batch: bool = True) -> Graph:
    """The sub-pattern of the entries where ``keep`` [E] is True; edge tensors follow their entries."""
    row = pattern.row_index()[keep]
    indptr = torch.zeros(pattern.num_nodes + 1, dtype=torch.long, device=pattern.device)
    if row.numel():
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=pattern.num_nodes), 0)
    edge_data = {name: t[keep] for name, t in pattern.edge_data.items()}
    ptr = pattern.ptr if keep_batch else None
    return finish(indptr, pattern.indices[keep].contiguous(), pattern.num_cols, ptr,
                  pattern.col_ptr if keep_batch else None, edge_data)


def graph_offsets(pattern: Graph) -> tuple[Tensor, Tensor]:
    """``(ptr, col_ptr)`` of a batch; a non-batched pattern is one graph."""
    dev = pattern.device
    ptr = pattern.ptr if pattern.ptr is not None else torch.tensor([0, pattern.num_nodes], device=dev)
    if pattern.col_ptr is not None:
        col_ptr = pattern.col_ptr
    elif pattern.ptr is None:
        col_ptr = torch.tensor([0, pattern.num_cols], device=dev)
    else:
        col_ptr = ptr
    return ptr.to(dev), col_ptr.to(dev)


def segment_arange(counts: Tensor) -> Tensor:
    """[sum(counts)] 0..c-1 for each count c, concatenated (vectorised)."""
    total = int(counts.sum()) if counts.numel() else 0
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=counts.device)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value.__index__())
    if value < minimum:
        raise ValueError(f"{name} = {value} must be >= {minimum}")
    return value


def as_batch(value: Graph | Tensor | None, name: str, *, batch: Tensor | None = None, ptr: Tensor | None = None,
             num_nodes: int | None = None, needs_edges: bool = False) -> Graph:
    """The `Graph` a pattern builder works on, from a `Graph` or from PyG's tensors.

    ``value`` is a `Graph` (returned as it is), or PyG's ``edge_index`` [2, E] with ``batch`` [N] (the graph
    of every node) or ``ptr`` [B+1] (neither: one graph), or, for a builder that needs only the graphs' node
    ranges (``needs_edges=False``: `full`, `expander`), PyG's ``batch`` vector [N] itself or None with
    ``ptr`` [B+1]. ``num_nodes`` defaults to what ``ptr``/``batch`` say, else 1 + the largest index.
    """
    if isinstance(value, Graph):
        if batch is not None or ptr is not None or num_nodes is not None:
            raise ValueError(f"{name}: got a Graph and PyG's batch/ptr/num_nodes; the Graph already says "
                             "which nodes form each graph (pass one or the other)")
        return value
    if value is not None and not isinstance(value, Tensor):
        raise ValueError(f"{name}: expected a sparsegt.Graph or PyG tensors, got {type(value).__name__}")
    edge_index = value if value is not None and value.dim() == 2 else None
    if value is not None and edge_index is None:  # a 1-D tensor: PyG's batch vector
        if needs_edges:
            raise ValueError(f"{name} needs the edges: pass a Graph or edge_index [2, E] (with batch= or ptr=), "
                             f"got a tensor of shape {tuple(value.shape)}")
        if batch is not None:
            raise ValueError(f"{name}: the batch vector was given twice (positionally and as batch=)")
        batch = value
    if edge_index is None and needs_edges:
        raise ValueError(f"{name} needs the edges: pass a Graph or edge_index [2, E] (with batch= or ptr=)")
    if batch is not None and ptr is not None:
        raise ValueError(f"{name}: pass batch [N] or ptr [B+1], not both")
    if batch is not None:
        ptr = ptr_from_batch(batch, num_nodes=num_nodes)
    if ptr is not None:
        ptr = torch.as_tensor(ptr, dtype=torch.long)
        num_nodes = int(ptr[-1]) if num_nodes is None else num_nodes
    if edge_index is None:
        if num_nodes is None:
            raise ValueError(f"{name}: pass a Graph, PyG's batch vector [N], or ptr [B+1]")
        return Graph.empty(num_nodes, ptr=ptr)
    graph = Graph.from_edge_index(edge_index, num_nodes, ptr=ptr)
    if ptr is not None and graph.num_edges:
        graph_of_node = graph.batch_index
        crossing = graph_of_node[graph.row_index()] != graph_of_node[graph.indices]
        if bool(crossing.any()):
            e = int(crossing.nonzero()[0, 0])
            query, key = int(graph.row_index()[e]), int(graph.indices[e])
            raise ValueError(f"{name}: edge ({key} -> {query}) joins graph {int(graph_of_node[key])} and graph "
                             f"{int(graph_of_node[query])}; edges must stay inside their graph")
    return graph
