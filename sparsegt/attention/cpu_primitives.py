"""Building blocks of the CPU attention kernels: work plan, partial-result merges, prefetch.

Work plan: rows (or, in the backward key pass, columns) become *segments* of at most ``piece`` edges;
a row longer than that (a hub) is cut into several segments whose partial results go to a small
scratch buffer and are merged afterwards (`merge_by_max` in the forward, `merge_by_sum` in the
backward). Consecutive segments are grouped into chunks of roughly equal cost and the parallel loops
hand out chunks, so one hub row with 10^5 edges never leaves one thread working alone.

What every numba kernel's caller needs (threads, schedule, dtypes, the dropout keep table, ``exp``)
lives in `numba_runtime`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

ROW_COST = 4  # per-segment overhead (loading q, writing the output) in units of one edge


@intrinsic
def prefetch_row(typingctx, array, row):
    """Prefetch every cache line of ``array[row, :]`` (2-D, C-contiguous) into L1."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        zero = ir.Constant(intp, 0)
        row_index = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, array_type, ary, [row_index, zero], wraparound=False)
        byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        item_bytes = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
        row_bytes = builder.mul(builder.extract_value(ary.shape, 1), ir.Constant(intp, item_bytes))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        lines = builder.udiv(builder.add(row_bytes, ir.Constant(intp, 63)), ir.Constant(intp, 64))
        with cgutils.for_range(builder, lines) as loop:
            line = builder.gep(byte_ptr, [builder.mul(loop.index, ir.Constant(intp, 64))])
            builder.call(fn, [line, i32(0), i32(3), i32(1)])  # read, keep in all levels, data cache
        return context.get_dummy_value()

    return types.void(array, row), codegen


# ---------------------------------------------------------------------------------------------- plan
class SegmentPlan(NamedTuple):
    """`plan_segments` of a pattern's rows (or columns), kept on the pattern as plan ``"segments"``."""

    seg_row: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray
    seg_slot: np.ndarray
    chunk_ptr: np.ndarray
    split_row: np.ndarray
    split_ptr: np.ndarray


@njit(cache=True)
def plan_segments(indptr, piece):
    """Cut rows into segments of at most ``piece`` edges and group them into chunks of ~``piece`` cost.

    Returns ``seg_row, seg_start, seg_end, seg_slot`` [S] (``seg_slot`` -1: the segment is a whole row
    and writes its output directly; otherwise its index in the partial-result scratch),
    ``chunk_ptr`` [C+1] (segments of chunk c: ``chunk_ptr[c]:chunk_ptr[c+1]``), and for the rows that
    were cut ``split_row`` [R], ``split_ptr`` [R+1] (their scratch slots).
    """
    n = indptr.shape[0] - 1
    num_seg = 0
    num_split = 0
    num_slots = 0
    for r in range(n):
        deg = indptr[r + 1] - indptr[r]
        if deg > piece:
            pieces = (deg + piece - 1) // piece
            num_seg += pieces
            num_split += 1
            num_slots += pieces
        else:
            num_seg += 1
    seg_row = np.empty(num_seg, np.int64)
    seg_start = np.empty(num_seg, np.int64)
    seg_end = np.empty(num_seg, np.int64)
    seg_slot = np.empty(num_seg, np.int64)
    split_row = np.empty(num_split, np.int64)
    split_ptr = np.empty(num_split + 1, np.int64)
    split_ptr[0] = 0
    chunk_ptr = np.empty(num_seg + 1, np.int64)
    chunk_ptr[0] = 0
    s = 0
    r_split = 0
    slot = 0
    num_chunks = 0
    cost = 0
    for r in range(n):
        a = indptr[r]
        b = indptr[r + 1]
        split = b - a > piece
        if split:
            split_row[r_split] = r
        while True:
            end = min(a + piece, b)
            seg_row[s] = r
            seg_start[s] = a
            seg_end[s] = end
            seg_slot[s] = slot if split else -1
            if split:
                slot += 1
            s += 1
            cost += end - a + ROW_COST
            if cost >= piece:
                num_chunks += 1
                chunk_ptr[num_chunks] = s
                cost = 0
            a = end
            if a >= b:
                break
        if split:
            r_split += 1
            split_ptr[r_split] = slot
    if cost > 0:
        num_chunks += 1
        chunk_ptr[num_chunks] = s
    return seg_row, seg_start, seg_end, seg_slot, chunk_ptr[: num_chunks + 1].copy(), split_row, split_ptr


@njit(parallel=True, cache=True)
def merge_by_max(split_row, split_ptr, part_out, part_max, part_sum, out, row_max, row_sum):
    """Combine the partial softmaxes of cut rows (statistics as in `row_stats`): ``row_max = max_p m_p``,
    ``row_sum = sum_p exp(m_p - row_max) l_p``, ``out = sum_p exp(m_p - row_max) l_p / row_sum * out_p``.
    A NaN piece makes the row NaN."""
    num_heads = row_max.shape[1]
    vdim = out.shape[1] // num_heads
    for r in prange(split_row.shape[0]):
        i = split_row[r]
        for h in range(num_heads):
            top = -np.inf
            has_nan = False
            for p in range(split_ptr[r], split_ptr[r + 1]):
                m = part_max[p, h]
                if m != m:
                    has_nan = True
                elif m > top:
                    top = m
            o = h * vdim
            if has_nan:
                row_max[i, h], row_sum[i, h] = np.nan, np.nan
                for d in range(vdim):
                    out[i, o + d] = np.nan
                continue
            for d in range(vdim):
                out[i, o + d] = 0.0
            if top == -np.inf:
                row_max[i, h], row_sum[i, h] = -np.inf, 0.0
                continue
            total = 0.0
            for p in range(split_ptr[r], split_ptr[r + 1]):
                total += np.exp(part_max[p, h] - top) * part_sum[p, h]
            row_max[i, h], row_sum[i, h] = top, total
            for p in range(split_ptr[r], split_ptr[r + 1]):
                w = np.exp(part_max[p, h] - top) * part_sum[p, h] / total
                for d in range(vdim):
                    out[i, o + d] += w * part_out[p, o + d]


@njit(parallel=True, cache=True)
def merge_by_sum(split_row, split_ptr, part, target):
    """``target[row] = sum of its partial rows`` for the rows that were cut into pieces."""
    width = target.shape[1]
    for r in prange(split_row.shape[0]):
        i = split_row[r]
        for x in range(width):
            target[i, x] = 0.0
        for p in range(split_ptr[r], split_ptr[r + 1]):
            for x in range(width):
                target[i, x] += part[p, x]


