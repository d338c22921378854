"""The numba runtime shared by every fused CPU kernel (attention backends and the GatedGCN and GRIT layers).

One home for what a numba kernel's caller needs, public to `sparsegt.nn`:
- calling: `thread_count` (how many threads a call runs on, following torch's) and `numba_threads` (that
  count for one block, the caller's restored after), `DynamicSchedule` (chunks handed out one at a time),
  `numpy_float` (the kernels' scalar type for a torch dtype), `flat` (a tensor as the kernels' 2-D
  contiguous array), `row_chunks` (rows cut into runs of about equal edges);
- which inputs the numba kernels take: `numba_cpu_reasons` (CPU tensors of one dtype, float32 or float64);
- math inside kernels: `exp` (a vectorisable float32 exp);
- dropout: `keep_table` and `dense_keep_factors` compute the same bits as `dropout.keep_mask` (int64
  arithmetic, constants below 2**31, so products never overflow), once per call, for the forward and
  the backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

MASK32 = 0xFFFFFFFF
MIX1 = 0x7FEB352D
MIX2 = 0x5BD1E995
HEAD_MIX = 0x27D4EB2F

NUMBA_DTYPES = (torch.float32, torch.float64)  # what the fused kernels compute in


# ---------------------------------------------------------------------------------------------- calling
def thread_count(work: int, min_work: int) -> int:
    """How many threads a call doing ``work`` units should run on: torch's count, or 1 below ``min_work``,
    where waking a second thread (on a busy machine, waiting for a core) costs more than the work; never
    more than numba's pool. Changes nothing; `numba_threads` applies it."""
    threads = 1 if work < min_work else torch.get_num_threads()
    return max(1, min(threads, numba.config.NUMBA_NUM_THREADS))


@contextmanager
def numba_threads(threads: int) -> Iterator[int]:
    """Run numba's parallel loops inside the block on ``threads`` threads, and give the caller's count back on
    exit. numba's count belongs to the calling thread and outlives any call: a kernel call must not leave it
    lowered for every later parallel loop, ours or the user's.

    ``with numba_threads(thread_count(work, MIN_WORK)) as threads: kernel(...)``
    """
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)


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


def even_chunks(rows: int, work: int, min_work: int, per_thread: int = 4) -> tuple[np.ndarray, int]:
    """(bounds [chunks + 1], threads) for a kernel over ``rows`` rows of equal cost doing ``work`` units in all:
    `thread_count` threads, ``per_thread`` equal row chunks each (handed out one at a time by
    `DynamicSchedule`; empty chunks are harmless)."""
    threads = thread_count(work, min_work)
    return np.linspace(0, rows, threads * per_thread + 1).astype(np.int64), threads


def numba_cpu_reasons(**tensors: torch.Tensor | None) -> list[str]:
    """Why the numba kernels cannot take these tensors (empty when they can): they need CPU tensors of one
    dtype, float32 or float64, outside torch.compile's tracing. None entries are skipped."""
    if torch.compiler.is_compiling():  # the kernels are opaque to the compiler; it fuses the torch ops instead
        return ["torch.compile traces the torch path (the numba kernels are opaque to it)"]
    given = {name: t for name, t in tensors.items() if t is not None}
    reasons = []
    elsewhere = [name for name, t in given.items() if t.device.type != "cpu"]
    if elsewhere:
        devices = sorted({str(given[name].device) for name in elsewhere})
        reasons.append(f"needs CPU tensors, but {', '.join(elsewhere)} {'is' if len(elsewhere) == 1 else 'are'} on "
                       f"{', '.join(devices)}; move {'it' if len(elsewhere) == 1 else 'them'} with .cpu()")
    dtypes = sorted({str(t.dtype) for t in given.values()})
    other = [name for name, t in given.items() if t.dtype not in NUMBA_DTYPES]
    if other:
        kinds = ", ".join(sorted({str(given[name].dtype) for name in other}))
        reasons.append(f"supports float32 and float64, but {', '.join(other)} {'is' if len(other) == 1 else 'are'} "
                       f"{kinds}; cast with .float()")
    elif len(dtypes) > 1:
        reasons.append(f"needs one dtype, got {', '.join(dtypes)}")
    return reasons


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


@intrinsic
def _select_float32(typingctx, condition, if_true, if_false):
    """``if_true if condition else if_false`` as one LLVM ``select``, the code a conditional expression
    compiles to, but with no branch in numba's IR: a conditional expression in `exp`'s body, inlined into
    a kernel inside a branch, trips numba's pedantic SSA check (NumbaIRAssumptionWarning ``variable
    '_exp_float32...' is not in scope``) on every first compile."""

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return types.float32(types.boolean, types.float32, types.float32), codegen


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
    y = _select_float32(x >= np.float32(-87.33), y, np.float32(0.0))
    return _select_float32(x == x, y, x)  # NaN stays NaN


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

