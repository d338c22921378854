"""Triton kernels of the ``triton`` backend: forward, backward query pass, backward key pass, and the merges
of rows cut into segments.

Work unit: one program per (segment, head). A segment is a run of at most ``piece`` consecutive edges of
one query row (CSR) or one key column (CSC), so a hub row is spread over many programs and rows of very
different lengths cost about the same per program (`triton_backend.segments`). A program walks its
segment in blocks of ``BLOCK_E`` edges: it gathers the keys (or queries) of a block as a
[BLOCK_E, BLOCK_D] tile and keeps an online softmax (running maximum ``m``, running sum ``l``, output
accumulator) in registers. Segments of one row are merged afterwards, in order, by `merge_forward_kernel`
(by their maxima and sums) and `merge_sum_kernel` (gradients): no atomics, deterministic results.

Every tensor is C-contiguous: q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H], gate [E, H, D].
Accumulation is in ``ACC`` (float32, or float64 for float64 inputs); loads are cast to it and stores cast
back to the output's dtype.

The forward keeps the row maximum ``m`` and ``log l`` (the log of the sum of exp(s - m)) apart, and the
backward rebuilds a weight as exp((s - m) - log l): exact at any constant offset of the scores, where
exp(s - lse) with a float32 lse would lose the digits of s - m to the offset.

Dropout: the same counter-based hash as `dropout.keep_mask` (int64 arithmetic, constants below 2**31),
computed in the kernels from (seed, edge, head), so the mask equals the CPU kernels' bit for bit.

NaN: a NaN score sets the row's flag; its output and lse are NaN (as the reference). A row whose every
score is -inf (or that has no edges) gives zeros and lse -inf.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Triton kernels read module constants only as constexpr values
MASK32 = tl.constexpr(0xFFFFFFFF)
MIX1 = tl.constexpr(0x7FEB352D)
MIX2 = tl.constexpr(0x5BD1E995)
HEAD_MIX = tl.constexpr(0x27D4EB2F)


@triton.jit
def _hash32(x):
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * MIX1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX2) & MASK32
    x = x ^ (x >> 16)
    return x


@triton.jit
def _keep(edge, head, seed_lo, seed_hi, threshold):
    """[BLOCK_E] bool: True where (edge, head) survives dropout (bit for bit `dropout.keep_mask`)."""
    bits = _hash32(_hash32(edge.to(tl.int64) ^ seed_lo) + seed_hi)
    return _hash32(bits ^ ((head.to(tl.int64) * HEAD_MIX) & MASK32)) >= threshold


@triton.jit
def _scalars(scalars):
    """(scale, clamp, keep_scale) from a 3-element tensor in the accumulator's dtype (Triton passes Python
    floats as float32, which would round them for float64 inputs)."""
    return tl.load(scalars), tl.load(scalars + 1), tl.load(scalars + 2)


@triton.jit
def _scores(q_row, k, gate, e, j, emask, d, dmask, h, H, D, bias, scale, clamp,
            HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_CLAMP: tl.constexpr, ACC: tl.constexpr):
    """Scores of one block: ``(t, kj, clamped, nan)``, all [BLOCK_E] but ``kj`` [BLOCK_E, BLOCK_D].

    t = clamp(scale * q.(k*gate)) + bias, -inf on lanes past the segment and on NaN scores (``nan`` flags
    those); ``kj`` the gathered keys (times the gate), ``clamped`` where the clamp cut the dot product."""
    tile = emask[:, None] & dmask[None, :]
    kj = tl.load(k + (j * H + h)[:, None] * D + d[None, :], mask=tile, other=0.0).to(ACC)
    if HAS_GATE:
        g = tl.load(gate + (e * H + h)[:, None] * D + d[None, :], mask=tile, other=0.0).to(ACC)
        kj = kj * g
    t = tl.sum(q_row[None, :] * kj, axis=1) * scale
    nan = t != t
    clamped = e < 0  # no lane clamped (edge ids are never negative)
    if HAS_CLAMP:
        clamped = (t > clamp) | (t < -clamp)
        t = tl.where(t > clamp, clamp, tl.where(t < -clamp, -clamp, t))
    if HAS_BIAS:
        t = t + tl.load(bias + e * H + h, mask=emask, other=0.0).to(ACC)
    nan = (nan | (t != t)) & emask
    t = tl.where(emask & (t == t), t, float("-inf"))
    return t, kj, clamped, nan


@triton.jit
def _normalised(acc, total, m, any_nan):
    """``(acc / total, m, log total)`` of an online softmax; zeros, -inf and 0 where no score was finite
    (``total`` 0), NaN output and maximum where a score was NaN (``any_nan``)."""
    has_weight = total > 0
    result = acc / tl.where(has_weight, total, 1.0)
    logsum = tl.where(has_weight, tl.log(tl.where(has_weight, total, 1.0)), 0.0)
    m = tl.where(has_weight, m, float("-inf"))
    if any_nan > 0:
        result = result + float("nan")
        m = m + float("nan")
    return result, m, logsum


@triton.jit
def forward_kernel(q, k, v, indices, bias, gate, seg_row, seg_start, seg_end, out, row_max, row_logsum,
                   H, D, DV, scalars, seed_lo, seed_hi, threshold,
                   HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_CLAMP: tl.constexpr,
                   HAS_DROPOUT: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_DV: tl.constexpr, ACC: tl.constexpr):
    """One (segment, head): ``out[s, h]`` [Dv] (normalised over the segment), ``row_max[s, h]`` and
    ``row_logsum[s, h]`` (log of the sum of exp(score - max); 0 where the segment has no finite score)."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    scale, clamp, keep_scale = _scalars(scalars)
    i = tl.load(seg_row + s)
    start = tl.load(seg_start + s)
    end = tl.load(seg_end + s)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    dv = tl.arange(0, BLOCK_DV)
    dvmask = dv < DV
    q_row = tl.load(q + (i * H + h) * D + d, mask=dmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_DV], dtype=ACC)
    m = tl.full([], float("-inf"), ACC)
    total = tl.zeros([], dtype=ACC)
    any_nan = tl.zeros([], dtype=tl.int32)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        emask = e < end
        j = tl.load(indices + e, mask=emask, other=0)
        t, kj, clamped, nan = _scores(q_row, k, gate, e, j, emask, d, dmask, h, H, D, bias, scale, clamp,
                                      HAS_BIAS, HAS_GATE, HAS_CLAMP, ACC)
        any_nan = any_nan | tl.max(nan.to(tl.int32), axis=0)
        m_new = tl.maximum(m, tl.max(t, axis=0))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_use)
        p = tl.exp(t - m_use)
        total = total * alpha + tl.sum(p, axis=0)
        if HAS_DROPOUT:
            p = tl.where(_keep(e, h, seed_lo, seed_hi, threshold), p, 0.0)
        vj = tl.load(v + (j * H + h)[:, None] * DV + dv[None, :], mask=emask[:, None] & dvmask[None, :],
                     other=0.0).to(ACC)
        acc = acc * alpha + tl.sum(p[:, None] * vj, axis=0)
        m = m_new
    result, m, logsum = _normalised(acc, total, m, any_nan)
    if HAS_DROPOUT:
        result = result * keep_scale
    tl.store(out + (s * H + h) * DV + dv, result.to(out.dtype.element_ty), mask=dvmask)
    tl.store(row_max + s * H + h, m)
    tl.store(row_logsum + s * H + h, logsum)


@triton.jit
def merge_forward_kernel(part_out, part_max, part_logsum, seg_ptr, out, row_max, row_logsum, H, DV,
                         BLOCK_DV: tl.constexpr, ACC: tl.constexpr):
    """One (row, head): the row's segments (``seg_ptr[i]`` to ``seg_ptr[i+1]``, in order) merged by their
    maxima and sums into ``out[i, h]``, ``row_max[i, h]``, ``row_logsum[i, h]``."""
    i = tl.program_id(0)
    h = tl.program_id(1)
    first = tl.load(seg_ptr + i)
    last = tl.load(seg_ptr + i + 1)
    dv = tl.arange(0, BLOCK_DV)
    dvmask = dv < DV
    m = tl.full([], float("-inf"), ACC)
    for s in range(first, last):
        m = tl.maximum(m, tl.load(part_max + s * H + h))
    m_use = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BLOCK_DV], dtype=ACC)
    total = tl.zeros([], dtype=ACC)
    any_nan = tl.zeros([], dtype=tl.int32)
    for s in range(first, last):
        ms = tl.load(part_max + s * H + h)
        any_nan = any_nan | (ms != ms).to(tl.int32)
        weight = tl.where(ms == float("-inf"), 0.0, tl.exp(ms - m_use + tl.load(part_logsum + s * H + h)))
        acc += weight * tl.load(part_out + (s * H + h) * DV + dv, mask=dvmask, other=0.0).to(ACC)
        total += weight
    result, m, logsum = _normalised(acc, total, m, any_nan)
    tl.store(out + (i * H + h) * DV + dv, result.to(out.dtype.element_ty), mask=dvmask)
    tl.store(row_max + i * H + h, m)
    tl.store(row_logsum + i * H + h, logsum)


@triton.jit
def backward_rows_kernel(q, k, v, indices, bias, gate, seg_row, seg_start, seg_end,
                         out, row_max, row_logsum, dout, dlse,
                         dq, dscore, dweight, dbias, dgate,
                         H, D, DV, scalars, seed_lo, seed_hi, threshold,
                         HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_CLAMP: tl.constexpr,
                         HAS_DROPOUT: tl.constexpr, NEED_DBIAS: tl.constexpr, NEED_DGATE: tl.constexpr,
                         BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                         ACC: tl.constexpr):
    """One (segment, head) of the query pass: ``dq[s, h]`` (of the segment), and per edge the score
    gradient ``dbias[e, h]``, the gradient past the clamp ``dscore[e, h]`` and the dropped-out weight
    ``dweight[e, h]`` that the key pass reads, and ``dgate[e, h]``.

    With p = exp((s - m) - log l), dP = dout . v (times the dropout factor) and Delta = dout . out:
    dL/ds = p (dP - Delta + dlse)."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    scale, clamp, keep_scale = _scalars(scalars)
    i = tl.load(seg_row + s)
    start = tl.load(seg_start + s)
    end = tl.load(seg_end + s)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    dv = tl.arange(0, BLOCK_DV)
    dvmask = dv < DV
    q_row = tl.load(q + (i * H + h) * D + d, mask=dmask, other=0.0).to(ACC)
    dout_row = tl.load(dout + (i * H + h) * DV + dv, mask=dvmask, other=0.0).to(ACC)
    out_row = tl.load(out + (i * H + h) * DV + dv, mask=dvmask, other=0.0).to(ACC)
    delta = tl.sum(dout_row * out_row, axis=0)
    m = tl.load(row_max + i * H + h)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    logsum = tl.load(row_logsum + i * H + h)
    dlse_row = tl.load(dlse + i * H + h).to(ACC)
    dq_acc = tl.zeros([BLOCK_D], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        emask = e < end
        j = tl.load(indices + e, mask=emask, other=0)
        t, kj, clamped, nan = _scores(q_row, k, gate, e, j, emask, d, dmask, h, H, D, bias, scale, clamp,
                                      HAS_BIAS, HAS_GATE, HAS_CLAMP, ACC)
        p = tl.where(t == float("-inf"), 0.0, tl.exp((t - m_use) - logsum))
        p = tl.where(nan, float("nan"), p)
        vj = tl.load(v + (j * H + h)[:, None] * DV + dv[None, :], mask=emask[:, None] & dvmask[None, :],
                     other=0.0).to(ACC)
        dp = tl.sum(dout_row[None, :] * vj, axis=1)
        weight = p
        if HAS_DROPOUT:
            factor = tl.where(_keep(e, h, seed_lo, seed_hi, threshold), keep_scale, 0.0)
            dp = dp * factor
            weight = p * factor
        ds = p * (dp - delta + dlse_row)
        if NEED_DBIAS:
            tl.store(dbias + e * H + h, ds.to(dbias.dtype.element_ty), mask=emask)
        if HAS_CLAMP:
            ds = tl.where(clamped, 0.0, ds)
        tl.store(dscore + e * H + h, ds, mask=emask)
        tl.store(dweight + e * H + h, weight, mask=emask)
        dq_acc += tl.sum(ds[:, None] * kj, axis=0) * scale
        if NEED_DGATE:
            kraw = tl.load(k + (j * H + h)[:, None] * D + d[None, :], mask=emask[:, None] & dmask[None, :],
                           other=0.0).to(ACC)
            tl.store(dgate + (e * H + h)[:, None] * D + d[None, :],
                     (ds[:, None] * scale * q_row[None, :] * kraw).to(dgate.dtype.element_ty),
                     mask=emask[:, None] & dmask[None, :])
    tl.store(dq + (s * H + h) * D + d, dq_acc.to(dq.dtype.element_ty), mask=dmask)


@triton.jit
def backward_keys_kernel(q, gate, row_indices, edge_id, seg_col, seg_start, seg_end, dout, dscore, dweight,
                         dk, dv_out, H, D, DV, scalars,
                         HAS_GATE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_DV: tl.constexpr, ACC: tl.constexpr):
    """One (segment of a key column, head) over the transposed pattern: ``dk[s, h] = scale * sum_e
    dscore[e] q[i] (* gate[e])`` and ``dv[s, h] = sum_e dweight[e] dout[i]`` over the column's edges."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    scale, _, _ = _scalars(scalars)
    start = tl.load(seg_start + s)
    end = tl.load(seg_end + s)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    dv = tl.arange(0, BLOCK_DV)
    dvmask = dv < DV
    dk_acc = tl.zeros([BLOCK_D], dtype=ACC)
    dv_acc = tl.zeros([BLOCK_DV], dtype=ACC)
    for c0 in range(start, end, BLOCK_E):
        c = c0 + tl.arange(0, BLOCK_E)
        cmask = c < end
        i = tl.load(row_indices + c, mask=cmask, other=0)
        e = tl.load(edge_id + c, mask=cmask, other=0)
        tile = cmask[:, None] & dmask[None, :]
        qi = tl.load(q + (i * H + h)[:, None] * D + d[None, :], mask=tile, other=0.0).to(ACC)
        if HAS_GATE:
            qi = qi * tl.load(gate + (e * H + h)[:, None] * D + d[None, :], mask=tile, other=0.0).to(ACC)
        ds = tl.load(dscore + e * H + h, mask=cmask, other=0.0)
        dk_acc += tl.sum(ds[:, None] * qi, axis=0) * scale
        do = tl.load(dout + (i * H + h)[:, None] * DV + dv[None, :], mask=cmask[:, None] & dvmask[None, :],
                     other=0.0).to(ACC)
        dv_acc += tl.sum(tl.load(dweight + e * H + h, mask=cmask, other=0.0)[:, None] * do, axis=0)
    tl.store(dk + (s * H + h) * D + d, dk_acc.to(dk.dtype.element_ty), mask=dmask)
    tl.store(dv_out + (s * H + h) * DV + dv, dv_acc.to(dv_out.dtype.element_ty), mask=dvmask)


@triton.jit
def merge_sum_kernel(parts, seg_ptr, total, H, W, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """One (row, head): ``total[i, h] = sum of parts[s, h]`` over the row's segments, in order."""
    i = tl.program_id(0)
    h = tl.program_id(1)
    w = tl.arange(0, BLOCK_W)
    wmask = w < W
    acc = tl.zeros([BLOCK_W], dtype=ACC)
    for s in range(tl.load(seg_ptr + i), tl.load(seg_ptr + i + 1)):
        acc += tl.load(parts + (s * H + h) * W + w, mask=wmask, other=0.0).to(ACC)
    tl.store(total + (i * H + h) * W + w, acc.to(total.dtype.element_ty), mask=wmask)
