"""`sparse_attention`: softmax attention over the edges of a CSR pattern, one call for every backend."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from .dropout import draw_seed
from .reference import reference_attention

BACKENDS = ("auto", "torch", "cpu", "tiles", "ranges")
# auto uses dense tiles when at least this fraction of their entries are edges and rows are long: on short
# rows (small graphs) the fused kernel's keys stay in cache and it beats the tiles' many passes over memory
TILES_MIN_FILL = 0.25
TILES_MIN_MEAN_DEGREE = 128
# auto uses the ranges kernel (keys in SIMD lanes) on patterns of runs when heads are narrow and runs long
# enough to fill the lanes; with wider heads the per-edge kernel's loops over D already fill them
RANGES_MAX_HEAD_DIM = 32
RANGES_MIN_MEAN_DEGREE = 32


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
            5); no gradient flows through a clamped value. Backends ``"torch"`` and ``"cpu"``.
        backend: ``"auto"`` (the fastest correct one for the device and the pattern), ``"torch"``
            (pure-PyTorch reference), ``"cpu"`` (fused numba kernel, any pattern), ``"ranges"`` (numba
            kernel for patterns whose every row is a run of consecutive keys: full attention per graph,
            windows, blocks; no ``gate``) or ``"tiles"`` (dense matrix products over tiles covering the
            pattern: for windows, bands and full attention per graph; no ``gate``, no duplicate edges).
            On CPU without a gate or a clamp, auto takes ``"ranges"`` for runs of 32 keys or more on average with
            heads of at most 32 channels, else ``"tiles"`` when rows are long (128 keys on average), the
            pattern fills at least a quarter of its tiles and k and v are finite, else ``"cpu"``. A NaN in
            an input makes exactly the rows that see it NaN, on every backend (tiles refuses a non-finite
            k or v, whose products would reach other rows).

    Returns:
        ``out`` [Nq, H, Dv]; rows without edges are zero. With ``return_lse``: ``(out, lse)``.
    """
    _check_inputs(q, k, v, pattern, bias, gate, dropout_p)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = draw_seed(generator)
    if score_clamp is not None:
        if not 0.0 < float(score_clamp) < float("inf"):
            raise ValueError(f"score_clamp must be a positive finite number, got {score_clamp}")
        if backend in ("tiles", "ranges"):
            raise ValueError(f"backend={backend!r} does not take a score_clamp; use backend='cpu' or 'auto'")
    if backend == "auto":
        backend = _auto_backend(q, pattern, gate, score_clamp)
        if backend == "tiles":
            from .tiles import finite_keys_and_values

            backend = "tiles" if finite_keys_and_values(k, v) else "cpu"  # NaN must reach exactly its rows
    if backend == "tiles":
        from .tiles import tiles_attention

        out, lse = tiles_attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed)
    elif backend == "ranges":
        from .ranges import ranges_attention

        out, lse = ranges_attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed)
    elif backend == "cpu":
        from .cpu import cpu_attention

        out, lse = cpu_attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed,
                                 score_clamp=score_clamp)
    else:
        out, lse = reference_attention(q, k, v, pattern, bias, gate, scale, dropout_p, dropout_seed, score_clamp)
    return (out, lse) if return_lse else out


def _auto_backend(q: Tensor, pattern: Graph, gate: Tensor | None, score_clamp: float | None = None) -> str:
    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return "torch"
    try:
        from .ranges import is_runs
        from .tile_plan import tile_fill, tile_plan
    except ImportError:
        return "torch"
    if gate is not None or score_clamp is not None:  # only the per-edge kernel takes these
        return "cpu"
    mean_degree = pattern.num_edges / max(1, pattern.num_nodes)
    if q.shape[2] <= RANGES_MAX_HEAD_DIM and mean_degree >= RANGES_MIN_MEAN_DEGREE and is_runs(pattern):
        return "ranges"
    long_rows = mean_degree >= TILES_MIN_MEAN_DEGREE and pattern.num_edges < 2**31  # int32 edge map
    if long_rows and tile_fill(pattern) >= TILES_MIN_FILL and not tile_plan(pattern).duplicates:
        return "tiles"
    return "cpu"
