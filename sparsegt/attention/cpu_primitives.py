"""Building blocks of the CPU attention kernels: work plan, partial-result merges, prefetch, dropout hash.

Work plan: rows (or, in the backward key pass, columns) become *segments* of at most ``piece`` edges;
a row longer than that (a hub) is cut into several segments whose partial results go to a small
scratch buffer and are merged afterwards (`merge_by_lse` in the forward, `merge_by_sum` in the
backward). Consecutive segments are grouped into chunks of roughly equal cost and the parallel loops
hand out chunks, so one hub row with 10^5 edges never leaves one thread working alone.

Dropout: `keep_table` computes the same bits as `dropout.keep_mask` (int64 arithmetic, constants below
2**31, so products never overflow), once per call, for the forward and the backward.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# numba's pedantic SSA check flags the phi nodes of `exp`'s float32 body when a kernel inlines it inside a
# branch (a false alarm: the kernels are tested against the reference); keep it off users' screens
warnings.filterwarnings("ignore", message="variable '_exp_float32", category=numba.NumbaIRAssumptionWarning)

ROW_COST = 4  # per-segment overhead (loading q, writing the output) in units of one edge

MASK32 = 0xFFFFFFFF
MIX1 = 0x7FEB352D
MIX2 = 0x5BD1E995
HEAD_MIX = 0x27D4EB2F


# ---------------------------------------------------------------------------------------------- calling
def use_threads(work: int, min_work: int) -> int:
    """Set numba's thread count for a call doing ``work`` units: torch's count, or 1 below ``min_work``,
    where waking a second thread (on a busy machine, waiting for a core) costs more than the work."""
    threads = 1 if work < min_work else torch.get_num_threads()
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


class DynamicSchedule:
    """Hand the chunks of the parallel loops out one at a time instead of in one static block per thread."""

    def __enter__(self) -> None:
        self.previous = numba.set_parallel_chunksize(1)

    def __exit__(self, *exc: object) -> None:
        numba.set_parallel_chunksize(self.previous)


def numpy_float(dtype: torch.dtype) -> type:
    """np.float32 or np.float64, the scalar type the kernels take for a float32 or float64 tensor (typed
    scalars keep float32 loops in float32)."""
    return np.float32 if dtype == torch.float32 else np.float64


def flat(t: torch.Tensor) -> torch.Tensor:
    """[N, *F] -> C-contiguous [N, prod(F)] (heads flattened into the last axis), sharing memory (and the
    version counter) when it can."""
    width = 1
    for size in t.shape[1:]:
        width *= size
    return t.detach().contiguous().reshape(t.shape[0], width)


def row_chunks(indptr: np.ndarray, chunks: int) -> np.ndarray:
    """[chunks' + 1] row boundaries splitting the rows into at most ``chunks`` runs of about equal edges."""
    num_rows = len(indptr) - 1
    targets = np.linspace(0, indptr[-1], chunks + 1)
    bounds = np.searchsorted(indptr, targets, side="left")
    bounds[0], bounds[-1] = 0, num_rows
    return np.unique(np.clip(bounds, 0, num_rows)).astype(np.int64)


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


def exp(x):
    """``exp`` for the kernels: float32 by Cephes' polynomial (about 1 ulp; no libm call and no branch,
    so loops over it vectorise), float64 by libm. For float32, exponents below -87.33 (denormal or zero
    results) give exactly 0 and NaN stays NaN; the result saturates at exp(88) (the kernels only take
    exp of scores minus their maximum, at most 0)."""
    return np.exp(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _exp_float32(x):  # compiled through `exp`'s overload
    xc = min(max(x, np.float32(-87.33)), np.float32(88.0))
    n = np.float32(np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5)))
    r = xc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)  # x - n ln2, ln2 in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    y = p * _float32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))  # times 2^n
    y = y if x >= np.float32(-87.33) else np.float32(0.0)
    return y if x == x else x


@njit(cache=True, inline="always")
def _hash32(x):
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * MIX1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX2) & MASK32
    x = x ^ (x >> 16)
    return x


@njit(cache=True, inline="always")
def edge_hash(edge, seed_lo, seed_hi):
    return _hash32(_hash32(edge ^ seed_lo) + seed_hi)


@njit(cache=True, inline="always")
def keeps(edge_bits, head, threshold):
    """The same bits as `dropout.keep_mask`: True where (edge, head) survives."""
    return _hash32(edge_bits ^ ((head * HEAD_MIX) & MASK32)) >= threshold


@njit(parallel=True, cache=True)
def keep_table(num_edges, num_heads, seed_lo, seed_hi, threshold):
    """[H, E] uint8: 1 where weight (edge, head) survives dropout, bit for bit `dropout.keep_mask`.

    Computed once per call and read by the forward and the backward: hashing inside the kernels' inner
    loops cost about as much as the attention itself (a latency chain per edge and head). Heads first:
    the loops over edges vectorise, and a row's edges are contiguous for each head."""
    out = np.empty((num_heads, num_edges), dtype=np.uint8)
    step = 4096
    for c in prange((num_edges + step - 1) // step):
        first, last = c * step, min(num_edges, (c + 1) * step)
        for h in range(num_heads):
            for e in range(first, last):
                out[h, e] = keeps(edge_hash(np.int64(e), seed_lo, seed_hi), np.int64(h), threshold)
    return out


@njit(parallel=True, cache=True)
def dense_keep_factors(edge_map, keep, keep_scale, out):
    """Dropout factors of dense tiles: ``out[h, t, r, c]`` = ``keep_scale`` where the edge
    ``edge_map[t, r, c]`` survives in head h (``keep`` [H, E] from `keep_table`), 0 where it is dropped
    or where there is no edge (-1). ``edge_map`` [T, R, W] int32, ``out`` [H, T, R, W]."""
    num_heads = out.shape[0]
    zero = keep_scale * 0
    for t in prange(edge_map.shape[0]):
        for r in range(edge_map.shape[1]):
            for c in range(edge_map.shape[2]):
                e = edge_map[t, r, c]
                for h in range(num_heads):
                    out[h, t, r, c] = keep_scale if e >= 0 and keep[h, e] else zero


@overload(exp, inline="always")
def _exp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return _exp_float32
    return lambda x: np.exp(x)


# ---------------------------------------------------------------------------------------------- plan
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
def merge_by_lse(split_row, split_ptr, part_out, part_lse, out, lse):
    """Combine the partial softmaxes of cut rows: ``lse = logsumexp_p(lse_p)``,
    ``out = sum_p exp(lse_p - lse) out_p``."""
    num_heads = lse.shape[1]
    vdim = out.shape[1] // num_heads
    for r in prange(split_row.shape[0]):
        i = split_row[r]
        for h in range(num_heads):
            top = -np.inf
            for p in range(split_ptr[r], split_ptr[r + 1]):
                top = max(top, part_lse[p, h])
            o = h * vdim
            for d in range(vdim):
                out[i, o + d] = 0.0
            if top == -np.inf:
                lse[i, h] = -np.inf
                continue
            total = 0.0
            for p in range(split_ptr[r], split_ptr[r + 1]):
                total += np.exp(part_lse[p, h] - top)
            row_lse = top + np.log(total)
            lse[i, h] = row_lse
            for p in range(split_ptr[r], split_ptr[r + 1]):
                w = np.exp(part_lse[p, h] - row_lse)
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


