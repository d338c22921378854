"""Fused CPU kernels (numba) for GatedGCN's gated aggregation on a CSR graph.

For every edge t = (i <- j) and channel f::

    ê_t = d_i + e_j + c_t          σ_t = r_t sigmoid(ê_t)
    agg_i = (sum_t σ_t b_j) / (sum_t σ_t + 1e-6)

with an optional per-edge gate ``r_t`` (``scale`` [E]; EquivStableLapPE's, `sparsegt.nn.ExphormerLayer`;
without it ``r_t = 1``).

The torch version gathers d_i, e_j and b_j onto the edges and builds σ and σ b_j: six [E, C] tensors
per layer, each a pass over memory (and a fresh allocation, which is slow on some machines). Here one
pass over each row writes ê (the layer needs it: it is the new edge state before its norm) and the
aggregate; the backward recomputes σ from ê and runs a row pass (``dê``, ``dd``) and a key pass over
the transposed graph (``de``, ``db``), so no two threads write the same memory.

``c`` is [E, C] or one [1, C] row shared by every edge (a graph without edge features). Inputs are
C-contiguous float32 or float64 arrays.
"""

from __future__ import annotations

import numba
import numpy as np

from ..attention.numba_runtime import exp

__all__ = ["gated_forward", "gated_backward_rows", "gated_backward_keys", "EPS"]

EPS = 1e-6  # in the denominator, as Benchmarking-GNNs and GraphGPS
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf inputs stay visible


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def gated_forward(indptr, indices, bounds, d, e, b, c, per_edge, scale, has_scale, one, edge_hat, agg,
                  den):  # pragma: no cover
    """Writes ``edge_hat`` [E, C], ``agg`` [N, C] and ``den`` [N, C] (the denominator, 1e-6 included).
    ``scale`` [E] (read when ``has_scale``). ``one``: 1 in the arrays' dtype (a float64 literal would turn
    float32 loops into float64 ones)."""
    channels = d.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        num = np.empty(channels, d.dtype)
        total = np.empty(channels, d.dtype)
        for i in range(bounds[chunk], bounds[chunk + 1]):
            num[:] = 0.0
            total[:] = 0.0
            d_row = d[i]
            for t in range(indptr[i], indptr[i + 1]):
                j = indices[t]
                e_row, b_row, out = e[j], b[j], edge_hat[t]
                c_row = c[t] if per_edge else c[0]
                r = scale[t] if has_scale else one
                for f in range(channels):  # two short loops, not one: each has few enough arrays to vectorise
                    out[f] = d_row[f] + e_row[f] + c_row[f]
                for f in range(channels):
                    s = r / (one + exp(-out[f]))  # r sigmoid
                    num[f] += s * b_row[f]
                    total[f] += s
            for f in range(channels):
                den[i, f] = total[f] + EPS
                agg[i, f] = num[f] / den[i, f]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def gated_backward_rows(indptr, indices, bounds, b, edge_hat, agg, den, grad_agg, grad_hat, has_grad_hat, scale,
                        has_scale, one, grad_edge, grad_d, grad_num, grad_scale):  # pragma: no cover
    """Row pass: ``grad_num`` [N, C] = dL/d(numerator); ``grad_edge`` [E, C] = dL/dê (the edge-feature
    gradient, ``grad_hat`` [E, C] included); ``grad_d`` [N, C] its row sums; ``grad_scale`` [E] = dL/dr
    (written when ``has_scale``)."""
    channels = b.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        g_den = np.empty(channels, b.dtype)
        acc = np.empty(channels, b.dtype)
        for i in range(bounds[chunk], bounds[chunk + 1]):
            g_num = grad_num[i]
            for f in range(channels):
                g_num[f] = grad_agg[i, f] / den[i, f]
                g_den[f] = -g_num[f] * agg[i, f]
                acc[f] = 0.0
            for t in range(indptr[i], indptr[i + 1]):
                b_row, h_row, g_row = b[indices[t]], edge_hat[t], grad_edge[t]
                g_hat = grad_hat[t] if has_grad_hat else grad_hat[0]
                r = scale[t] if has_scale else one
                g_r = one - one  # 0 in the arrays' dtype
                for f in range(channels):
                    s = one / (one + exp(-h_row[f]))
                    g_sigma = g_num[f] * b_row[f] + g_den[f]  # dL/d(r σ)
                    g = g_sigma * r * s * (one - s)
                    g_r += g_sigma * s  # kept only with a scale (a branch here would stop the vectorising)
                    if has_grad_hat:
                        g += g_hat[f]
                    g_row[f] = g
                    acc[f] += g
                if has_scale:
                    grad_scale[t] = g_r
            for f in range(channels):
                grad_d[i, f] = acc[f]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def gated_backward_keys(col_indptr, row_indices, edge_id, bounds, edge_hat, grad_num, grad_edge, scale, has_scale,
                        one, grad_e, grad_b):  # pragma: no cover
    """Key pass over the transposed graph: ``grad_e[j] = sum_t dê_t``, ``grad_b[j] = sum_t dnum_i σ_t``."""
    channels = grad_e.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        for j in range(bounds[chunk], bounds[chunk + 1]):
            g_e, g_b = grad_e[j], grad_b[j]
            g_e[:] = 0.0
            g_b[:] = 0.0
            for t in range(col_indptr[j], col_indptr[j + 1]):
                edge = edge_id[t]
                h_row, g_row, g_num = edge_hat[edge], grad_edge[edge], grad_num[row_indices[t]]
                r = scale[edge] if has_scale else one
                for f in range(channels):
                    g_e[f] += g_row[f]
                    g_b[f] += g_num[f] * (r / (one + exp(-h_row[f])))
