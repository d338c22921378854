"""`sparse_attention`: softmax attention over the edges of a CSR pattern, one call for every backend.

The backends, in the order ``backend="auto"`` tries them, are `BACKENDS`; `choose_backend` is auto's
whole rule (the first backend without reasons, `backend.Backend.unsupported_reasons`).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

from ..graph import Graph
from . import compiled
from .backend import AttentionInputs
from .dispatch import BACKEND_NAMES, BACKENDS, backend_for, choose_backend
from .dropout import draw_seed

__all__ = ["sparse_attention", "choose_backend", "BACKENDS", "BACKEND_NAMES"]

HALF_DTYPES = (torch.bfloat16, torch.float16)


def _pattern_problem(pattern: Graph) -> str:
    """What in the pattern would make a kernel read out of bounds ('' when nothing): O(N + E), once per pattern.

    A `Graph` built with ``validate=False`` skipped its checks; these are the ones a kernel's memory safety
    rests on (a bad index there is a segfault, not an error)."""
    indptr, indices = pattern.indptr, pattern.indices
    for name, t in (("indptr", indptr), ("indices", indices)):
        if not isinstance(t, Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            return f"pattern.{name} must be a 1-D int64 tensor, got {getattr(t, 'dtype', shape)} {shape}"
    if indptr.numel() != pattern.num_nodes + 1 or int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel():
        return (f"pattern.indptr must run from 0 to the {indices.numel()} edges in {pattern.num_nodes + 1} entries, "
                f"got {indptr.numel()} entries from {int(indptr[0]) if indptr.numel() else None} to "
                f"{int(indptr[-1]) if indptr.numel() else None}")
    if indptr.numel() > 1 and int(indptr.diff().min()) < 0:
        return "pattern.indptr decreases somewhere"
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= pattern.num_cols:
            return f"pattern.indices hold {low if low < 0 else high}, outside 0..{pattern.num_cols - 1} (its columns)"
    return ""


def _check_dropout_seed(dropout_seed: object) -> None:
    integral = isinstance(dropout_seed, (numbers.Integral, np.integer)) and not isinstance(dropout_seed, bool)
    if dropout_seed is not None and not (integral and 0 <= int(dropout_seed) < 2**64):
        raise ValueError(f"dropout_seed must be an integer in 0..2**64-1 or None, got {dropout_seed!r} "
                         f"({type(dropout_seed).__name__})")


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None,
                  gate: Tensor | None, dropout_p: float) -> None:
    if not isinstance(pattern, Graph):
        raise TypeError(f"pattern must be a sparsegt.Graph, got {type(pattern).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape [N, H, D], got {shape}")
        if t.shape[1] < 1 or t.shape[2] < 1:
            raise ValueError(f"{name} has shape {tuple(t.shape)}: H (heads) and D (channels per head) must be >= 1")
    for name, t in (("q", q), ("k", k), ("v", v), ("bias", bias), ("gate", gate), ("pattern", pattern.indices)):
        if isinstance(t, Tensor) and t.is_meta:
            raise ValueError(f"{name} is a meta tensor (a shape without data), but attention computes values: "
                             "make it on a real device (after building a module on 'meta', call "
                             "module.to_empty(device='cpu') and initialise its weights)")
    if q.shape[0] != pattern.num_nodes:
        raise ValueError(f"q has {q.shape[0]} rows but the pattern has {pattern.num_nodes} queries (rows)")
    if k.shape[0] != pattern.num_cols or v.shape[0] != pattern.num_cols:
        raise ValueError(f"k has {k.shape[0]} and v has {v.shape[0]} rows but the pattern has "
                         f"{pattern.num_cols} keys (columns)")
    if k.shape[1:] != q.shape[1:]:
        raise ValueError(f"k has shape [*, {k.shape[1]}, {k.shape[2]}] but q has [*, {q.shape[1]}, {q.shape[2]}]")
    if v.shape[1] != q.shape[1]:
        raise ValueError(f"v has {v.shape[1]} heads but q has {q.shape[1]}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device == pattern.device):
        raise ValueError(f"q, k, v and the pattern must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}, {pattern.device}")
    E, H, D = pattern.num_edges, q.shape[1], q.shape[2]
    if bias is not None and tuple(bias.shape) != (E, H):
        raise ValueError(f"bias must have shape [E, H] = [{E}, {H}], got {tuple(bias.shape)}")
    if gate is not None and tuple(gate.shape) != (E, H, D):
        raise ValueError(f"gate must have shape [E, H, D] = [{E}, {H}, {D}], got {tuple(gate.shape)}")
    for name, t in (("bias", bias), ("gate", gate)):
        if t is not None and t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    # reads the data (a graph break under torch.compile, whose patterns come from checked Graphs)
    problem = "" if torch.compiler.is_compiling() else pattern.plan("bounds", lambda: _pattern_problem(pattern))
    if problem:
        raise ValueError(f"{problem}; build the pattern with validation on (Graph(..., validate=True) names the "
                         "first broken entry)")


class _FirstOrderOnly(torch.autograd.Function):
    """The identity on a kernel backend's (out, lse) whose backward is not itself differentiable: asking for a
    gradient of its gradient (``create_graph=True``) is a clear error here, not a gradient silently taken as
    constant (or torch's "does not require grad") further down."""

    @staticmethod
    def forward(ctx, backend: str, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
        ctx.backend = backend
        return out.view_as(out), lse.view_as(lse)

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_lse: Tensor) -> tuple[None, Tensor, Tensor]:
        if torch.is_grad_enabled():  # backward runs with grad mode on only under create_graph=True
            raise RuntimeError(
                f"sparse_attention: backend {ctx.backend!r} has no double backward (its gradient is a kernel that is "
                "not itself differentiable); for gradients of gradients (gradient penalties, Hessian-vector "
                "products) call sparse_attention(..., backend='torch')")
        return None, grad_out, grad_lse


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: Graph,
    *,
    bias: Tensor | None = None,
    gate: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    dropout_seed: int | None = None,
    generator: torch.Generator | None = None,
    return_lse: bool = False,
    score_clamp: float | None = None,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax attention of each query over the keys its pattern row lists.

    ``out[i] = sum_{e=(i,j)} softmax_e(s_e) v[j]`` with ``s_e = scale * sum_d q[i,:,d] k[j,:,d] gate[e,:,d]
    + bias[e]``, the softmax running over row i's edges only.

    Args:
        q: [Nq, H, D] queries. k: [Nk, H, D] keys. v: [Nk, H, Dv] values.
        pattern: `Graph` with Nq rows (queries) and Nk columns (keys), E edges.
        bias: [E, H] added to the scores (CSR order). gate: [E, H, D] multiplied into q*k.
        scale: score scale, default ``D ** -0.5``.
        dropout_p: attention dropout probability (applied to the normalised weights).
        dropout_seed: seed of the counter-based dropout stream, an integer in 0..2**64-1 (anything else is a
            ValueError on every backend); drawn from ``generator`` (or torch's global generator) when None, so
            ``torch.manual_seed`` makes runs reproducible.
        return_lse: also return the per-row log-sum-exp [Nq, H] of the scores (``-inf`` for rows with
            no edges), to merge partial attentions exactly.
        score_clamp: limit ``scale * q.(k*gate)`` to [-c, c] before the bias is added (GT's clamp of
            5); no gradient flows through a clamped value. Backends ``"torch"``, ``"cpu"`` and ``"triton"``.
        backend: ``"auto"`` (the fastest correct one for the device and the pattern), ``"torch"``
            (pure-PyTorch reference), ``"triton"`` (Triton kernels: CUDA, float16/bfloat16/float32/float64,
            every option, any pattern; the optional extra ``sparsegt[triton]``; on CPU only in Triton's
            interpreter, for tests), ``"cpu"`` (fused numba kernel, any pattern), ``"ranges"`` (numba
            kernel for patterns whose every row is a run of consecutive keys: full attention per graph,
            windows, blocks; no ``gate``) or ``"tiles"`` (dense matrix products over tiles covering the
            pattern: for windows, bands and full attention per graph; no ``gate``, no duplicate edges).
            On CUDA auto takes ``"triton"`` when Triton is installed, else ``"torch"``.
            On CPU without a gate or a clamp, auto takes ``"ranges"`` for runs of 32 keys or more on average with
            heads of at most 32 channels, else ``"tiles"`` when rows are long (128 keys on average), the
            pattern fills at least a quarter of its tiles and k and v are finite, else ``"cpu"``. A NaN in
            an input makes exactly the rows that see it NaN, on every backend (tiles refuses a non-finite
            k or v, whose products would reach other rows). Auto's rule is `choose_backend` over
            `BACKENDS`; a named backend that cannot run the call raises ValueError with its reasons and
            every other backend's. bfloat16 and float16 inputs on CPU with ``backend="auto"`` are computed
            by the float32 kernels (upcast copies of the inputs; ``out`` and ``lse`` cast back), as under
            ``torch.autocast``; a named numba backend refuses them and says so.

    Returns:
        ``out`` [Nq, H, Dv]; rows without edges are zero. With ``return_lse``: ``(out, lse)``.

    Gradients: first derivatives on every backend. Double backward (``create_graph=True``: gradient penalties,
    Hessian-vector products) only with ``backend="torch"``; the kernel backends raise RuntimeError saying so.

    Checks: shapes, dtypes, devices, H and D >= 1, no meta tensors, and (once per pattern, O(N + E)) that
    ``indptr``/``indices`` are in range, so a pattern built with ``validate=False`` can never make a kernel
    read out of bounds: every bad input is a ValueError before any kernel runs.
    """
    _check_inputs(q, k, v, pattern, bias, gate, dropout_p)
    _check_dropout_seed(dropout_seed)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if score_clamp is not None and not 0.0 < float(score_clamp) < float("inf"):
        raise ValueError(f"score_clamp must be a positive finite number, got {score_clamp}")
    if backend == "auto" and q.device.type == "cpu" and q.dtype in HALF_DTYPES:
        # the CPU kernels compute in float32: upcast (O(N H D) copies, no O(E H D) reference), cast back
        up = [None if t is None else t.float() for t in (q, k, v, bias, gate)]
        out, lse = sparse_attention(up[0], up[1], up[2], pattern, bias=up[3], gate=up[4], scale=scale,
                                    dropout_p=dropout_p, dropout_seed=dropout_seed, generator=generator,
                                    return_lse=True, score_clamp=score_clamp)
        out, lse = out.to(q.dtype), lse.to(q.dtype)
        return (out, lse) if return_lse else out
    if torch.compiler.is_compiling():  # one opaque custom op in the compiled graph
        out, lse = compiled.attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed, generator,
                                      score_clamp, backend)
        return (out, lse) if return_lse else out
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = draw_seed(generator)
    inputs = AttentionInputs(q, k, v, pattern, bias, gate, dropout_p, score_clamp)
    chosen = backend_for(backend, inputs)
    out, lse = chosen.run(inputs, scale, dropout_seed)
    if chosen.name != "torch" and torch.is_grad_enabled() and any(t.requires_grad for t in inputs.tensors().values()):
        out, lse = _FirstOrderOnly.apply(chosen.name, out, lse)
    return (out, lse) if return_lse else out
