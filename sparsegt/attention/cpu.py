"""The CPU backend of `sparse_attention`: fused numba CSR kernels, forward and backward.

Forward: one pass over each query row's edges with an online softmax; only ``out`` [Nq, H, Dv] and the
row statistics of `row_stats` (row maximum and sum, [Nq, H] each) are kept. Backward: flash-style
recomputation of the probabilities from those statistics (exact at any constant offset of the scores);
``dq``, ``dbias``, ``dgate`` per query row, ``dk``/``dv`` per key column over the transposed (CSC)
pattern, cached on the `Graph`, so there are no atomics and results are deterministic. Extra memory:
one [E, 2H] buffer in the backward (the score gradient, which is also ``dbias`` unless a score clamp
cut it, and the dropped-out weights; with a clamp and a bias gradient one more [E, H]), plus a small
scratch for rows cut into pieces, and with dropout the [H, E] byte table of kept weights, from the
forward to the backward.

Dropout draws the same counter-based mask as `dropout.keep_mask` (a hash of seed, edge and head), once
per call, as an [H, E] byte table that the backward reuses (hashing in the inner loops cost about as
much as the attention).

float32 and float64 only: half-precision inputs raise ValueError (cast with ``.float()``, or use
``backend="torch"``): accumulating a softmax in bf16 would silently lose the accuracy the tests check.
Threads follow ``torch.get_num_threads()``; calls too small to gain from a second thread run on one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from ..graph import Graph
from . import cpu_kernels as kern
from . import cpu_primitives as prim
from . import numba_runtime as rt
from .backend import AttentionInputs, Backend, Support, unsupported_error
from .row_stats import RowStats

__all__ = ["cpu_attention", "CPU"]
CHUNKS_PER_THREAD = 16  # chunks are handed out dynamically: slack to absorb a slow or shared core
MIN_PIECE = 256  # bounds of the edges per chunk (and of the longest row left uncut)
MAX_PIECE = 16384
PARALLEL_MIN_WORK = 1 << 19  # E * H * (D + Dv) below which one thread is faster than two


def _piece_size(indptr: Tensor, threads: int) -> int:
    total = int(indptr[-1]) + prim.ROW_COST * (indptr.numel() - 1)
    return int(min(MAX_PIECE, max(MIN_PIECE, -(-total // (threads * CHUNKS_PER_THREAD)))))


def _plan(pattern: Graph, side: str, piece: int) -> prim.SegmentPlan:
    """Segments and chunks of the row (CSR) or column (CSC) pattern: the pattern's plan ``"segments"``."""
    def build() -> prim.SegmentPlan:
        indptr = pattern.indptr if side == "rows" else pattern.csc()[0]
        return prim.SegmentPlan(*prim.plan_segments(indptr.contiguous().numpy(), piece))

    return pattern.plan("segments", build, key=(side, piece))


def _dropout_args(dropout_p: float, dropout_seed: int | None, num_edges: int, num_heads: int,
                  np_dtype: type) -> tuple:
    """(use_dropout, keep [H, E] uint8, keep_scale) as the kernels take them."""
    if dropout_p <= 0.0:
        return False, np.zeros((1, 1), np.uint8), np_dtype(1.0)
    seed = int(dropout_seed)
    keep = rt.keep_table(num_edges, num_heads, seed & rt.MASK32, (seed >> 32) & rt.MASK32,
                           int(dropout_p * 4294967296.0))
    return True, keep, np_dtype(1.0 / (1.0 - dropout_p))


class _CpuAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, gate, pattern, scale, dropout_p, dropout_seed, piece, score_clamp):
        num_rows, num_heads, vdim = q.shape[0], q.shape[1], v.shape[2]
        np_dtype = rt.numpy_float(q.dtype)
        threads = rt.thread_count(pattern.num_edges * num_heads * (q.shape[2] + vdim), PARALLEL_MIN_WORK)
        piece = piece or _piece_size(pattern.indptr, threads)
        seg_row, seg_start, seg_end, seg_slot, chunk_ptr, split_row, split_ptr = _plan(pattern, "rows", piece)
        q2, k2, v2 = rt.flat(q), rt.flat(k), rt.flat(v)
        dummy = torch.zeros((1, 1), dtype=q.dtype)
        bias2 = dummy if bias is None else rt.flat(bias)
        gate2 = dummy if gate is None else rt.flat(gate)
        out = torch.empty((num_rows, num_heads * vdim), dtype=q.dtype)
        stats = RowStats.empty((num_rows, num_heads), q.dtype)
        num_slots = int(split_ptr[-1])
        part_out = np.empty((num_slots, num_heads * vdim), np_dtype)
        part_max = np.empty((num_slots, num_heads), np_dtype)
        part_sum = np.empty((num_slots, num_heads), np_dtype)
        dropout = _dropout_args(dropout_p, dropout_seed, pattern.num_edges, num_heads, np_dtype)
        with rt.numba_threads(threads), rt.DynamicSchedule(), record_function("sparsegt.cpu.forward"):
            kern.attention_forward(
                q2.numpy(), k2.numpy(), v2.numpy(), pattern.indices.contiguous().numpy(), bias2.numpy(),
                gate2.numpy(), bias is not None, gate is not None, score_clamp is not None,
                np_dtype(score_clamp or 0.0), np_dtype(scale), np_dtype(0.0), *dropout,
                seg_row, seg_start, seg_end, seg_slot, chunk_ptr,
                out.numpy(), stats.row_max.numpy(), stats.row_sum.numpy(), part_out, part_max, part_sum)
            if num_slots:
                prim.merge_by_max(split_row, split_ptr, part_out, part_max, part_sum, out.numpy(),
                                  stats.row_max.numpy(), stats.row_sum.numpy())
        ctx.pattern, ctx.scale, ctx.dropout, ctx.piece, ctx.score_clamp = pattern, scale, dropout, piece, score_clamp
        ctx.has_bias, ctx.has_gate = bias is not None, gate is not None
        ctx.shapes = (q.shape, k.shape, v.shape)
        # the contiguous copies the kernel read, so the backward does not copy again
        ctx.save_for_backward(q2, k2, v2, bias2, gate2, out, *stats)
        return out.view(num_rows, num_heads, vdim), stats.lse()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        q2, k2, v2, bias2, gate2, out, row_max, row_sum = ctx.saved_tensors
        pattern, scale, piece = ctx.pattern, ctx.scale, ctx.piece
        q_shape, k_shape, v_shape = ctx.shapes
        num_rows, num_heads = row_max.shape
        num_edges = pattern.num_edges
        dtype = q2.dtype
        np_dtype = rt.numpy_float(dtype)
        threads = rt.thread_count(num_edges * (q2.shape[1] + v2.shape[1]), PARALLEL_MIN_WORK)
        need_dgate = ctx.has_gate and ctx.needs_input_grad[4]
        dout2 = np.zeros(tuple(out.shape), np_dtype) if dout is None else rt.flat(dout).numpy()
        dlse2 = (np.zeros((num_rows, num_heads), np_dtype) if dlse is None
                 else dlse.detach().contiguous().numpy())
        dq = torch.empty(tuple(q2.shape), dtype=dtype)
        dk: Tensor | None = torch.empty(tuple(k2.shape), dtype=dtype)
        dv: Tensor | None = torch.empty(tuple(v2.shape), dtype=dtype)
        dscore_weight = torch.empty((num_edges, 2 * num_heads), dtype=dtype)
        dgate = torch.empty((num_edges, q2.shape[1]) if need_dgate else (1, 1), dtype=dtype)
        need_dbias = ctx.has_bias and ctx.needs_input_grad[3]
        clamp = ctx.score_clamp
        separate_dbias = need_dbias and clamp is not None  # else dL/dbias is the stored ds
        dbias_clamped = torch.empty((num_edges, num_heads) if separate_dbias else (1, 1), dtype=dtype)
        seg_row, seg_start, seg_end, seg_slot, chunk_ptr, split_row, split_ptr = _plan(pattern, "rows", piece)
        part_dq = np.empty((int(split_ptr[-1]), q2.shape[1]), np_dtype)
        with rt.numba_threads(threads), rt.DynamicSchedule():
            with record_function("sparsegt.cpu.backward_queries"):
                kern.attention_backward_rows(
                    q2.numpy(), k2.numpy(), v2.numpy(), pattern.indices.contiguous().numpy(), bias2.numpy(),
                    gate2.numpy(), ctx.has_bias, ctx.has_gate, need_dgate, clamp is not None,
                    np_dtype(clamp or 0.0), np_dtype(scale), np_dtype(0.0), *ctx.dropout,
                    seg_row, seg_start, seg_end, seg_slot, chunk_ptr, out.numpy(), row_max.numpy(), row_sum.numpy(),
                    dout2, dlse2,
                    dq.numpy(), part_dq, dscore_weight.numpy(), dgate.numpy(), separate_dbias, dbias_clamped.numpy())
                if part_dq.shape[0]:
                    prim.merge_by_sum(split_row, split_ptr, part_dq, dq.numpy())
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                _, row_indices, edge_id = pattern.csc()
                seg_col, col_start, col_end, col_slot, col_chunk_ptr, split_col, split_col_ptr = _plan(
                    pattern, "cols", piece)
                slots = int(split_col_ptr[-1])
                part_dk = np.empty((slots, k2.shape[1]), np_dtype)
                part_dv = np.empty((slots, v2.shape[1]), np_dtype)
                with record_function("sparsegt.cpu.backward_keys"):
                    kern.attention_backward_keys(
                        q2.numpy(), gate2.numpy(), ctx.has_gate, np_dtype(scale), np_dtype(0.0),
                        row_indices.contiguous().numpy(), edge_id.contiguous().numpy(),
                        seg_col, col_start, col_end, col_slot, col_chunk_ptr,
                        dout2, dscore_weight.numpy(), dk.numpy(), dv.numpy(), part_dk, part_dv)
                    if slots:
                        prim.merge_by_sum(split_col, split_col_ptr, part_dk, dk.numpy())
                        prim.merge_by_sum(split_col, split_col_ptr, part_dv, dv.numpy())
            else:  # only q, bias or gate need a gradient: skip the key pass
                dk = dv = None
        dbias = None
        if need_dbias:
            dbias = dbias_clamped if separate_dbias else dscore_weight[:, :num_heads].contiguous()
        dgate_out = dgate.view(num_edges, num_heads, q_shape[2]) if need_dgate else None
        return (dq.view(q_shape), None if dk is None else dk.view(k_shape),
                None if dv is None else dv.view(v_shape), dbias, dgate_out, None, None, None, None, None, None)


class CpuBackend(Backend):
    """``backend="cpu"``: the fused per-edge kernel; float32/float64 CPU tensors, every option, any pattern."""

    name = "cpu"
    supports = Support(devices=("cpu",), dtypes=rt.NUMBA_DTYPES)

    def autograd_call(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None):
        return _CpuAttention, (inputs.q, inputs.k, inputs.v, inputs.bias, inputs.gate, inputs.pattern, float(scale),
                               float(inputs.dropout_p), dropout_seed, None, inputs.score_clamp)


CPU = CpuBackend()


def cpu_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None, scale: float,
    dropout_p: float, dropout_seed: int | None, *, piece: int | None = None, score_clamp: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused CPU attention. q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H], gate [E, H, D].

    Returns ``out`` [Nq, H, Dv] (zeros on rows without edges) and ``lse`` [Nq, H] (``-inf`` there).
    ``piece`` (edges per work chunk, and the longest row left uncut) is for tests; by default it
    follows the edge count and the thread count. ``score_clamp``: as in `sparse_attention` (GT's clamp).
    """
    reasons = CPU.unsupported_reasons(AttentionInputs(q, k, v, pattern, bias, gate, dropout_p, score_clamp))
    if reasons:
        raise unsupported_error("cpu", reasons)
    if piece is not None and piece < 1:
        raise ValueError(f"piece must be a positive number of edges, got {piece}")
    return _CpuAttention.apply(q, k, v, bias, gate, pattern, float(scale), float(dropout_p), dropout_seed,
                               piece, score_clamp)
