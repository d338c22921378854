"""`DistanceGate`: EquivStableLapPE's gate of GatedGCN's messages (Wang et al., ICLR 2022; GraphGPS's
``mlp_r_ij``), ``r = Sigmoid(Linear(C, 1)(ReLU(Linear(1, C)(d))))`` on each edge's squared PE distance d.

An ``nn.Sequential`` of exactly those four modules (so checkpoints keep their keys ``0.weight``, ``0.bias``,
``2.weight``, ``2.bias``), whose forward on CPU float32/float64 tensors runs fused numba kernels
(`distance_gate_kernels`: no [E, C] hidden tensor is built) and elsewhere the modules themselves (the
reference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.numba_runtime import DynamicSchedule, even_chunks, numba_cpu_reasons, numba_threads, numpy_float
from . import distance_gate_kernels as kernels

__all__ = ["DistanceGate"]

PARALLEL_MIN_WORK = 1 << 16  # E * C below which one thread beats waking a second one


class DistanceGate(nn.Sequential):
    """``Linear(1, hidden) -> ReLU -> Linear(hidden, 1) -> Sigmoid``: [E, 1] distances -> [E, 1] gates."""

    def __init__(self, hidden: int) -> None:
        super().__init__(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, distance: Tensor) -> Tensor:
        """distance [E, 1] -> r [E, 1] in (0, 1)."""
        first, last = self[0], self[2]
        if distance.dim() != 2 or distance.shape[1] != 1 or numba_cpu_reasons(
                distance=distance, w1=first.weight, b1=first.bias, w2=last.weight, b2=last.bias):
            return super().forward(distance)
        return _Gate.apply(distance, first.weight, first.bias, last.weight, last.bias)


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, distance, w1, b1, w2, b2):  # type: ignore[override]
        d = distance.detach().contiguous().view(-1)
        weights = [t.detach().contiguous().view(-1) for t in (w1, b1, w2)]
        out = torch.empty_like(d)
        bounds, threads = even_chunks(d.shape[0], d.shape[0] * weights[0].shape[0], PARALLEL_MIN_WORK)
        scalar = numpy_float(d.dtype)
        with numba_threads(threads), DynamicSchedule():
            kernels.gate_forward(d.numpy(), *(w.numpy() for w in weights), scalar(b2.detach().item()), bounds,
                                 scalar(0.0), scalar(1.0), out.numpy())
        ctx.schedule = (bounds, threads)  # the backward splits the edges the same way
        ctx.save_for_backward(d, *weights, out)
        return out.view(-1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        d, w1, b1, w2, r = ctx.saved_tensors
        hidden = w1.shape[0]
        bounds, threads = ctx.schedule
        chunks = len(bounds) - 1
        grad_d = torch.empty_like(d)
        partial = [d.new_empty((chunks, hidden), dtype=torch.float64) for _ in range(3)]
        partial_b2 = d.new_empty(chunks, dtype=torch.float64)
        scalar = numpy_float(d.dtype)
        with numba_threads(threads), DynamicSchedule():
            kernels.gate_backward(d.numpy(), w1.numpy(), b1.numpy(), w2.numpy(), r.numpy(),
                                  grad.contiguous().view(-1).numpy(), bounds, scalar(0.0), scalar(1.0),
                                  grad_d.numpy(), *(p.numpy() for p in partial), partial_b2.numpy())
        grad_w1, grad_b1, grad_w2 = (p.sum(0).to(d.dtype) for p in partial)
        return (grad_d.view(-1, 1), grad_w1.view(hidden, 1), grad_b1, grad_w2.view(1, hidden),
                partial_b2.sum().to(d.dtype).view(1))
