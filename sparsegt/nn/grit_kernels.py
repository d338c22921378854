"""Fused CPU kernels (numba) for GRIT's attention on a CSR pattern: one pass over the entries instead of
a dozen elementwise [E, C] tensors, and nothing of size [E, C] kept for the backward except what the
layer keeps anyway.

- `pair_hat`: ``ê_e = ReLU(ρ((q_i + k_j) ⊙ w_e) + b_e)`` for every entry e = (i, j), with
  ``ρ(u) = sqrt(|u| + eps) - sqrt(eps)`` signed like u (the value of `grit.signed_sqrt`), and the
  attention score of each head ``w_A · ê_e`` while ê is at hand. The backward recomputes ``q_i + k_j``
  and u from the inputs instead of storing them.
- `weighted_sums`: ``out_v[i] = sum_e a_e v_j`` and ``out_e[i] = sum_e a_e ê_e`` per head, the two
  aggregations of GRIT's attention in one pass over each row.

Rows are cut into chunks of about equal edge counts, one per thread. The key-side gradients
(``dk``, ``dv``) are summed per chunk in [chunks, Nk, C] buffers and added up afterwards, so no two
threads write the same memory. Inputs are C-contiguous float32 or float64 arrays; heads are flattened
(``C = H * D``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["pair_hat_forward", "pair_hat_backward", "weighted_sums_forward",
           "weighted_sums_backward"]

PARALLEL_MIN_WORK = 1 << 18  # E * C below which one thread beats waking a second one (`thread_count`)


# Written with row views and without branches in the channel loops, so that LLVM vectorises them.
@numba.njit(parallel=True, cache=True)
def pair_hat_forward(indptr, indices, bounds, q, k, weight, bias, score_weight, out, score, eps, sqrt_eps,
                     head_dim):  # pragma: no cover
    """out[e] = relu(rho((q[i] + k[j]) * weight[e]) + bias[e]) (all [*, C]) and its per-head score
    score[e, h] = sum_{d in head h} out[e, d] * score_weight[d] ([E, H]; score_weight [C])."""
    channels = q.shape[1]
    heads = channels // head_dim
    for c in numba.prange(len(bounds) - 1):
        for i in range(bounds[c], bounds[c + 1]):
            q_row = q[i]
            for e in range(indptr[i], indptr[i + 1]):
                k_row, w_row, b_row, o_row = k[indices[e]], weight[e], bias[e], out[e]
                for f in range(channels):
                    u = (q_row[f] + k_row[f]) * w_row[f]
                    s = math.copysign(math.sqrt(abs(u) + eps) - sqrt_eps, u)
                    o_row[f] = max(s + b_row[f], 0.0)
                for h in range(heads):
                    total = 0.0
                    for d in range(h * head_dim, (h + 1) * head_dim):
                        total += o_row[d] * score_weight[d]
                    score[e, h] = total


@numba.njit(parallel=True, cache=True)
def pair_hat_backward(indptr, indices, bounds, q, k, weight, score_weight, out, grad_out, grad_score, grad_weight,
                      grad_bias, grad_q, grad_k_parts, grad_score_weight_parts, eps, head_dim):  # pragma: no cover
    """Gradients of `pair_hat_forward`: grad_weight, grad_bias [E, C] and grad_q [N, C] (written in full);
    grad_k_parts [chunks, Nk, C] and grad_score_weight_parts [chunks, C] (zero on entry, summed by the
    caller). ReLU'(0) = 0 and rho'(0) = 0 (rho is built from two ReLUs), as torch's autograd gives."""
    channels = q.shape[1]
    heads = channels // head_dim
    for c in numba.prange(len(bounds) - 1):
        grad_k = grad_k_parts[c]
        grad_score_weight = grad_score_weight_parts[c]
        acc_q = np.empty(channels, dtype=q.dtype)
        grad_t = np.empty(channels, dtype=q.dtype)
        score_wide = np.empty(channels, dtype=q.dtype)  # the entry's score gradient, one per channel
        for i in range(bounds[c], bounds[c + 1]):
            q_row = q[i]
            acc_q[:] = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                k_row, w_row, o_row, g_row = k[j], weight[e], out[e], grad_out[e]
                gw_row, gb_row, gs_row = grad_weight[e], grad_bias[e], grad_score[e]
                for h in range(heads):
                    for d in range(h * head_dim, (h + 1) * head_dim):
                        score_wide[d] = gs_row[h]
                for f in range(channels):
                    grad_score_weight[f] += score_wide[f] * o_row[f]
                    g = g_row[f] + score_wide[f] * score_weight[f]
                    g = g if o_row[f] > 0 else 0.0
                    t = q_row[f] + k_row[f]
                    u = t * w_row[f]
                    g_u = 0.5 * g / math.sqrt(abs(u) + eps)
                    g_u = g_u if u != 0 else 0.0
                    gb_row[f] = g
                    gw_row[f] = g_u * t
                    grad_t[f] = g_u * w_row[f]
                gk_row = grad_k[j]
                for f in range(channels):
                    acc_q[f] += grad_t[f]
                    gk_row[f] += grad_t[f]
            grad_q[i, :] = acc_q


@numba.njit(parallel=True, cache=True)
def weighted_sums_forward(indptr, indices, bounds, attn, value, pair, out_value, out_pair,
                          head_dim):  # pragma: no cover
    """out_value[i] = sum_e attn[e, h] value[j]; out_pair[i] = sum_e attn[e, h] pair[e] (per head h).
    attn [E, H]; value [Nk, C]; pair [E, C]; outputs [N, C] (written in full)."""
    heads, channels = attn.shape[1], value.shape[1]
    for c in numba.prange(len(bounds) - 1):
        a_wide = np.empty(channels, dtype=value.dtype)  # the entry's weights, one per channel
        acc_value = np.empty(channels, dtype=value.dtype)
        acc_pair = np.empty(channels, dtype=value.dtype)
        for i in range(bounds[c], bounds[c + 1]):
            acc_value[:] = 0.0
            acc_pair[:] = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                a_row, v_row, p_row = attn[e], value[indices[e]], pair[e]
                for h in range(heads):
                    for d in range(h * head_dim, (h + 1) * head_dim):
                        a_wide[d] = a_row[h]
                for d in range(channels):
                    acc_value[d] += a_wide[d] * v_row[d]
                    acc_pair[d] += a_wide[d] * p_row[d]
            out_value[i, :] = acc_value
            out_pair[i, :] = acc_pair


@numba.njit(parallel=True, cache=True)
def weighted_sums_backward(indptr, indices, bounds, attn, value, pair, grad_value_out, grad_pair_out,
                           grad_attn, grad_pair, grad_value_parts, head_dim):  # pragma: no cover
    """Gradients of `weighted_sums_forward`: grad_attn [E, H], grad_pair [E, C] (written in full),
    grad_value_parts [chunks, Nk, C] (zero on entry, summed by the caller)."""
    heads, channels = attn.shape[1], value.shape[1]
    for c in numba.prange(len(bounds) - 1):
        grad_value = grad_value_parts[c]
        a_wide = np.empty(channels, dtype=value.dtype)
        product = np.empty(channels, dtype=value.dtype)
        for i in range(bounds[c], bounds[c + 1]):
            gv_row, gp_row = grad_value_out[i], grad_pair_out[i]
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                a_row, v_row, p_row, ga_row = attn[e], value[j], pair[e], grad_attn[e]
                gvk_row, gpe_row = grad_value[j], grad_pair[e]
                for h in range(heads):
                    for d in range(h * head_dim, (h + 1) * head_dim):
                        a_wide[d] = a_row[h]
                for d in range(channels):
                    product[d] = gv_row[d] * v_row[d] + gp_row[d] * p_row[d]
                    gpe_row[d] = a_wide[d] * gp_row[d]
                    gvk_row[d] += a_wide[d] * gv_row[d]
                for h in range(heads):
                    total = 0.0
                    for d in range(h * head_dim, (h + 1) * head_dim):
                        total += product[d]
                    ga_row[h] = total
