"""numba kernels of the `ranges` backend: attention over patterns whose rows are runs of consecutive keys.

Layout: keys and values arrive transposed, ``kt`` [H*D, Nk] and ``vt`` [H*Dv, Nk], so that for one query
row and one channel the keys of the row's run ``lo .. lo+n-1`` are contiguous: every inner loop runs over
the keys of a run, with the keys in SIMD lanes (scores, ``exp``, the softmax sums, the value reductions,
the key and value gradients). Bias and dropout bits arrive head-first (``bias_t`` [H, E], ``keep_t``
[H, E]), contiguous along a row's edges too.

The plan (`plan_runs`) cuts the rows into chunks of consecutive rows; the parallel loops hand out
chunks. The backward accumulates each chunk's key and value gradients into its own slice of a scratch
buffer (``part`` [H*D, width of the chunk's column span]) and `sum_parts` adds the slices in chunk
order, so there are no atomics and results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_kernels import FASTMATH
from .cpu_primitives import ROW_COST
from .numba_runtime import exp


@njit(cache=True)
def row_runs(indptr, indices):
    """``lo`` [N] (first key of every row) if every row's keys are consecutive and increasing
    (``lo, lo+1, ..., lo+n-1``; empty rows get lo = 0), else an empty array."""
    n_rows = indptr.shape[0] - 1
    lo = np.zeros(n_rows, np.int64)
    for i in range(n_rows):
        a, b = indptr[i], indptr[i + 1]
        if b > a:
            first = indices[a]
            for e in range(a + 1, b):
                if indices[e] != first + (e - a):
                    return np.zeros(0, np.int64)
            lo[i] = first
    return lo


@njit(cache=True)
def plan_runs(indptr, lo, chunk_work):
    """Chunks of consecutive rows of about ``chunk_work`` entries (plus a per-row cost) each.

    Returns ``chunk_ptr`` [C+1] (rows of chunk c: ``chunk_ptr[c]:chunk_ptr[c+1]``), ``span_lo``,
    ``span_hi`` [C] (the columns the chunk's rows touch) and ``part_ptr`` [C+1] (offsets of the chunks'
    slices of the gradient scratch, in columns)."""
    n_rows = indptr.shape[0] - 1
    chunk_ptr = np.zeros(n_rows + 1, np.int64)
    num_chunks = 0
    work = 0
    for i in range(n_rows):
        work += indptr[i + 1] - indptr[i] + ROW_COST
        if work >= chunk_work or i == n_rows - 1:
            num_chunks += 1
            chunk_ptr[num_chunks] = i + 1
            work = 0
    chunk_ptr = chunk_ptr[: num_chunks + 1].copy()
    span_lo = np.zeros(num_chunks, np.int64)
    span_hi = np.zeros(num_chunks, np.int64)
    part_ptr = np.zeros(num_chunks + 1, np.int64)
    for c in range(num_chunks):
        low, high = np.int64(1) << 62, np.int64(0)
        for i in range(chunk_ptr[c], chunk_ptr[c + 1]):
            n = indptr[i + 1] - indptr[i]
            if n > 0:
                low = min(low, lo[i])
                high = max(high, lo[i] + n)
        if high == 0:
            low = 0
        span_lo[c], span_hi[c] = low, high
        part_ptr[c + 1] = part_ptr[c] + high - low
    return chunk_ptr, span_lo, span_hi, part_ptr


@njit(inline="always", fastmath=FASTMATH)
def _scores(s, q, i, kt, o, dim, lo, n, scale, bias_t, h, e0, has_bias, has_clamp, bound, inside, want_inside):
    """s[:n] = (q[i, o:o+dim] . kt[o:o+dim, lo:lo+n]) * scale, clamped to [-bound, bound] when ``has_clamp``
    (GT's clamp), + bias_t[h, e0:e0+n], as the reference rounds it: the dot products first, the bias added
    once (summing the products onto the bias would round every product to the bias' ulp: 1e-3 relative at a
    bias of 8192). With ``want_inside``, ``inside[:n]`` gets 1 where the clamp let the score through and 0
    where it cut it (no gradient flows through a cut score). Slices are taken before the inner loops: their
    indices are then known non-negative and the loops vectorise."""
    if dim == 0:  # (sparse_attention refuses D = 0; direct calls of the backend do not)
        s[:n] = 0.0
    else:  # the first product is stored, not added to a zeroed row: no pass more than the bias needs
        first, key = q[i, o], kt[o, lo:lo + n]
        for j in range(n):
            s[j] = first * key[j]
    for d in range(1, dim):
        qd = q[i, o + d]
        key = kt[o + d, lo:lo + n]
        for j in range(n):
            s[j] += qd * key[j]
    if has_clamp:
        for j in range(n):
            t = s[j] * scale
            if want_inside:
                inside[j] = 1.0 if -bound <= t <= bound else 0.0
            s[j] = bound if t > bound else (-bound if t < -bound else t)  # NaN stays NaN
        if has_bias:
            b = bias_t[h, e0:e0 + n]
            for j in range(n):
                s[j] += b[j]
    elif has_bias:
        b = bias_t[h, e0:e0 + n]
        for j in range(n):
            s[j] = s[j] * scale + b[j]
    else:
        for j in range(n):
            s[j] *= scale


@njit(inline="always", fastmath=FASTMATH)
def _dot(x, row, n, zero):
    """sum_j x[j] * row[j] over j < n (a vectorised reduction)."""
    acc = zero
    for j in range(n):
        acc += x[j] * row[j]
    return acc


@njit(cache=True, fastmath=FASTMATH | {"nnan"})
def _row_max(s, n):
    """max(s[:n]), vectorised ("nnan": a NaN score may be skipped here, but it still turns the row's sum
    of exponentials, and so its output, into NaN)."""
    top = s[0]
    for j in range(1, n):
        top = max(top, s[j])
    return top


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def runs_forward(q, kt, vt, indptr, lo, bias_t, has_bias, has_clamp, bound, scale, zero, use_dropout, keep_t,
                 keep_scale, chunk_ptr, max_len, out, row_max, row_sum):
    """``out`` [Nq, H*Dv] and the statistics of `row_stats`, ``row_max`` and ``row_sum`` [Nq, H], of every
    row: scores of the run (clamped to [-bound, bound] before the bias when ``has_clamp``), softmax,
    weighted values. ``zero``: 0 in the dtype of the tensors (keeps float32 sums in float32)."""
    num_heads = row_max.shape[1]
    dim = q.shape[1] // num_heads
    vdim = vt.shape[0] // num_heads
    for c in prange(chunk_ptr.shape[0] - 1):
        s = np.empty(max_len, q.dtype)
        for i in range(chunk_ptr[c], chunk_ptr[c + 1]):
            e0 = indptr[i]
            n = indptr[i + 1] - e0
            start = lo[i]
            for h in range(num_heads):
                ov = h * vdim
                row_max[i, h], row_sum[i, h] = -np.inf, zero
                out[i, ov:ov + vdim] = zero
                if n == 0:
                    continue
                _scores(s, q, i, kt, h * dim, dim, start, n, scale, bias_t, h, e0, has_bias, has_clamp, bound, s,
                        False)
                top = _row_max(s, n)
                if top == -np.inf:  # every score masked by a -inf bias: an empty row
                    continue
                total = zero
                for j in range(n):
                    p = exp(s[j] - top)
                    total += p
                    s[j] = p
                if use_dropout:
                    kept = keep_t[h, e0:e0 + n]
                    for j in range(n):
                        s[j] *= kept[j] * keep_scale
                inv = 1.0 / total
                # a NaN score makes the sum NaN (the maximum may have skipped it): NaN statistics mark the row
                row_max[i, h] = top if total == total else total
                row_sum[i, h] = total
                for d in range(vdim):
                    out[i, ov + d] = _dot(s, vt[ov + d, start:start + n], n, zero) * inv


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def runs_backward(q, kt, vt, indptr, lo, bias_t, has_bias, need_dbias, has_clamp, bound, scale, zero, use_dropout,
                  keep_t, keep_scale, chunk_ptr, span_lo, part_ptr, max_len, out, row_max, row_sum, dout, dlse,
                  dq, part_k, part_v, dbias_t):
    """Per row: recompute ``p = exp(s - row_max) / row_sum`` (`row_stats`), ``dp = dout . v``, ``ds = p (dp -
    delta)`` with ``delta = dout . out - dlse``; ``dq`` [Nq, H*D] directly, ``dbias_t`` [H, E] when asked,
    and the chunk's key/value gradients into its scratch slices ``part_k`` [H*D, P], ``part_v`` [H*Dv, P]
    (columns ``part_ptr[c]`` on; `sum_parts` adds them up). A row with a NaN score (NaN statistics): NaN
    weight on its NaN-score edges, none on the others and ``delta = 0``, so the NaN reaches that edge's
    bias, key and value and the row's query, as in the reference, and no further. With a clamp, the bias
    gets all of ``ds`` and the query and keys only where the clamp let the score through."""
    num_heads = row_max.shape[1]
    dim = q.shape[1] // num_heads
    vdim = vt.shape[0] // num_heads
    for c in prange(chunk_ptr.shape[0] - 1):
        p = np.empty(max_len, q.dtype)
        ds = np.empty(max_len, q.dtype)
        w = np.empty(max_len, q.dtype)
        inside = np.empty(max_len, q.dtype)
        inv_sum = np.empty(1, q.dtype)
        base = part_ptr[c]
        part_k[:, base:part_ptr[c + 1]] = zero
        part_v[:, base:part_ptr[c + 1]] = zero
        for i in range(chunk_ptr[c], chunk_ptr[c + 1]):
            e0 = indptr[i]
            n = indptr[i + 1] - e0
            start = lo[i]
            rel = base + start - span_lo[c]  # the run's first column in the chunk's scratch slice
            for h in range(num_heads):
                o = h * dim
                ov = h * vdim
                top = row_max[i, h]
                if n == 0 or top == -np.inf:
                    dq[i, o:o + dim] = zero
                    if need_dbias:
                        dbias_t[h, e0:e0 + n] = zero
                    continue
                _scores(p, q, i, kt, o, dim, start, n, scale, bias_t, h, e0, has_bias, has_clamp, bound, inside,
                        True)
                if top != top:  # a NaN row
                    delta = zero
                    for j in range(n):
                        p[j] = p[j] if p[j] != p[j] else zero
                        ds[j] = zero
                else:
                    delta = -dlse[i, h]
                    for d in range(vdim):
                        delta += dout[i, ov + d] * out[i, ov + d]
                    inv_sum[0] = 1.0 / row_sum[i, h]  # through the array: a float32 scalar for float32 rows
                    inv = inv_sum[0]
                    for j in range(n):
                        p[j] = exp(p[j] - top) * inv
                        ds[j] = zero
                for d in range(vdim):
                    g = dout[i, ov + d]
                    value = vt[ov + d, start:start + n]
                    for j in range(n):
                        ds[j] += g * value[j]
                if use_dropout:  # ds holds dp here; a dropped weight passes no gradient to its probability
                    kept = keep_t[h, e0:e0 + n]
                    for j in range(n):
                        f = kept[j] * keep_scale
                        w[j] = p[j] * f
                        ds[j] = p[j] * (ds[j] * f - delta)
                else:
                    for j in range(n):
                        w[j] = p[j]
                        ds[j] = p[j] * (ds[j] - delta)
                if need_dbias:
                    dbias_t[h, e0:e0 + n] = ds[:n]
                if has_clamp:  # the dot products' gradient: none through a cut score
                    for j in range(n):
                        ds[j] *= inside[j]
                for d in range(dim):
                    dq[i, o + d] = _dot(ds, kt[o + d, start:start + n], n, zero) * scale
                    qd = q[i, o + d] * scale
                    grad_key = part_k[o + d, rel:rel + n]
                    for j in range(n):
                        grad_key[j] += qd * ds[j]
                for d in range(vdim):
                    g = dout[i, ov + d]
                    grad_value = part_v[ov + d, rel:rel + n]
                    for j in range(n):
                        grad_value[j] += g * w[j]


@njit(parallel=True, cache=True)
def sum_parts(span_lo, span_hi, part_ptr, part, target):
    """``target[j, x] = sum over chunks c (in order) whose span holds j of part[x, part_ptr[c] + j -
    span_lo[c]]``; ``target`` [Nk, X] must be zero. Parallel over blocks of columns."""
    num_cols = target.shape[0]
    block = 256
    for b in prange((num_cols + block - 1) // block):
        a, z = b * block, min(num_cols, (b + 1) * block)
        for c in range(span_lo.shape[0]):
            first, last = max(a, span_lo[c]), min(z, span_hi[c])
            if first >= last:
                continue
            shift = part_ptr[c] - span_lo[c]
            for j in range(first, last):
                for x in range(part.shape[0]):
                    target[j, x] += part[x, shift + j]
