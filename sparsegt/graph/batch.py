"""Batching: a batch is the disjoint union of graphs, without padding.

The graphs' rows, columns and edges follow each other; ``ptr``, ``col_ptr`` and ``edge_ptr`` [B+1] hold the
node, key and edge offsets of each graph, and ``batch_index`` [N] (PyG's ``batch``) the graph of every node.
`Batching` is `Graph`'s share of this module (`Graph.batch`, `Graph.unbatch`); `ptr_from_batch` reads PyG's
``batch`` vector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .validate import as_index_tensor, first_bad

if TYPE_CHECKING:
    from .core import Graph

__all__ = ["Batching", "ptr_from_batch"]


class Batching:
    """Batch and unbatch `Graph`s (mixed into `Graph`, whose fields these methods read)."""

    indptr: Tensor
    indices: Tensor
    num_nodes: int
    num_cols: int
    ptr: Tensor | None
    col_ptr: Tensor | None
    edge_ptr: Tensor | None
    node_data: dict[str, Tensor]
    edge_data: dict[str, Tensor]
    graph_data: dict[str, Tensor]
    device: torch.device
    num_graphs: int
    plan: Callable[..., Any]

    @property
    def batch_index(self) -> Tensor:
        """[N] index of the graph each node (row) belongs to (PyG's ``batch`` vector)."""
        def build() -> Tensor:
            ptr = self._ptr_or_single()
            counts = ptr[1:] - ptr[:-1]
            return torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts,
                                           output_size=self.num_nodes)

        return self.plan("batch_index", build)

    def _ptr_or_single(self) -> Tensor:
        """[B+1] node offsets; [0, N] for a single graph."""
        if self.ptr is not None:
            return self.ptr
        return torch.tensor([0, self.num_nodes], device=self.device)

    @classmethod
    def batch(cls, graphs: Sequence[Graph]) -> Graph:
        """Disjoint union of graphs (no padding). Every graph must carry the same named tensors."""
        if len(graphs) == 0:
            raise ValueError("Graph.batch needs at least one graph")
        keys = [(sorted(g.node_data), sorted(g.edge_data), sorted(g.graph_data)) for g in graphs]
        for i, k in enumerate(keys):
            if k != keys[0]:
                raise ValueError(f"graph {i} carries tensors {k} but graph 0 carries {keys[0]}; "
                                 "every graph in a batch needs the same fields")
        dev = graphs[0].device
        node_counts = torch.tensor([g.num_nodes for g in graphs], device=dev)
        col_counts = torch.tensor([g.num_cols for g in graphs], device=dev)
        edge_counts = torch.tensor([g.num_edges for g in graphs], device=dev)
        offsets = lambda c: torch.cat([c.new_zeros(1), torch.cumsum(c, 0)])
        ptr, col_ptr, edge_ptr = offsets(node_counts), offsets(col_counts), offsets(edge_counts)
        indices = torch.cat([g.indices + col_ptr[i] for i, g in enumerate(graphs)])
        indptr = torch.cat([graphs[0].indptr[:1]] + [g.indptr[1:] + edge_ptr[i] for i, g in enumerate(graphs)])
        cat = lambda store: {name: torch.cat([getattr(g, store)[name] for g in graphs])
                             for name in getattr(graphs[0], store)}
        return cls(indptr, indices, int(col_ptr[-1]), node_data=cat("node_data"), edge_data=cat("edge_data"),
                     graph_data=cat("graph_data"), ptr=ptr, col_ptr=col_ptr, edge_ptr=edge_ptr,
                     validate=False)

    def unbatch(self) -> list[Graph]:
        """Split a batch back into its graphs."""
        ptr = self._ptr_or_single().tolist()
        col_ptr = (self.col_ptr if self.col_ptr is not None else torch.tensor([0, self.num_cols])).tolist()
        edge_ptr = (self.edge_ptr if self.edge_ptr is not None else
                    self.indptr[self._ptr_or_single()]).tolist()
        out = []
        for b in range(self.num_graphs):
            n0, n1, c0, c1, e0, e1 = ptr[b], ptr[b + 1], col_ptr[b], col_ptr[b + 1], edge_ptr[b], edge_ptr[b + 1]
            out.append(type(self)(self.indptr[n0:n1 + 1] - e0, self.indices[e0:e1] - c0, c1 - c0,
                             node_data={k: t[n0:n1] for k, t in self.node_data.items()},
                             edge_data={k: t[e0:e1] for k, t in self.edge_data.items()},
                             graph_data={k: t[b:b + 1] for k, t in self.graph_data.items()}, validate=False))
        return out


def ptr_from_batch(batch: Any, num_graphs: int | None = None, num_nodes: int | None = None) -> Tensor:
    """[B+1] node offsets of the graphs of a batch from PyG's ``batch`` vector [N] (graph of every node).

    The nodes of a graph must be contiguous and the graphs in order (as PyG batches are). ``num_graphs``
    (default: 1 + the largest entry) keeps trailing empty graphs; ``num_nodes`` checks the length.
    """
    batch = as_index_tensor(batch, "batch")
    if batch.dim() != 1:
        raise ValueError(f"batch must be 1-D [N] (the graph of every node), got shape {tuple(batch.shape)}")
    if num_nodes is not None and batch.numel() != num_nodes:
        raise ValueError(f"batch has {batch.numel()} entries but there are {num_nodes} nodes")
    if batch.numel():
        if bool((batch < 0).any()):
            i = first_bad(batch < 0)
            raise ValueError(f"batch[{i}] = {int(batch[i])} is negative")
        step = batch.diff()
        if bool((step < 0).any()):
            i = first_bad(step < 0)
            raise ValueError(f"batch must be sorted (the nodes of each graph contiguous, graphs in order): "
                             f"batch[{i + 1}] = {int(batch[i + 1])} < batch[{i}] = {int(batch[i])}")
    largest = int(batch[-1]) + 1 if batch.numel() else 0
    num_graphs = largest if num_graphs is None else int(num_graphs)
    if num_graphs < largest:
        raise ValueError(f"num_graphs = {num_graphs} but batch names graph {largest - 1}")
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    ptr[1:] = torch.cumsum(torch.bincount(batch, minlength=num_graphs), 0)
    return ptr
