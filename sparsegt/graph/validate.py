"""What a `Graph` and the inputs it is built from must satisfy.

Every broken invariant is a ValueError that names it (which index, which tensor, which graph), raised
where the `Graph` is built, not as a crash deep inside a kernel. `validate_graph` checks a built `Graph`
(`Graph.validate`); the small checks before it are shared by the constructors (`core`, `convert`, `batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .core import Graph

__all__ = ["INFERRED_NODES_LIMIT", "inferred_nodes_problem", "validate_graph", "as_count", "as_index_tensor",
           "check_finite", "first_bad"]

# A node count read off the largest index (no ``num_nodes`` given) is believed up to this many nodes, or up to
# 4 per edge when there are more edges: past that, the pattern is almost all isolated nodes, which is a typo or a
# hostile file far more often than a graph, and ``indptr`` alone takes 8 bytes a node (an index of 2**40 would
# ask for 8.8 TB). An explicit ``num_nodes`` is never bounded here.
INFERRED_NODES_LIMIT = 2**24


def inferred_nodes_problem(num_nodes: int, num_edges: int) -> str | None:
    """Why ``num_nodes`` (1 + the largest node id, inferred) is not believed for ``num_edges`` edges, or None.

    See `INFERRED_NODES_LIMIT`; the data readers (`sparsegt.data.user`) apply the same rule to ids read
    from files."""
    limit = max(INFERRED_NODES_LIMIT, 4 * num_edges)
    if num_nodes <= limit:
        return None
    return (f"the largest node id is {num_nodes - 1:,}, so {num_nodes:,} nodes would be allocated for "
            f"{num_edges:,} edges (more than {limit:,}, the most inferred from ids)")


def as_count(value: Any, name: str) -> int:
    """``value`` as a count (a non-negative integer), or a ValueError naming ``name``."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype.is_floating_point:
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def first_bad(mask: Tensor) -> int:
    """The position of the first True of a 1-D ``mask`` (there is one)."""
    return int(mask.nonzero()[0, 0])


def as_index_tensor(value: Any, name: str) -> Tensor:
    """``value`` as an int64 tensor, or a ValueError naming ``name`` when it holds no integers."""
    t = torch.as_tensor(value)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.long()


def check_finite(name: str, t: Tensor) -> None:
    """ValueError naming the first entry of ``t`` that is NaN or infinite (floating tensors only)."""
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        where = ", ".join(str(i) for i in bad)
        raise ValueError(f"{name}[{where}] = {t[tuple(bad)].item()}: features must be finite")


def validate_graph(graph: Graph) -> None:
    """Raise ValueError naming the first broken invariant of ``graph``: ``indptr`` [N+1] and ``indices`` [E]
    int64, ``indptr`` rising from 0 to E, every index in ``[0, num_cols)``; node tensors [N, ...] and edge
    tensors [E, ...] (finite when floating), graph tensors [B, ...]; offsets [B+1] rising from 0 to their total."""
    indptr, indices = graph.indptr, graph.indices
    for name, t in (("indptr", indptr), ("indices", indices)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int64:
            raise ValueError(f"{name} must be int64, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if indptr.numel() < 1:
        raise ValueError("indptr must have at least one entry (num_nodes + 1)")
    if int(indptr[0]) != 0:
        raise ValueError(f"indptr[0] = {int(indptr[0])} but must be 0")
    if int(indptr[-1]) != indices.numel():
        raise ValueError(f"indptr[-1] = {int(indptr[-1])} but indices has {indices.numel()} entries")
    step = indptr.diff()
    if step.numel() and bool((step < 0).any()):
        i = first_bad(step < 0)
        raise ValueError(f"indptr must be non-decreasing: indptr[{i + 1}] = {int(indptr[i + 1])} < "
                         f"indptr[{i}] = {int(indptr[i])}")
    if graph.num_cols < 0:
        raise ValueError(f"num_cols = {graph.num_cols} must be >= 0")
    if indices.numel():
        if bool((indices < 0).any()):
            e = first_bad(indices < 0)
            raise ValueError(f"indices[{e}] = {int(indices[e])} is negative")
        if bool((indices >= graph.num_cols).any()):
            e = first_bad(indices >= graph.num_cols)
            raise ValueError(f"indices[{e}] = {int(indices[e])} but the pattern has {graph.num_cols} columns")
    for store, size, what in ((graph.node_data, graph.num_nodes, "nodes"),
                              (graph.edge_data, graph.num_edges, "edges")):
        for name, t in store.items():
            if not isinstance(t, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() == 0 or t.shape[0] != size:
                raise ValueError(f"{name} has shape {tuple(t.shape)} but the graph has {size} {what}")
            check_finite(name, t)
    for name, t in graph.graph_data.items():
        if t.dim() == 0 or t.shape[0] != graph.num_graphs:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but the batch has {graph.num_graphs} graphs")
    for name, offsets, total in (("ptr", graph.ptr, graph.num_nodes), ("col_ptr", graph.col_ptr, graph.num_cols),
                                 ("edge_ptr", graph.edge_ptr, graph.num_edges)):
        if offsets is None:
            continue
        if offsets.dim() != 1 or offsets.numel() != graph.num_graphs + 1:
            raise ValueError(f"{name} must have num_graphs + 1 = {graph.num_graphs + 1} entries")
        if int(offsets[0]) != 0 or int(offsets[-1]) != total or bool((offsets.diff() < 0).any()):
            raise ValueError(f"{name} must rise from 0 to {total}, got {offsets.tolist()[:8]}...")
