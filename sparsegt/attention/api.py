"""`sparse_attention`: softmax attention over the edges of a CSR pattern, one call for every backend.

The backends, in the order ``backend="auto"`` tries them, are `BACKENDS`; `choose_backend` is auto's
whole rule (the first backend without reasons, `backend.Backend.unsupported_reasons`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from . import compiled
from .backend import AttentionInputs
from .dispatch import BACKEND_NAMES, BACKENDS, backend_for, choose_backend
from .dropout import draw_seed

__all__ = ["sparse_attention", "choose_backend", "BACKENDS", "BACKEND_NAMES"]


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None,
                  gate: Tensor | None, dropout_p: float) -> None:
    if not isinstance(pattern, Graph):
        raise TypeError(f"pattern must be a sparsegt.Graph, got {type(pattern).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape [N, H, D], got {shape}")
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
        dropout_seed: seed of the counter-based dropout stream; drawn from ``generator`` (or torch's
            global generator) when None, so ``torch.manual_seed`` makes runs reproducible.
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
            every other backend's.

    Returns:
        ``out`` [Nq, H, Dv]; rows without edges are zero. With ``return_lse``: ``(out, lse)``.
    """
    _check_inputs(q, k, v, pattern, bias, gate, dropout_p)
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if score_clamp is not None and not 0.0 < float(score_clamp) < float("inf"):
        raise ValueError(f"score_clamp must be a positive finite number, got {score_clamp}")
    if torch.compiler.is_compiling():  # one opaque custom op in the compiled graph
        out, lse = compiled.attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed, generator,
                                      score_clamp, backend)
        return (out, lse) if return_lse else out
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = draw_seed(generator)
    inputs = AttentionInputs(q, k, v, pattern, bias, gate, dropout_p, score_clamp)
    out, lse = backend_for(backend, inputs).run(inputs, scale, dropout_seed)
    return (out, lse) if return_lse else out
