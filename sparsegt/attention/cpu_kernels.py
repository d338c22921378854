"""numba compute kernels of the CPU attention backend: forward, backward query pass, backward key pass.

Layout: every tensor arrives as a C-contiguous 2-D array with the heads flattened into the last axis
(``q`` [Nq, H*D], ``k`` [Nk, H*D], ``v`` [Nk, H*Dv], ``gate`` [E, H*D], ``bias`` [E, H]), so the inner
loops over D run over contiguous memory that LLVM turns into SIMD code.

Edges are processed four at a time ("lanes"): one pass over D computes four dot products (q_i is
loaded once for four keys) and one pass accumulates four value rows into the output (the accumulator
is loaded and stored once for four edges). A row whose length is not a multiple of four fills the
missing lanes with a copy of its last edge and a zero weight. The rows of the next edges are
prefetched: on a random graph the kernel waits on gathers of k/v (or q/dout) rows, not on arithmetic.

The parallel loops run over chunks of the work plan (`cpu_primitives.plan_segments`); each chunk
writes disjoint outputs, so there are no atomics and results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_primitives import prefetch_row
from .numba_runtime import exp

# Reassociation lets LLVM vectorise the sums over D; no "ninf"/"nnan": -inf is meaningful here (empty
# rows, scores masked by a -inf bias).
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
LANES = 4
PREFETCH = 16  # edges ahead whose gathered rows are prefetched


@njit(inline="always", fastmath=FASTMATH)
def dots4(x, i, y, j0, j1, j2, j3, o, dim, zero):
    """Dot products of row i of ``x`` with rows j0..j3 of ``y`` over columns o..o+dim: four at a time, so
    ``x[i]`` is loaded once and the gathered rows are streamed together."""
    t0, t1, t2, t3 = zero, zero, zero, zero
    for d in range(dim):
        xd = x[i, o + d]
        t0 += xd * y[j0, o + d]
        t1 += xd * y[j1, o + d]
        t2 += xd * y[j2, o + d]
        t3 += xd * y[j3, o + d]
    return t0, t1, t2, t3


@njit(inline="always", fastmath=FASTMATH)
def scores4(q, k, gate, has_gate, scale, zero, i, o, dim, j0, j1, j2, j3, e0, e1, e2, e3):
    """Scaled dot products (the part a score clamp bounds) of query i with keys j0..j3 (edges e0..e3) over
    columns o..o+dim. Shared by the forward and the backward row pass."""
    if has_gate:
        t0, t1, t2, t3 = zero, zero, zero, zero
        for d in range(dim):
            qd = q[i, o + d]
            t0 += qd * k[j0, o + d] * gate[e0, o + d]
            t1 += qd * k[j1, o + d] * gate[e1, o + d]
            t2 += qd * k[j2, o + d] * gate[e2, o + d]
            t3 += qd * k[j3, o + d] * gate[e3, o + d]
    else:
        t0, t1, t2, t3 = dots4(q, i, k, j0, j1, j2, j3, o, dim, zero)
    return t0 * scale, t1 * scale, t2 * scale, t3 * scale


@njit(inline="always")
def _clamp(t, bound):
    """t limited to [-bound, bound]; NaN stays NaN."""
    return bound if t > bound else (-bound if t < -bound else t)


@njit(inline="always")
def _nan_or_zero(t, zero):
    """NaN for a NaN score, else 0: the weight of an edge of a row whose softmax is undefined."""
    return t if t != t else zero


@njit(inline="always")
def clamp_and_bias4(t0, t1, t2, t3, has_clamp, bound, has_bias, bias, h, e0, e1, e2, e3):
    """Scores from the dot products: clamped to [-bound, bound] (GT's clamp), then the edge bias added
    (so a -inf bias still masks)."""
    if has_clamp:
        t0, t1, t2, t3 = _clamp(t0, bound), _clamp(t1, bound), _clamp(t2, bound), _clamp(t3, bound)
    if has_bias:
        t0, t1 = t0 + bias[e0, h], t1 + bias[e1, h]
        t2, t3 = t2 + bias[e2, h], t3 + bias[e3, h]
    return t0, t1, t2, t3


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention_forward(q, k, v, indices, bias, gate, has_bias, has_gate, has_clamp, bound, scale, zero,
                      use_dropout, keep, keep_scale,
                      seg_row, seg_start, seg_end, seg_slot, chunk_ptr,
                      out, row_max, row_sum, part_out, part_max, part_sum):
    """Streaming (online) softmax per segment. Writes ``out`` [Nq, H*Dv] and the row statistics of
    `row_stats`, ``row_max`` and ``row_sum`` [Nq, H] (or, for rows cut into pieces, each piece's normalised
    output and statistics into ``part_out`` / ``part_max`` / ``part_sum``)."""
    num_edges = indices.shape[0]
    num_heads = row_max.shape[1]
    dim = q.shape[1] // num_heads
    vdim = v.shape[1] // num_heads
    for c in prange(chunk_ptr.shape[0] - 1):
        acc = np.empty(num_heads * vdim, out.dtype)
        run_max = np.empty(num_heads, row_max.dtype)
        run_sum = np.empty(num_heads, row_max.dtype)
        row_nan = np.zeros(num_heads, np.bool_)
        minus_inf = np.full(1, -np.inf, row_max.dtype)[0]
        not_a_number = np.full(1, np.nan, row_max.dtype)[0]
        for s in range(chunk_ptr[c], chunk_ptr[c + 1]):
            i = seg_row[s]
            end = seg_end[s]
            acc[:] = 0.0
            row_nan[:] = False
            run_max[:] = -np.inf
            run_sum[:] = 0.0
            for e0 in range(seg_start[s], end, LANES):
                for u in range(LANES):
                    if e0 + PREFETCH + u < num_edges:
                        ahead = indices[e0 + PREFETCH + u]
                        prefetch_row(k, ahead)
                        prefetch_row(v, ahead)
                last = min(e0 + LANES, end) - 1
                e1, e2, e3 = min(e0 + 1, last), min(e0 + 2, last), min(e0 + 3, last)
                j0, j1, j2, j3 = indices[e0], indices[e1], indices[e2], indices[e3]
                for h in range(num_heads):
                    o = h * dim
                    t0, t1, t2, t3 = scores4(q, k, gate, has_gate, scale, zero, i, o, dim, j0, j1, j2, j3,
                                             e0, e1, e2, e3)
                    t0, t1, t2, t3 = clamp_and_bias4(t0, t1, t2, t3, has_clamp, bound, has_bias, bias, h,
                                                     e0, e1, e2, e3)
                    # missing lanes (row shorter than the group) repeat the last edge: give them no weight
                    if e1 == e0:
                        t1 = minus_inf
                    if e2 == e1:
                        t2 = minus_inf
                    if e3 == e2:
                        t3 = minus_inf
                    if t0 != t0 or t1 != t1 or t2 != t2 or t3 != t3:  # a NaN score makes the row NaN
                        row_nan[h] = True
                        continue
                    top = max(max(t0, t1), max(t2, t3))
                    ov = h * vdim
                    if top > run_max[h]:  # new running maximum: rescale what was accumulated so far
                        if run_max[h] > -np.inf:
                            factor = exp(run_max[h] - top)
                            run_sum[h] *= factor
                            for d in range(vdim):
                                acc[ov + d] *= factor
                        run_max[h] = top
                    elif run_max[h] == -np.inf:  # only -inf scores so far (edges masked by a -inf bias)
                        continue
                    m = run_max[h]
                    p0, p1, p2, p3 = exp(t0 - m), exp(t1 - m), exp(t2 - m), exp(t3 - m)
                    run_sum[h] += (p0 + p1) + (p2 + p3)
                    if use_dropout:
                        p0 = p0 * keep_scale if keep[h, e0] else zero
                        p1 = p1 * keep_scale if keep[h, e1] else zero
                        p2 = p2 * keep_scale if keep[h, e2] else zero
                        p3 = p3 * keep_scale if keep[h, e3] else zero
                    for d in range(vdim):
                        acc[ov + d] += (p0 * v[j0, ov + d] + p1 * v[j1, ov + d]) + (
                            p2 * v[j2, ov + d] + p3 * v[j3, ov + d])
            slot = seg_slot[s]
            for h in range(num_heads):
                o = h * vdim
                top, total = run_max[h], run_sum[h]
                if row_nan[h] or total != total:  # NaN in, NaN out (never a plausible number)
                    inv = not_a_number
                    top, total = not_a_number, not_a_number
                elif total > 0.0:
                    inv = 1.0 / total
                else:  # no edge, or only -inf scores
                    inv = 0.0
                    top = minus_inf
                if slot < 0:
                    row_max[i, h], row_sum[i, h] = top, total
                    for d in range(vdim):
                        out[i, o + d] = acc[o + d] * inv
                else:
                    part_max[slot, h], part_sum[slot, h] = top, total
                    for d in range(vdim):
                        part_out[slot, o + d] = acc[o + d] * inv


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention_backward_rows(q, k, v, indices, bias, gate, has_bias, has_gate, need_dgate, has_clamp, bound,
                            scale, zero, use_dropout, keep, keep_scale,
                            seg_row, seg_start, seg_end, seg_slot, chunk_ptr,
                            out, row_max, row_sum, dout, dlse, dq, part_dq, dscore_weight, dgate, separate_dbias,
                            dbias):
    """Query pass: recompute ``p = exp(s - row_max) / row_sum`` (`row_stats`); with ``delta = dout.out -
    dlse`` the score gradient is ``ds = p (dp - delta)``, ``dp = dout . v`` (``dlse`` [Nq, H] arrives
    through the returned lse). On a row with a NaN score (NaN statistics) the weights are undefined: its
    NaN-score edges get ``p = NaN`` and its other edges no weight and no gradient (``delta = 0``), so the
    NaN reaches that edge's bias, key and value and the row's query, as in the reference, and no further.
    Writes ``dscore_weight`` [E, 2H]: the gradient of the dot products in ``[:, :H]`` (ds, which is also
    dL/dbias, except where a clamp cut it) and the dropped-out weights in ``[:, H:]``, side by side so
    the key pass reads one cache line per edge; ``dq`` [Nq, H*D] (pieces of cut rows into ``part_dq``),
    when asked ``dgate`` [E, H*D], and with a clamp and a bias gradient ``dbias`` [E, H] = ds."""
    num_edges = indices.shape[0]
    num_heads = row_max.shape[1]
    dim = q.shape[1] // num_heads
    vdim = v.shape[1] // num_heads
    for c in prange(chunk_ptr.shape[0] - 1):
        acc = np.empty(num_heads * dim, dq.dtype)
        delta = np.empty(num_heads, row_max.dtype)
        inv_sum = np.empty(num_heads, row_max.dtype)
        for s in range(chunk_ptr[c], chunk_ptr[c + 1]):
            i = seg_row[s]
            end = seg_end[s]
            acc[:] = 0.0
            for h in range(num_heads):
                o = h * vdim
                t = zero
                for d in range(vdim):
                    t += dout[i, o + d] * out[i, o + d]
                delta[h] = t - dlse[i, h] if row_max[i, h] == row_max[i, h] else zero
                inv_sum[h] = 1.0 / row_sum[i, h] if row_sum[i, h] > 0.0 else zero
            for e0 in range(seg_start[s], end, LANES):
                for u in range(LANES):
                    if e0 + PREFETCH + u < num_edges:
                        ahead = indices[e0 + PREFETCH + u]
                        prefetch_row(k, ahead)
                        prefetch_row(v, ahead)
                last = min(e0 + LANES, end) - 1
                e1, e2, e3 = min(e0 + 1, last), min(e0 + 2, last), min(e0 + 3, last)
                j0, j1, j2, j3 = indices[e0], indices[e1], indices[e2], indices[e3]
                for h in range(num_heads):
                    o = h * dim
                    ov = h * vdim
                    top = row_max[i, h]
                    nan_row = top != top
                    p0, p1, p2, p3 = zero, zero, zero, zero
                    inside0, inside1, inside2, inside3 = True, True, True, True
                    if top > -np.inf or nan_row:
                        t0, t1, t2, t3 = scores4(q, k, gate, has_gate, scale, zero, i, o, dim, j0, j1, j2, j3,
                                                 e0, e1, e2, e3)
                        if has_clamp:  # no gradient through a clamped score (as torch.clamp's)
                            inside0, inside1 = -bound <= t0 <= bound, -bound <= t1 <= bound
                            inside2, inside3 = -bound <= t2 <= bound, -bound <= t3 <= bound
                        t0, t1, t2, t3 = clamp_and_bias4(t0, t1, t2, t3, has_clamp, bound, has_bias, bias, h,
                                                         e0, e1, e2, e3)
                        if nan_row:
                            p0, p1 = _nan_or_zero(t0, zero), _nan_or_zero(t1, zero)
                            p2, p3 = _nan_or_zero(t2, zero), _nan_or_zero(t3, zero)
                        else:
                            inv = inv_sum[h]
                            p0, p1 = exp(t0 - top) * inv, exp(t1 - top) * inv
                            p2, p3 = exp(t2 - top) * inv, exp(t3 - top) * inv
                    dp0, dp1, dp2, dp3 = dots4(dout, i, v, j0, j1, j2, j3, ov, vdim, zero)
                    w0, w1, w2, w3 = p0, p1, p2, p3
                    if use_dropout:  # a dropped weight passes no gradient back to its probability
                        f0 = keep_scale if keep[h, e0] else zero
                        f1 = keep_scale if keep[h, e1] else zero
                        f2 = keep_scale if keep[h, e2] else zero
                        f3 = keep_scale if keep[h, e3] else zero
                        w0, w1, w2, w3 = p0 * f0, p1 * f1, p2 * f2, p3 * f3
                        dp0, dp1, dp2, dp3 = dp0 * f0, dp1 * f1, dp2 * f2, dp3 * f3
                    ds0, ds1 = p0 * (dp0 - delta[h]), p1 * (dp1 - delta[h])
                    ds2, ds3 = p2 * (dp2 - delta[h]), p3 * (dp3 - delta[h])
                    dt0, dt1, dt2, dt3 = ds0, ds1, ds2, ds3  # the gradient of the dot products
                    if has_clamp:
                        dt0, dt1 = dt0 if inside0 else zero, dt1 if inside1 else zero
                        dt2, dt3 = dt2 if inside2 else zero, dt3 if inside3 else zero
                    # missing lanes repeat the last edge: they must neither write nor accumulate
                    if e1 == e0:
                        dt1 = zero
                    if e2 == e1:
                        dt2 = zero
                    if e3 == e2:
                        dt3 = zero
                    hw = num_heads + h
                    dscore_weight[e0, h], dscore_weight[e0, hw] = dt0, w0
                    if e1 > e0:
                        dscore_weight[e1, h], dscore_weight[e1, hw] = dt1, w1
                    if e2 > e1:
                        dscore_weight[e2, h], dscore_weight[e2, hw] = dt2, w2
                    if e3 > e2:
                        dscore_weight[e3, h], dscore_weight[e3, hw] = dt3, w3
                    if separate_dbias:  # clamped: the bias (added after the clamp) gets all of ds
                        dbias[e0, h] = ds0
                        if e1 > e0:
                            dbias[e1, h] = ds1
                        if e2 > e1:
                            dbias[e2, h] = ds2
                        if e3 > e2:
                            dbias[e3, h] = ds3
                    c0, c1, c2, c3 = dt0 * scale, dt1 * scale, dt2 * scale, dt3 * scale
                    if has_gate:
                        for x in range(o, o + dim):
                            acc[x] += (c0 * k[j0, x] * gate[e0, x] + c1 * k[j1, x] * gate[e1, x]) + (
                                c2 * k[j2, x] * gate[e2, x] + c3 * k[j3, x] * gate[e3, x])
                        if need_dgate:
                            for u in range(LANES):
                                if e0 + u <= last:
                                    cu = c0 if u == 0 else (c1 if u == 1 else (c2 if u == 2 else c3))
                                    ju = indices[e0 + u]
                                    for d in range(dim):
                                        dgate[e0 + u, o + d] = cu * q[i, o + d] * k[ju, o + d]
                    else:
                        for d in range(dim):
                            acc[o + d] += (c0 * k[j0, o + d] + c1 * k[j1, o + d]) + (
                                c2 * k[j2, o + d] + c3 * k[j3, o + d])
            slot = seg_slot[s]
            if slot < 0:
                for x in range(num_heads * dim):
                    dq[i, x] = acc[x]
            else:
                for x in range(num_heads * dim):
                    part_dq[slot, x] = acc[x]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention_backward_keys(q, gate, has_gate, scale, zero, row_indices, edge_id,
                            seg_col, seg_start, seg_end, seg_slot, chunk_ptr,
                            dout, dscore_weight, dk, dv, part_dk, part_dv):
    """Key pass over the transposed (CSC) pattern: ``dk[j] = scale * sum_e ds_e q_i (* gate_e)``,
    ``dv[j] = sum_e w_e dout_i``; each key column is owned by one task, so no atomics."""
    num_entries = row_indices.shape[0]
    num_heads = dscore_weight.shape[1] // 2
    dim = q.shape[1] // num_heads
    vdim = dout.shape[1] // num_heads
    for c in prange(chunk_ptr.shape[0] - 1):
        acc_k = np.empty(num_heads * dim, dk.dtype)
        acc_v = np.empty(num_heads * vdim, dv.dtype)
        for s in range(chunk_ptr[c], chunk_ptr[c + 1]):
            j = seg_col[s]
            end = seg_end[s]
            acc_k[:] = 0.0
            acc_v[:] = 0.0
            for t0 in range(seg_start[s], end, LANES):
                for u in range(LANES):
                    if t0 + PREFETCH + u < num_entries:
                        ahead = row_indices[t0 + PREFETCH + u]
                        prefetch_row(q, ahead)
                        prefetch_row(dout, ahead)
                        edge_ahead = edge_id[t0 + PREFETCH + u]
                        prefetch_row(dscore_weight, edge_ahead)
                        if has_gate:
                            prefetch_row(gate, edge_ahead)
                last = min(t0 + LANES, end) - 1
                t1, t2, t3 = min(t0 + 1, last), min(t0 + 2, last), min(t0 + 3, last)
                i0, i1, i2, i3 = row_indices[t0], row_indices[t1], row_indices[t2], row_indices[t3]
                e0, e1, e2, e3 = edge_id[t0], edge_id[t1], edge_id[t2], edge_id[t3]
                for h in range(num_heads):
                    c0, c1 = dscore_weight[e0, h] * scale, dscore_weight[e1, h] * scale
                    c2, c3 = dscore_weight[e2, h] * scale, dscore_weight[e3, h] * scale
                    hw = num_heads + h
                    w0, w1 = dscore_weight[e0, hw], dscore_weight[e1, hw]
                    w2, w3 = dscore_weight[e2, hw], dscore_weight[e3, hw]
                    if t1 == t0:
                        c1, w1 = zero, zero
                    if t2 == t1:
                        c2, w2 = zero, zero
                    if t3 == t2:
                        c3, w3 = zero, zero
                    o = h * dim
                    if has_gate:
                        for x in range(o, o + dim):
                            acc_k[x] += (c0 * q[i0, x] * gate[e0, x] + c1 * q[i1, x] * gate[e1, x]) + (
                                c2 * q[i2, x] * gate[e2, x] + c3 * q[i3, x] * gate[e3, x])
                    else:
                        for d in range(dim):
                            acc_k[o + d] += (c0 * q[i0, o + d] + c1 * q[i1, o + d]) + (
                                c2 * q[i2, o + d] + c3 * q[i3, o + d])
                    ov = h * vdim
                    for d in range(vdim):
                        acc_v[ov + d] += (w0 * dout[i0, ov + d] + w1 * dout[i1, ov + d]) + (
                            w2 * dout[i2, ov + d] + w3 * dout[i3, ov + d])
            slot = seg_slot[s]
            if slot < 0:
                for x in range(num_heads * dim):
                    dk[j, x] = acc_k[x]
                for x in range(num_heads * vdim):
                    dv[j, x] = acc_v[x]
            else:
                for x in range(num_heads * dim):
                    part_dk[slot, x] = acc_k[x]
                for x in range(num_heads * vdim):
                    part_dv[slot, x] = acc_v[x]
