"""Reductions over the rows of a CSR pattern: the message-passing primitives every layer shares.

Message passing on a `Graph` is three moves: gather key (source) rows onto edges, compute per-edge
messages, and sum each query row's messages. Doing the sums as a CSR sparse-matrix product (instead
of ``index_add_``) keeps them fast on CPU: ``torch.sparse.mm`` with a CSR operand walks rows without
atomics. Backward passes use the transposed operand built from ``Graph.csc()``, so no autograd
support for sparse tensors is needed. Under ``torch.compile`` (which does not trace sparse tensors) the
sums are ``index_add`` over ``Graph.row_index()`` and the gathers plain ``index_select``, which the compiler
fuses with the message computation.

- ``neighbour_sum(graph, x, edge_weight=None)``: ``out[i] = sum_{e=(i,j)} w_e x[j]`` ([Nk, *F] -> [N, *F]);
- ``segment_sum(graph, values)``: ``out[i] = sum_{e in row i} values[e]`` ([E, *F] -> [N, *F]);
- ``segment_softmax(graph, scores)``: softmax of [E, H] scores over each row's edges;
- ``gather_keys(graph, x)`` = ``x[graph.indices]`` ([Nk, *F] -> [E, *F]) and ``gather_queries``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..graph import Graph

__all__ = ["neighbour_sum", "segment_sum", "segment_mean", "segment_softmax", "gather_keys", "gather_queries",
           "edge_positions"]


def _csr(indptr: Tensor, indices: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta" is noise here
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)


def _matmul(matrix: Tensor, dense: Tensor) -> Tensor:
    """CSR [R, C] @ dense [C, *F] -> [R, *F]."""
    if dense.numel() == 0 or matrix.shape[0] == 0:
        return dense.new_zeros((matrix.shape[0], *dense.shape[1:]))
    flat = dense.reshape(dense.shape[0], -1)
    if dense.dtype in (torch.bfloat16, torch.float16) and dense.device.type == "cpu":
        # CPU sparse products have no half-precision kernels (autocast): sum in float32, return the input dtype
        with torch.autocast("cpu", enabled=False):  # else autocast casts the operands back to bf16
            out = torch.sparse.mm(matrix.to(torch.float32), flat.float().contiguous()).to(dense.dtype)
    else:
        out = torch.sparse.mm(matrix, flat.contiguous())
    return out.reshape(matrix.shape[0], *dense.shape[1:])


class _NeighbourSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, graph: Graph) -> Tensor:  # type: ignore[override]
        ctx.graph = graph
        ctx.save_for_backward(x, weight)
        matrix = _csr(graph.indptr, graph.indices, weight, (graph.num_nodes, graph.num_cols))
        return _matmul(matrix, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        graph: Graph = ctx.graph
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            col_indptr, rows, edge_id = graph.csc()
            transposed = _csr(col_indptr, rows, weight[edge_id], (graph.num_cols, graph.num_nodes))
            grad_x = _matmul(transposed, grad)
        if ctx.needs_input_grad[1]:
            grad_w = (grad.index_select(0, graph.row_index()) * x.index_select(0, graph.indices))
            grad_w = grad_w.reshape(graph.num_edges, -1).sum(1)
        return grad_x, grad_w, None


def neighbour_sum(graph: Graph, x: Tensor, edge_weight: Tensor | None = None) -> Tensor:
    """``out[i] = sum_{e=(i,j)} edge_weight[e] * x[j]``.

    Args:
        graph: pattern with N rows and Nk columns. x: [Nk, *F]. edge_weight: [E] (ones if None).
    Returns: [N, *F].
    """
    if x.shape[0] != graph.num_cols:
        raise ValueError(f"x has {x.shape[0]} rows but the graph has {graph.num_cols} columns (keys)")
    if edge_weight is None:
        edge_weight = x.new_ones(graph.num_edges)
    elif edge_weight.shape != (graph.num_edges,):
        raise ValueError(f"edge_weight must have shape [E] = [{graph.num_edges}], "
                         f"got {tuple(edge_weight.shape)}")
    if torch.compiler.is_compiling():
        messages = x.index_select(0, graph.indices) * edge_weight.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return _index_sum(graph, messages)
    return _NeighbourSum.apply(x, edge_weight.to(x.dtype), graph)


def _index_sum(graph: Graph, values: Tensor) -> Tensor:
    """``segment_sum`` by ``index_add`` (the compiled route)."""
    out = values.new_zeros((graph.num_nodes, *values.shape[1:]))
    return out.index_add(0, graph.row_index(), values)


class _SegmentSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, graph: Graph) -> Tensor:  # type: ignore[override]
        ctx.graph = graph
        E = graph.num_edges
        matrix = _csr(graph.indptr, torch.arange(E, device=values.device), values.new_ones(E),
                      (graph.num_nodes, E))
        return _matmul(matrix, values)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad.index_select(0, ctx.graph.row_index()), None


def segment_sum(graph: Graph, values: Tensor) -> Tensor:
    """Sum of per-edge ``values`` [E, *F] over each row: [N, *F]."""
    if values.shape[0] != graph.num_edges:
        raise ValueError(f"values has {values.shape[0]} rows but the graph has {graph.num_edges} edges")
    if torch.compiler.is_compiling():
        return _index_sum(graph, values)
    return _SegmentSum.apply(values, graph)


def segment_mean(graph: Graph, values: Tensor) -> Tensor:
    """Mean of per-edge ``values`` [E, *F] over each row (zero on rows without edges): [N, *F]."""
    degree = graph.degree().clamp_min(1).to(values.dtype)
    return segment_sum(graph, values) / degree.view(-1, *([1] * (values.dim() - 1)))


class _GatherKeys(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, graph: Graph) -> Tensor:  # type: ignore[override]
        ctx.graph = graph
        return x.index_select(0, graph.indices)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        graph: Graph = ctx.graph
        col_indptr, _, edge_id = graph.csc()
        matrix = _csr(col_indptr, edge_id, grad.new_ones(graph.num_edges), (graph.num_cols, graph.num_edges))
        return _matmul(matrix, grad), None


def gather_keys(graph: Graph, x: Tensor) -> Tensor:
    """``x[graph.indices]``: the key (source) row of every edge, [Nk, *F] -> [E, *F]."""
    if torch.compiler.is_compiling():
        return x.index_select(0, graph.indices)
    return _GatherKeys.apply(x, graph)


def gather_queries(graph: Graph, x: Tensor) -> Tensor:
    """``x[row]``: the query (target) row of every edge, [N, *F] -> [E, *F]."""
    if torch.compiler.is_compiling():
        return x.index_select(0, graph.row_index())
    return _GatherQueries.apply(x, graph)


class _GatherQueries(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, graph: Graph) -> Tensor:  # type: ignore[override]
        ctx.graph = graph
        return x.index_select(0, graph.row_index())

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return segment_sum(ctx.graph, grad), None


def segment_softmax(graph: Graph, scores: Tensor) -> Tensor:
    """Softmax of ``scores`` [E, H] over the edges of each row (rows without edges have none).

    Returns [E, H] weights summing to one on every non-empty row.
    """
    row = graph.row_index()
    num_rows = graph.num_nodes
    row_max = scores.new_full((num_rows, *scores.shape[1:]), -torch.inf)
    index = row.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    row_max = row_max.scatter_reduce(0, index, scores.detach(), "amax")
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weight = torch.exp(scores - row_max.index_select(0, row))
    denom = segment_sum(graph, weight)
    return weight / gather_queries(graph, denom).clamp_min(torch.finfo(scores.dtype).tiny)


def edge_positions(pattern: Graph, subset: Graph) -> Tensor:
    """[E_subset] position in ``pattern``'s CSR order of every entry of ``subset`` (same shape).

    ``pattern`` must be sorted within rows (every `sparsegt.patterns` result is) and contain every
    entry of ``subset``; a missing entry is a ValueError.
    """
    if (pattern.num_nodes, pattern.num_cols) != (subset.num_nodes, subset.num_cols):
        raise ValueError(f"subset has shape [{subset.num_nodes}, {subset.num_cols}] but the pattern has "
                         f"[{pattern.num_nodes}, {pattern.num_cols}]")
    width = max(pattern.num_cols, 1)
    keys = pattern.row_index() * width + pattern.indices
    wanted = subset.row_index() * width + subset.indices
    position = torch.searchsorted(keys, wanted).clamp_max(max(pattern.num_edges - 1, 0))
    if wanted.numel() and (pattern.num_edges == 0 or not bool((keys[position] == wanted).all())):
        raise ValueError("edge_positions: subset has entries the pattern lacks "
                         "(or the pattern is not sorted)")
    return position
