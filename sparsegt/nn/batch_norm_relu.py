"""``skip + ReLU(BatchNorm(x))`` in one call: the tail of GatedGCN's node and edge updates (GraphGPS).

On the edge stream ([E, C], about 10^5 rows a batch on PATTERN) torch runs this as five memory-bound passes
forward (batch norm's statistics and output, ReLU, the residual add) and as many backward. On CPU tensors
(float32, float64) `batch_norm_relu` runs two passes each way in fused numba kernels
(`batch_norm_relu_kernels`), with statistics and gradient sums in float64; elsewhere, under
``torch.compile`` and for module settings the kernels do not cover, torch's ops (the reference). Either way
the module's running statistics are updated as ``nn.BatchNorm1d`` updates them (momentum or, with
``momentum=None``, the cumulative average; unbiased variance; ``num_batches_tracked``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.api import HALF_DTYPES
from ..attention.numba_runtime import DynamicSchedule, even_chunks, flat, numba_cpu_reasons, numba_threads, numpy_float
from . import batch_norm_relu_kernels as kernels

__all__ = ["batch_norm_relu", "batch_norm_relu_torch"]

PARALLEL_MIN_WORK = 1 << 16  # M * C below which one thread beats waking a second one


def batch_norm_relu(x: Tensor, norm: nn.BatchNorm1d, skip: Tensor | None = None) -> Tensor:
    """``skip + relu(norm(x))`` (``relu(norm(x))`` when ``skip`` is None), as torch computes it.

    Args:
        x: [M, C]. norm: a ``BatchNorm1d(C)`` (batch statistics in training mode, running ones in eval
            mode; its running statistics are updated in training mode). skip: [M, C] (an expanded row,
            ``row.expand(M, C)``, stays one row) or None.
    Returns: [M, C].
    """
    if skip is not None and skip.dtype in HALF_DTYPES and x.dtype == torch.float32:
        # under bfloat16 autocast: torch would promote the sum to float32 too (an expanded row stays one row)
        skip = skip[:1].float().expand_as(skip) if skip.stride(0) == 0 and skip.shape[0] > 1 else skip.float()
    if numba_cpu_reasons(x=x, skip=skip, weight=norm.weight, bias=norm.bias) or x.dim() != 2 \
            or x.shape[1] != norm.num_features or (skip is not None and skip.shape != x.shape):
        return batch_norm_relu_torch(x, norm, skip)
    batch_stats = norm.training or norm.running_mean is None
    rows = x.shape[0]
    if rows == 0 or (batch_stats and rows == 1):  # torch's message for one row; nothing to fuse for none
        return batch_norm_relu_torch(x, norm, skip)
    x2 = flat(x)
    bounds, threads = even_chunks(rows, x2.numel(), PARALLEL_MIN_WORK)
    with torch.no_grad():
        if batch_stats:
            mean, var = _moments(x2, bounds, threads)
            _update_running_statistics(norm, mean, var, rows)
        else:
            mean, var = norm.running_mean.double(), norm.running_var.double()
    rstd = (var + norm.eps).rsqrt()
    row_skip = skip is not None and skip.stride(0) == 0 and rows > 1
    return _BatchNormReLU.apply(x, norm.weight, norm.bias, skip[:1] if row_skip else skip, mean, rstd,
                                batch_stats, (bounds, threads))


def batch_norm_relu_torch(x: Tensor, norm: nn.Module, skip: Tensor | None = None) -> Tensor:
    """`batch_norm_relu` on torch's ops (any device, any norm module): the reference of the kernels."""
    out = torch.relu(norm(x))
    return out if skip is None else skip + out


def _moments(x2: Tensor, bounds: np.ndarray, threads: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of [M, C] ``x2``, float64 [C] each."""
    shift = x2[0].double()
    partial_sum = x2.new_empty((len(bounds) - 1, x2.shape[1]), dtype=torch.float64)
    partial_square = torch.empty_like(partial_sum)
    with numba_threads(threads), DynamicSchedule():
        kernels.shifted_moments(x2.numpy(), shift.numpy(), bounds, partial_sum.numpy(), partial_square.numpy())
    rows = x2.shape[0]
    shifted_mean = partial_sum.sum(0) / rows
    var = (partial_square.sum(0) / rows - shifted_mean.square()).clamp_min(0.0)
    return shift + shifted_mean, var


def _update_running_statistics(norm: nn.BatchNorm1d, mean: Tensor, var: Tensor, rows: int) -> None:
    """What ``nn.BatchNorm1d`` does to its buffers in a training-mode forward."""
    if not (norm.training and norm.track_running_stats):
        return
    norm.num_batches_tracked.add_(1)
    factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
    norm.running_var.mul_(1 - factor).add_((var * rows / (rows - 1)).to(norm.running_var.dtype), alpha=factor)


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, skip, mean, rstd, batch_stats, schedule):  # type: ignore[override]
        x2 = flat(x)
        bounds, threads = schedule
        gamma = weight.detach().double() if weight is not None else torch.ones_like(mean)
        beta = bias.detach().double() if bias is not None else torch.zeros_like(mean)
        scale64 = gamma * rstd
        mean_x, scale, beta_x = mean.to(x.dtype), scale64.to(x.dtype), beta.to(x.dtype)
        out = torch.empty_like(x2)
        has_skip = skip is not None
        skip2 = flat(skip) if has_skip else x2[:1]
        zero = numpy_float(x.dtype)(0.0)
        with numba_threads(threads), DynamicSchedule():
            kernels.normalize_relu(x2.numpy(), mean_x.numpy(), scale.numpy(), beta_x.numpy(), skip2.numpy(), has_skip,
                                   zero, bounds, out.numpy())
        ctx.save_for_backward(x2, mean_x, scale, beta_x, scale64, rstd)
        ctx.batch_stats, ctx.schedule = batch_stats, schedule
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.skip_rows = skip.shape[0] if has_skip else 0
        return out.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x2, mean_x, scale, beta_x, scale64, rstd = ctx.saved_tensors
        bounds, threads = ctx.schedule
        g2 = flat(grad)
        rows = x2.shape[0]
        partial_grad = x2.new_empty((len(bounds) - 1, x2.shape[1]), dtype=torch.float64)
        partial_grad_x = torch.empty_like(partial_grad)
        grad_x = torch.empty_like(x2)
        zero = numpy_float(x2.dtype)(0.0)
        with numba_threads(threads), DynamicSchedule():
            kernels.relu_grad_sums(x2.numpy(), g2.numpy(), mean_x.numpy(), scale.numpy(), beta_x.numpy(), bounds,
                                   partial_grad.numpy(), partial_grad_x.numpy())
            s1, s2 = partial_grad.sum(0), partial_grad_x.sum(0)  # sum g', sum g' (x - mean)
            if ctx.batch_stats:
                slope, intercept = -scale64 * rstd.square() * s2 / rows, -scale64 * s1 / rows
            else:
                slope = intercept = torch.zeros_like(s1)
            kernels.normalize_relu_backward(x2.numpy(), g2.numpy(), mean_x.numpy(), scale.numpy(), beta_x.numpy(),
                                            slope.to(x2.dtype).numpy(), intercept.to(x2.dtype).numpy(), zero,
                                            bounds, grad_x.numpy())
        grad_weight = (s2 * rstd).to(x2.dtype) if ctx.has_weight else None
        grad_bias = s1.to(x2.dtype) if ctx.has_bias else None
        grad_skip = None
        if ctx.skip_rows:
            grad_skip = grad if ctx.skip_rows == rows else grad.sum(0, keepdim=True)
        return grad_x.view_as(grad), grad_weight, grad_bias, grad_skip, None, None, None, None
