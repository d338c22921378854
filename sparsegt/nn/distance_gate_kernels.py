"""Fused CPU kernels (numba) for EquivStableLapPE's gate, a scalar MLP applied to every edge.

    r_t = sigmoid(b2 + sum_k w2_k relu(w1_k d_t + b1_k))          d_t, r_t scalars, k = 1..C

As two ``nn.Linear`` layers it builds [E, C] hidden activations (and their ReLU and gradients) from an [E, 1]
input: on PATTERN 10^5 edges x 40 channels per layer, several passes over memory each way, and a matmul
with an inner dimension of 1 that BLAS runs slowly. Here each edge's C hidden units live in registers: the
forward reads d and writes r, the backward reads d, r and the gradient, writes dL/dd and per-chunk partial
sums (float64) of the four parameters' gradients. Inputs: C-contiguous float32 or float64 arrays.
"""

from __future__ import annotations

import numba
import numpy as np

from ..attention.numba_runtime import exp

__all__ = ["gate_forward", "gate_backward"]

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf inputs stay visible


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def gate_forward(d, w1, b1, w2, b2, bounds, zero, one, out):  # pragma: no cover
    """``out[t] = sigmoid(b2 + sum_k w2[k] relu(w1[k] d[t] + b1[k]))`` for the edges of every chunk."""
    hidden = w1.shape[0]
    for chunk in numba.prange(len(bounds) - 1):
        for t in range(bounds[chunk], bounds[chunk + 1]):
            x = d[t]
            z = b2
            for k in range(hidden):
                pre = w1[k] * x + b1[k]
                z += w2[k] * (zero if pre <= zero else pre)  # ReLU that keeps a NaN a NaN
            out[t] = one / (one + exp(-z))


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def gate_backward(d, w1, b1, w2, r, grad, bounds, zero, one, grad_d, grad_w1, grad_b1, grad_w2,
                  grad_b2):  # pragma: no cover
    """``grad_d[t] = dL/dd_t``; per chunk k of edges, float64 partial sums ``grad_w1[k]``, ``grad_b1[k]``,
    ``grad_w2[k]`` [chunks, C] and ``grad_b2[k]`` [chunks] of the parameters' gradients."""
    hidden = w1.shape[0]
    for chunk in numba.prange(len(bounds) - 1):
        g_w1, g_b1, g_w2 = grad_w1[chunk], grad_b1[chunk], grad_w2[chunk]
        g_w1[:] = 0.0
        g_b1[:] = 0.0
        g_w2[:] = 0.0
        g_b2 = 0.0
        for t in range(bounds[chunk], bounds[chunk + 1]):
            x = d[t]
            g_z = grad[t] * r[t] * (one - r[t])
            g_b2 += np.float64(g_z)
            g_x = zero
            for k in range(hidden):
                pre = w1[k] * x + b1[k]
                active = pre > zero
                g_h = g_z * w2[k] if active else zero
                g_w2[k] += np.float64(g_z * pre) if active else 0.0
                g_w1[k] += np.float64(g_h * x)
                g_b1[k] += np.float64(g_h)
                g_x += g_h * w1[k]
            grad_d[t] = g_x
        grad_b2[chunk] = g_b2
