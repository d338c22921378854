"""The `ranges` backend of `sparse_attention`: patterns whose every row is a run of consecutive keys.

Full attention per graph of a batch (`patterns.full`), sliding windows, causal windows, block diagonals
and bands: in all of them row i attends keys ``lo_i, lo_i + 1, ..., lo_i + n_i - 1``. Then a row's keys
are one contiguous slice of a transposed key matrix, and the kernels (`range_kernels`) run every inner
loop over the keys of a row with the keys in SIMD lanes, with no gather per edge. Where the per-edge CPU
kernel spends its time waiting on gathered rows and on scalar ``exp``, this one streams.

Same contract as the CPU kernel: ``out`` and ``lse``, bias [E, H], the counter-based dropout mask of
`dropout.keep_mask` bit for bit, every gradient (``dlse`` too), float32 and float64. Extra memory: the
transposed copies of k and v, and in the backward a scratch of about [Nk, H*(D+Dv)] for the key and
value gradients. Not supported: a ``gate`` and patterns that are not runs (ValueError; ``backend="auto"``
checks `is_runs` and sends such calls to the CPU kernel).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from ..graph import Graph
from . import numba_runtime as rt
from . import range_kernels as kern
from .backend import AttentionInputs, Backend, Support, unsupported_error
from .cpu import _dropout_args
from .row_stats import RowStats

__all__ = ["ranges_attention", "is_runs", "RANGES"]

CHUNK_WORK = 1 << 14  # entries per chunk of rows (before the per-row cost): ~20 chunks for 32 PATTERN graphs
PARALLEL_MIN_WORK = 1 << 19  # E * H * (D + Dv) below which one thread is faster than two
# auto uses this kernel (keys in SIMD lanes) when heads are narrow and runs long enough to fill the lanes;
# with wider heads the per-edge kernel's loops over D already fill them
AUTO_MAX_HEAD_DIM = 32
AUTO_MIN_MEAN_DEGREE = 32


class RunPlan(NamedTuple):
    """The work plan of the ranges kernels for a pattern of runs (the pattern's plan ``"run_plan"``):
    ``lo`` [N] (first key of each row), chunks of rows ``chunk_ptr`` with their column spans
    ``span_lo``/``span_hi`` and scratch offsets ``part_ptr`` (`range_kernels.plan_runs`), and the
    longest row ``max_len`` (at least 1)."""

    lo: np.ndarray
    chunk_ptr: np.ndarray
    span_lo: np.ndarray
    span_hi: np.ndarray
    part_ptr: np.ndarray
    max_len: int


def _runs(pattern: Graph) -> np.ndarray:
    """``lo`` [N] of `range_kernels.row_runs` (empty if the pattern is not runs): the pattern's plan ``"runs"``."""
    return pattern.plan("runs", lambda: kern.row_runs(pattern.indptr.contiguous().numpy(),
                                                      pattern.indices.contiguous().numpy()))


def is_runs(pattern: Graph) -> bool:
    """True when every row's keys are consecutive and increasing (``lo, lo+1, ..., lo+n-1``)."""
    return pattern.device.type == "cpu" and (pattern.num_nodes == 0 or _runs(pattern).shape[0] > 0)


def _plan(pattern: Graph) -> RunPlan:
    """The pattern's plan ``"run_plan"``."""
    def build() -> RunPlan:
        indptr = pattern.indptr.contiguous().numpy()
        lo = _runs(pattern)
        mean_len = pattern.num_edges / max(1, pattern.num_nodes)
        # rows per chunk >= 4 run lengths, so the chunks' column spans overlap little (bounded scratch)
        chunk_work = max(CHUNK_WORK, int(4 * mean_len * mean_len))
        plan = kern.plan_runs(indptr, lo, chunk_work)
        max_len = int(np.max(np.diff(indptr), initial=0))
        return RunPlan(lo, *plan, max(1, max_len))

    return pattern.plan("run_plan", build)


def _keys_first(t: Tensor) -> Tensor:
    """[N, H, X] -> contiguous [H*X, N]."""
    return t.detach().reshape(t.shape[0], t.shape[1] * t.shape[2]).t().contiguous()


class _RangesAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, pattern, scale, dropout_p, dropout_seed, score_clamp=None):
        num_rows, num_heads, vdim = q.shape[0], q.shape[1], v.shape[2]
        np_dtype = rt.numpy_float(q.dtype)
        threads = rt.thread_count(pattern.num_edges * num_heads * (q.shape[2] + vdim), PARALLEL_MIN_WORK)
        lo, chunk_ptr, span_lo, span_hi, part_ptr, max_len = _plan(pattern)
        q2, kt, vt = rt.flat(q), _keys_first(k), _keys_first(v)
        bias_t = torch.zeros((1, 1), dtype=q.dtype) if bias is None else bias.detach().t().contiguous()
        use_dropout, keep_t, keep_scale = _dropout_args(dropout_p, dropout_seed, pattern.num_edges, num_heads,
                                                        np_dtype)
        out = torch.empty((num_rows, num_heads * vdim), dtype=q.dtype)
        stats = RowStats.empty((num_rows, num_heads), q.dtype)
        with rt.numba_threads(threads), rt.DynamicSchedule(), record_function("sparsegt.ranges.forward"):
            kern.runs_forward(q2.numpy(), kt.numpy(), vt.numpy(), pattern.indptr.contiguous().numpy(), lo,
                              bias_t.numpy(), bias is not None, score_clamp is not None, np_dtype(score_clamp or 0.0),
                              np_dtype(scale), np_dtype(0.0), use_dropout, keep_t, keep_scale, chunk_ptr, max_len,
                              out.numpy(), stats.row_max.numpy(), stats.row_sum.numpy())
        ctx.pattern, ctx.scale, ctx.dropout = pattern, scale, (use_dropout, keep_t, keep_scale)
        ctx.score_clamp = score_clamp
        ctx.has_bias, ctx.shapes = bias is not None, (q.shape, k.shape, v.shape)
        ctx.save_for_backward(q2, kt, vt, bias_t, out, *stats)
        return out.view(num_rows, num_heads, vdim), stats.lse()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        q2, kt, vt, bias_t, out, row_max, row_sum = ctx.saved_tensors
        pattern: Graph = ctx.pattern
        q_shape, k_shape, v_shape = ctx.shapes
        num_rows, num_heads = row_max.shape
        dtype = q2.dtype
        np_dtype = rt.numpy_float(dtype)
        threads = rt.thread_count(pattern.num_edges * (kt.shape[0] + vt.shape[0]), PARALLEL_MIN_WORK)
        lo, chunk_ptr, span_lo, span_hi, part_ptr, max_len = _plan(pattern)
        need_dbias = ctx.has_bias and ctx.needs_input_grad[3]
        dout2 = np.zeros(tuple(out.shape), np_dtype) if dout is None else rt.flat(dout).numpy()
        dlse2 = (np.zeros((num_rows, num_heads), np_dtype) if dlse is None
                 else dlse.detach().contiguous().numpy())
        dq = torch.empty(tuple(q2.shape), dtype=dtype)
        width = int(part_ptr[-1])
        part_k = np.empty((kt.shape[0], width), np_dtype)
        part_v = np.empty((vt.shape[0], width), np_dtype)
        dbias_t = torch.empty((num_heads, pattern.num_edges) if need_dbias else (1, 1), dtype=dtype)
        with rt.numba_threads(threads), rt.DynamicSchedule(), record_function("sparsegt.ranges.backward"):
            kern.runs_backward(q2.numpy(), kt.numpy(), vt.numpy(), pattern.indptr.contiguous().numpy(), lo,
                               bias_t.numpy(),
                               ctx.has_bias, need_dbias, ctx.score_clamp is not None, np_dtype(ctx.score_clamp or 0.0),
                               np_dtype(ctx.scale), np_dtype(0.0), *ctx.dropout,
                               chunk_ptr, span_lo, part_ptr, max_len, out.numpy(), row_max.numpy(), row_sum.numpy(),
                               dout2, dlse2,
                               dq.numpy(), part_k, part_v, dbias_t.numpy())
            dk = torch.zeros((kt.shape[1], kt.shape[0]), dtype=dtype)
            dv = torch.zeros((vt.shape[1], vt.shape[0]), dtype=dtype)
            kern.sum_parts(span_lo, span_hi, part_ptr, part_k, dk.numpy())
            kern.sum_parts(span_lo, span_hi, part_ptr, part_v, dv.numpy())
        dbias = dbias_t.t().contiguous() if need_dbias else None
        return dq.view(q_shape), dk.view(k_shape), dv.view(v_shape), dbias, None, None, None, None, None


class RangesBackend(Backend):
    """``backend="ranges"``: float32/float64 CPU tensors, patterns of runs, no gate. Auto
    takes it for runs of at least ``AUTO_MIN_MEAN_DEGREE`` keys on average and heads of at most
    ``AUTO_MAX_HEAD_DIM`` channels."""

    name = "ranges"
    supports = Support(devices=("cpu",), dtypes=rt.NUMBA_DTYPES, gate=False, pattern="runs")

    def auto_reasons(self, inputs: AttentionInputs) -> list[str]:
        reasons = []
        if inputs.head_dim > AUTO_MAX_HEAD_DIM:
            reasons.append(f"auto takes it for heads of at most {AUTO_MAX_HEAD_DIM} channels, got {inputs.head_dim}")
        if inputs.mean_degree < AUTO_MIN_MEAN_DEGREE:
            reasons.append(f"auto takes it for at least {AUTO_MIN_MEAN_DEGREE} keys per row on average, got "
                           f"{inputs.mean_degree:.3g}")
        return reasons

    def data_reasons(self, inputs: AttentionInputs) -> list[str]:
        if is_runs(inputs.pattern):
            return []
        return ["needs a pattern whose every row's keys are consecutive and increasing (full per graph, "
                "windows, blocks)"]

    def autograd_call(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None):
        return _RangesAttention, (inputs.q, inputs.k, inputs.v, inputs.bias, inputs.pattern, float(scale),
                                  float(inputs.dropout_p), dropout_seed, inputs.score_clamp)


RANGES = RangesBackend()


def ranges_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None,
                     scale: float, dropout_p: float, dropout_seed: int | None, *,
                     score_clamp: float | None = None) -> tuple[Tensor, Tensor]:
    """Attention over a pattern of runs. q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H].
    ``score_clamp``: as in `sparse_attention` (GT's clamp).

    Returns ``out`` [Nq, H, Dv] (zeros on rows without edges) and ``lse`` [Nq, H] (``-inf`` there).
    """
    inputs = AttentionInputs(q, k, v, pattern, bias, gate, dropout_p, score_clamp)
    reasons = RANGES.unsupported_reasons(inputs)
    if reasons:
        raise unsupported_error("ranges", reasons)
    return RANGES.run(inputs, scale, dropout_seed)
