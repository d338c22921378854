"""GatedGCN with edge features (Bresson & Laurent, 2017; the Benchmarking-GNNs / GraphGPS version).

For an edge e = (i <- j) (query i aggregates key j)::

    ê_ij  = D h_i + E h_j + C e_ij
    σ_ij  = sigmoid(ê_ij)
    h_i'  = A h_i + (sum_j σ_ij ⊙ B h_j) / (sum_j σ_ij + 1e-6)
    h_out = h + Dropout(ReLU(BN(h')))          e_out = e + Dropout(ReLU(BN(ê)))

With ``edge_scale`` r [E, 1] (EquivStableLapPE's gate, `sparsegt.nn.ExphormerLayer`), ``σ_ij`` becomes
``r_ij σ_ij`` in both sums (ê, the new edge state, is not scaled).

Shapes: ``x`` [N, C], ``edge_attr`` [E, C] in CSR order (None: zeros, i.e. GraphGPS's constant
"dummy" edge embedding absorbed into C's bias). The layer updates edge states, so it returns both.

On CPU (float32/64) the gated aggregation runs in fused numba kernels (`gatedgcn_kernels`): one pass
over each row instead of six [E, C] tensors; elsewhere it runs on torch gathers and segment sums (memory:
a few [E, C] tensors kept for the backward). `PATHS` lists the two in the order they are tried, as the
attention backends (`sparsegt.attention.backend.first_runnable`). The tail of both updates, BN, ReLU and
residual, runs as `batch_norm_relu` (two fused passes each way on CPU) when dropout is off (the PATTERN
presets; the CLUSTER ones train with dropout 0.1 and keep torch's ops).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.api import HALF_DTYPES
from ..attention.backend import first_runnable
from ..attention.numba_runtime import (
    DynamicSchedule,
    flat,
    numba_cpu_reasons,
    numba_threads,
    numpy_float,
    row_chunks,
    thread_count,
)
from ..graph import Graph
from . import gatedgcn_kernels as kernels
from .batch_norm_relu import batch_norm_relu
from .renamed import renamed_keywords
from .segment import gather_keys, gather_queries, segment_sum

__all__ = ["GatedGCNConv", "gated_aggregation", "gated_aggregation_torch"]

PARALLEL_MIN_WORK = 1 << 18  # E * C below which one thread beats waking a second one
CHUNKS_PER_THREAD = 4  # handed out one at a time: a slow or shared core does not hold the others up


def _chunks(indptr: Tensor, threads: int) -> np.ndarray:
    """Row bounds for a kernel on ``threads`` threads: one chunk, or 4 a thread handed out one at a time."""
    return row_chunks(indptr.contiguous().numpy(), threads * CHUNKS_PER_THREAD if threads > 1 else 1)


class _GatedAggregation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d, e, b, c, scale, graph):  # type: ignore[override]
        d2, e2, b2, c2 = flat(d), flat(e), flat(b), flat(c)
        has_scale = scale is not None
        r = scale.detach().contiguous().view(-1) if has_scale else d2.new_ones(1)
        edge_hat = torch.empty((graph.num_edges, d2.shape[1]), dtype=d.dtype)
        agg, den = torch.empty_like(d2), torch.empty_like(d2)
        per_edge = c2.shape[0] == graph.num_edges
        one = numpy_float(d.dtype)(1.0)
        threads = thread_count(edge_hat.numel(), PARALLEL_MIN_WORK)
        with numba_threads(threads), DynamicSchedule():
            kernels.gated_forward(graph.indptr.contiguous().numpy(), graph.indices.contiguous().numpy(),
                                  _chunks(graph.indptr, threads), d2.numpy(), e2.numpy(), b2.numpy(),
                                  c2.numpy(), per_edge, r.numpy(), has_scale, one, edge_hat.numpy(), agg.numpy(),
                                  den.numpy())
        ctx.graph, ctx.per_edge, ctx.has_scale = graph, per_edge, has_scale
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not an [E, C] of zeros
        ctx.save_for_backward(b2, r, edge_hat, agg, den)
        return edge_hat, agg

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hat, grad_agg):  # type: ignore[override]
        b2, r, edge_hat, agg, den = ctx.saved_tensors
        graph: Graph = ctx.graph
        grad_agg = torch.zeros_like(agg) if grad_agg is None else flat(grad_agg)
        has_grad_hat = grad_hat is not None
        grad_hat = grad_agg.new_zeros(1, 1) if grad_hat is None else flat(grad_hat)
        grad_edge, grad_d = torch.empty_like(edge_hat), torch.empty_like(agg)
        grad_num, grad_e, grad_b = torch.empty_like(agg), torch.empty_like(b2), torch.empty_like(b2)  # e, b: [Nk, C]
        grad_scale = torch.empty_like(r) if ctx.has_scale else r.new_empty(1)
        col_indptr, row_indices, edge_id = graph.csc()
        one = numpy_float(b2.dtype)(1.0)
        threads = thread_count(edge_hat.numel(), PARALLEL_MIN_WORK)
        with numba_threads(threads), DynamicSchedule():
            kernels.gated_backward_rows(graph.indptr.contiguous().numpy(), graph.indices.contiguous().numpy(),
                                        _chunks(graph.indptr, threads), b2.numpy(), edge_hat.numpy(),
                                        agg.numpy(), den.numpy(), grad_agg.numpy(), grad_hat.numpy(), has_grad_hat,
                                        r.numpy(), ctx.has_scale, one, grad_edge.numpy(), grad_d.numpy(),
                                        grad_num.numpy(), grad_scale.numpy())
            kernels.gated_backward_keys(col_indptr.contiguous().numpy(), row_indices.contiguous().numpy(),
                                        edge_id.contiguous().numpy(), _chunks(col_indptr, threads),
                                        edge_hat.numpy(), grad_num.numpy(), grad_edge.numpy(), r.numpy(),
                                        ctx.has_scale, one, grad_e.numpy(), grad_b.numpy())
        grad_c = None
        if ctx.needs_input_grad[3]:
            grad_c = grad_edge if ctx.per_edge else grad_edge.sum(0, keepdim=True)
        return grad_d, grad_e, grad_b, grad_c, grad_scale.view(-1, 1) if ctx.has_scale else None, None


def gated_aggregation(graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
                      scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """GatedGCN's gated sum: ``ê_t = d_i + e_j + c_t``, ``agg_i = sum_t r_t σ(ê_t) b_j / (sum_t r_t σ(ê_t) +
    1e-6)`` over the edges t = (i <- j) of each row.

    Args:
        graph: N rows, Nk columns, E edges. d: [N, C]. e, b: [Nk, C]. c: [E, C] or [1, C] (one row for
            every edge). scale: r [E, 1], a gate on every edge's σ, or None (r = 1).
    Returns: ``(edge_hat [E, C], agg [N, C])``. Half-precision CPU inputs (bfloat16 autocast,
    ``train.precision=bf16``) are computed by the float32 kernels, as the attention's are, and give float32.
    """
    rows = {"d": graph.num_nodes, "e": graph.num_cols, "b": graph.num_cols}
    for name, t in (("d", d), ("e", e), ("b", b)):
        if t.dim() != 2 or t.shape[0] != rows[name] or t.shape[1] != d.shape[-1]:
            raise ValueError(f"{name} must have shape [{rows[name]}, C] (C = {d.shape[-1]}, the width of d), "
                             f"got {tuple(t.shape)}")
    if c.dim() != 2 or c.shape[0] not in (1, graph.num_edges) or c.shape[1] != d.shape[1]:
        raise ValueError(f"c must have shape [E, C] = [{graph.num_edges}, {d.shape[1]}] or [1, {d.shape[1]}], "
                         f"got {tuple(c.shape)}")
    if scale is not None and tuple(scale.shape) != (graph.num_edges, 1):
        raise ValueError(f"scale must have shape [E, 1] = [{graph.num_edges}, 1], got {tuple(scale.shape)}")
    if d.device.type == "cpu" and any(t.dtype in HALF_DTYPES for t in (d, e, b, c)):
        d, e, b, c = (t.float() for t in (d, e, b, c))  # upcast copies; the torch path in bfloat16 is far slower
        scale = None if scale is None else scale.float()
    return first_runnable(PATHS, graph, d, e, b, c, scale).run(graph, d, e, b, c, scale)


def gated_aggregation_torch(graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
                            scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`gated_aggregation` on torch gathers and segment sums (any device; the reference of the kernels).
    ``scale``: [E, 1] or [E, C] factor on σ in both sums, or None."""
    edge_hat = gather_queries(graph, d) + gather_keys(graph, e) + c
    sigma = torch.sigmoid(edge_hat)
    if scale is not None:
        sigma = sigma * scale.to(sigma.dtype)
    numerator = segment_sum(graph, sigma * gather_keys(graph, b))
    denominator = segment_sum(graph, sigma)
    return edge_hat, numerator / (denominator + kernels.EPS)


class _NumbaPath:
    """The fused numba kernels: CPU tensors of one dtype, float32 or float64."""

    name = "numba"

    def unsupported_reasons(self, graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
                            scale: Tensor | None = None) -> list[str]:
        return numba_cpu_reasons(d=d, e=e, b=b, c=c, scale=scale)

    def run(self, graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
            scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return _GatedAggregation.apply(d, e, b, c, scale, graph)


class _TorchPath:
    """`gated_aggregation_torch`: any device and dtype (the GPU route). Memory: besides ê [E, C] (an output),
    autograd keeps σ [E, C] and the gathered B h_j [E, C] for the backward, and the forward holds the
    product σ B h_j [E, C] for a moment: about three [E, C] tensors more than the fused kernels."""

    name = "torch"

    def unsupported_reasons(self, graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
                            scale: Tensor | None = None) -> list[str]:
        return []

    def run(self, graph: Graph, d: Tensor, e: Tensor, b: Tensor, c: Tensor,
            scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return gated_aggregation_torch(graph, d, e, b, c, scale)


PATHS = (_NumbaPath(), _TorchPath())  # tried in this order by `gated_aggregation`


class GatedGCNConv(nn.Module):
    """GatedGCN layer (residual, BatchNorm, ReLU and dropout inside, as in GraphGPS).

    Args:
        hidden: C (nodes and edges). dropout: on both outputs. norm: ``"batch"``: BatchNorm on both
            outputs (GraphGPS); anything else: none inside (the layer around it normalises).
        residual: add the inputs to the outputs.
    """

    accepts_edge_scale = True  # forward(..., edge_scale=): EquivStableLapPE's gate (ExphormerLayer)

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, dropout: float = 0.0, norm: str = "batch",
                 residual: bool = True) -> None:
        super().__init__()
        self.hidden, self.residual = hidden, residual
        self.node_lin = nn.Linear(hidden, 4 * hidden)  # A, B, D, E stacked
        self.edge_lin = nn.Linear(hidden, hidden)      # C
        self.norm_x = nn.BatchNorm1d(hidden) if norm == "batch" else nn.Identity()
        self.norm_e = nn.BatchNorm1d(hidden) if norm == "batch" else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    @property
    def channels(self) -> int:
        """Deprecated: the old name of ``hidden``."""
        warnings.warn(f"{type(self).__name__}.channels is deprecated and will be removed in the next release; "
                      "use .hidden", DeprecationWarning, stacklevel=2)
        return self.hidden

    def reset_parameters(self) -> None:
        for module in (self.node_lin, self.edge_lin, self.norm_x, self.norm_e):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None,
                edge_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [N, C], edge_attr [E, C] or None, edge_scale [E, 1] or None (a factor on the gates σ) ->
        (x [N, C], edge_attr [E, C])."""
        a, b, d, e = self.node_lin(x).chunk(4, dim=-1)
        # C e + C's bias: the bias joins d (d_i + e_j + C e_t + bias), an [N, C] add instead of an [E, C] one
        d = d + self.edge_lin.bias.to(d.dtype)  # (autocast: d is bfloat16, the bias float32)
        if edge_attr is None:  # no edge features: C e = C 0 = 0 (the bias is in d)
            c = d.new_zeros(1, self.hidden)
        else:  # (a DummyEdge embedding is one row expanded to every edge: C e once)
            c = nn.functional.linear(edge_attr[:1] if edge_attr.stride(0) == 0 else edge_attr, self.edge_lin.weight)
        edge_hat, aggregated = gated_aggregation(graph, d, e, b, c, edge_scale)
        x_new = self._finish(a + aggregated, self.norm_x, x if self.residual else None)
        e_new = self._finish(edge_hat, self.norm_e, edge_attr if self.residual else None)
        return x_new, e_new

    def _finish(self, h: Tensor, norm: nn.Module, skip: Tensor | None) -> Tensor:
        """``skip + Dropout(ReLU(norm(h)))`` (``skip`` None: without it): fused with BatchNorm and no dropout."""
        if isinstance(norm, nn.BatchNorm1d) and not (self.training and self.dropout.p > 0):
            return batch_norm_relu(h, norm, skip)
        out = self.dropout(torch.relu(norm(h)))
        return out if skip is None else skip + out
