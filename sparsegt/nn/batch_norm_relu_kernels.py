"""Fused CPU kernels (numba) for ``out = skip + ReLU(BatchNorm(x))`` over the rows of an [M, C] array.

The edge stream of GatedGCN ([E, C], E the edges of a batch: 10^5 rows of 64 on PATTERN) is memory-bound
elementwise work: batch norm's statistics, its output, the ReLU and the residual each read and write the
whole array, and their backwards as many again. Here the forward is two passes (the statistics; then the
output, ReLU and residual in one) and the backward two (the two per-channel sums the batch-norm gradient
needs; then the gradient), every pass split into row chunks that threads take one at a time.

Per channel, with ``a = gamma * rstd``: ``z = a (x - mean) + beta``, ``out = skip + max(z, 0)`` (the
subtraction first, as torch: ``a x + (beta - a mean)`` would lose the digits of x when |mean| >> std).
Backward, with ``g' = g [z > 0]``: ``dx = a g' + k (x - mean) + k0`` where (batch statistics)
``k = -a rstd^2 s2 / M``, ``k0 = -a s1 / M``, ``s1 = sum g'``, ``s2 = sum g' (x - mean)``; with running
statistics k = k0 = 0.
Sums and statistics accumulate in float64 (their partial sums per chunk too); inputs are C-contiguous float32
or float64 arrays, ``skip`` [M, C] or one [1, C] row for every row.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["shifted_moments", "normalize_relu", "relu_grad_sums", "normalize_relu_backward"]

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf inputs stay visible


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def shifted_moments(x, shift, bounds, partial_sum, partial_square):  # pragma: no cover
    """Per chunk of rows, ``partial_sum[k] = sum (x - shift)`` and ``partial_square[k] = sum (x - shift)^2``
    [chunks, C] float64 (a shift near the mean keeps the variance ``E[d^2] - E[d]^2`` exact)."""
    channels = x.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        total = partial_sum[chunk]
        square = partial_square[chunk]
        total[:] = 0.0
        square[:] = 0.0
        for r in range(bounds[chunk], bounds[chunk + 1]):
            row = x[r]
            for f in range(channels):
                d = np.float64(row[f]) - shift[f]
                total[f] += d
                square[f] += d * d


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def normalize_relu(x, mean, scale, beta, skip, has_skip, zero, bounds, out):  # pragma: no cover
    """``out = skip + max(scale (x - mean) + beta, 0)`` row by row (``mean``, ``scale``, ``beta`` [C]; ``skip``
    [M, C] or [1, C], read when ``has_skip``; ``zero``: 0 in the arrays' dtype, so float32 loops stay
    float32)."""
    channels = x.shape[1]
    per_row = skip.shape[0] == x.shape[0]
    for chunk in numba.prange(len(bounds) - 1):
        for r in range(bounds[chunk], bounds[chunk + 1]):
            row, target = x[r], out[r]
            base = skip[r] if per_row else skip[0]
            for f in range(channels):
                z = scale[f] * (row[f] - mean[f]) + beta[f]
                z = zero if z <= zero else z  # ReLU that keeps a NaN a NaN (as torch.relu)
                target[f] = base[f] + z if has_skip else z


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def relu_grad_sums(x, grad, mean, scale, beta, bounds, partial_grad, partial_grad_x):  # pragma: no cover
    """Per chunk, ``partial_grad[k] = sum g'`` and ``partial_grad_x[k] = sum g' (x - mean)`` [chunks, C]
    float64, with ``g' = grad [scale (x - mean) + beta > 0]``."""
    channels = x.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        s1 = partial_grad[chunk]
        s2 = partial_grad_x[chunk]
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(bounds[chunk], bounds[chunk + 1]):
            row, g_row = x[r], grad[r]
            for f in range(channels):
                centred = row[f] - mean[f]
                g = np.float64(g_row[f]) if scale[f] * centred + beta[f] > 0.0 else 0.0
                s1[f] += g
                s2[f] += g * np.float64(centred)


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")
def normalize_relu_backward(x, grad, mean, scale, beta, slope, intercept, zero, bounds,
                            grad_x):  # pragma: no cover
    """``grad_x = scale g' + slope (x - mean) + intercept`` with ``g' = grad [scale (x - mean) + beta > 0]``
    (all [C] but the rows)."""
    channels = x.shape[1]
    for chunk in numba.prange(len(bounds) - 1):
        for r in range(bounds[chunk], bounds[chunk + 1]):
            row, g_row, target = x[r], grad[r], grad_x[r]
            for f in range(channels):
                centred = row[f] - mean[f]
                g = g_row[f] if scale[f] * centred + beta[f] > zero else zero
                target[f] = scale[f] * g + slope[f] * centred + intercept[f]
