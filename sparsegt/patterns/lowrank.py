"""Scatterbrain: exact sparse attention + a Performer (FAVOR+) low-rank estimate of the rest.

The softmax numerator and denominator split over the pattern S and its complement C:
``out_i = (sum_{S} e^{s_ij} v_j + sum_{C} e^{s_ij} v_j) / (sum_{S} e^{s_ij} + sum_{C} e^{s_ij})``.
The sparse sums come exactly from ``sparse_attention(..., return_lse=True)`` as
``(out_S, lse_S)`` (``sum e^s v = e^{lse} out``). The complement is estimated with positive random
features ``phi`` (``E[phi(q) . phi(k)] = e^{scale q.k}``): the low-rank total over *all* keys minus
its own estimate on the entries of S, so sparse entries are counted once, exactly. Each part is a
partial attention ``(out, lse)``; `merge_partial_attention` combines any number of them exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..attention import sparse_attention
from ..graph import Graph

__all__ = ["merge_partial_attention", "random_features_projection", "favor_features", "lowrank_complement",
           "scatterbrain_attention"]


def merge_partial_attention(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Exact softmax over disjoint key sets from their partial attentions.

    Args:
        parts: ``(out_p [N, H, Dv], lse_p [N, H])`` with ``out_p = sum_{j in T_p} w_j v_j / sum w_j`` and
            ``lse_p = log sum_{j in T_p} w_j`` (``-inf`` for an empty set; its out is ignored).
    Returns:
        ``(out, lse)`` of the union of the key sets; rows empty in every part give zeros and ``-inf``.
    """
    if not parts:
        raise ValueError("merge_partial_attention needs at least one (out, lse) pair")
    lses = torch.stack([lse for _, lse in parts])                       # [P, N, H]
    top = lses.max(0).values
    safe_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(lses - safe_top)                                 # 0 for empty parts
    total = weights.sum(0)
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    out = sum(w[..., None] * torch.nan_to_num(o) for w, (o, _) in zip(weights, parts, strict=True))
    out = out / safe_total[..., None]
    lse = torch.where(total > 0, torch.log(safe_total) + safe_top, torch.full_like(total, -torch.inf))
    return out, lse


def random_features_projection(num_features: int, dim: int, seed: int = 0, dtype=torch.float32,
                               device=None) -> Tensor:
    """[M, D] FAVOR+ projection: blocks of orthogonal Gaussian rows with chi-distributed norms."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(-(-num_features // dim), dim, dim, generator=gen, dtype=torch.float64)
    qr = torch.linalg.qr(g)
    # signs of R's diagonal make Q Haar-distributed (unbiased directions)
    q = qr.Q * torch.sign(torch.diagonal(qr.R, dim1=-2, dim2=-1))[:, None, :]
    w = q.transpose(1, 2).reshape(-1, dim)[:num_features]
    norms = torch.randn(num_features, dim, generator=gen, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(device=device, dtype=dtype)


def favor_features(x: Tensor, projection: Tensor, per_row_stabiliser: bool) -> tuple[Tensor, Tensor]:
    """Positive random features, stabilised: ``phi(x) = exp(log_phi - c) `` and the shift ``c``.

    ``phi(x)_m = exp(w_m . x - |x|^2 / 2) / sqrt(M)`` for x [N, H, D] (already scaled by scale**0.5);
    returns ``(phi~ [N, H, M], c)`` with ``phi = phi~ * exp(c)``: ``c`` [N, H] is each row's max
    (queries: it cancels in the ratio) or [H] the max over all rows (keys)."""
    logits = torch.einsum("nhd,md->nhm", x, projection) - (x * x).sum(-1, keepdim=True) / 2
    logits = logits - 0.5 * math.log(projection.shape[0])
    if per_row_stabiliser:
        c = logits.detach().amax(-1)
        return torch.exp(logits - c[..., None]), c
    c = logits.detach().amax((0, 2)) if logits.shape[0] else logits.new_zeros(logits.shape[1])
    return torch.exp(logits - c[None, :, None]), c


def lowrank_complement(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, projection: Tensor,
                       scale: float | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """FAVOR+ estimate of attention over the keys *not* in the pattern, as ``(out [N,H,Dv], lse [N,H])``.

    ``num_i = phi(q_i) . sum_j phi(k_j) v_j - sum_{j in S_i} (phi(q_i) . phi(k_j)) v_j`` and likewise
    the denominator; the correction over S runs through `sparse_attention` with bias
    ``log(phi(q_i) . phi(k_j))`` (memory O(E*H) in the kernel, plus the [E, H] feature dot products).
    An estimated complement mass <= 0 (estimation noise when S holds nearly all the mass) is
    treated as empty.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    root = scale ** 0.5
    phi_q, c_q = favor_features(q * root, projection, True)              # [N, H, M], [N, H]
    phi_k, c_k = favor_features(k * root, projection, False)             # [Nk, H, M], [H]
    kv = torch.einsum("nhm,nhd->hmd", phi_k, v)
    num = torch.einsum("nhm,hmd->nhd", phi_q, kv)
    den = torch.einsum("nhm,hm->nh", phi_q, phi_k.sum(0))
    if pattern.num_edges:
        row, col = pattern.row_index(), pattern.indices
        edge_weight = (phi_q[row] * phi_k[col]).sum(-1)                    # [E, H] > 0
        zeros = q.new_zeros(q.shape[0], q.shape[1], 1)
        out_s, lse_s = sparse_attention(zeros, k.new_zeros(k.shape[0], k.shape[1], 1), v, pattern,
                                        bias=torch.log(edge_weight.clamp_min(1e-30)), scale=0.0,
                                        return_lse=True, backend=backend)
        mass_s = torch.exp(lse_s)                                           # 0 on empty rows
        num = num - mass_s[..., None] * out_s
        den = den - mass_s
    positive = den > 1e-12 * phi_q.sum(-1).clamp_min(1e-30)
    safe_den = torch.where(positive, den, torch.ones_like(den))
    out = torch.where(positive[..., None], num / safe_den[..., None], torch.zeros_like(num))
    lse = torch.where(positive, torch.log(safe_den) + c_q + c_k, torch.full_like(den, -torch.inf))
    return out, lse


def scatterbrain_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, *, num_features: int = 64,
                           seed: int = 0, projection: Tensor | None = None, scale: float | None = None,
                           backend: str = "auto", return_lse: bool = False):
    """Scatterbrain: exact attention on ``pattern`` + FAVOR+ low-rank on the rest, merged exactly.

    Args:
        q: [Nq, H, D]; k: [Nk, H, D]; v: [Nk, H, Dv]; pattern: `Graph` [Nq, Nk] (the sparse part, e.g.
            a window or LSH buckets). num_features: M random features; projection: [M, D] to reuse
            (e.g. redrawn each epoch); seed: its seed when not given. Cost O(E*H*D + N*H*M*Dv).
    Returns:
        ``out`` [Nq, H, Dv] (and ``lse`` [Nq, H] with ``return_lse``).
    """
    if projection is None:
        projection = random_features_projection(num_features, q.shape[-1], seed, q.dtype, q.device)
    sparse = sparse_attention(q, k, v, pattern, scale=scale, return_lse=True, backend=backend)
    complement = lowrank_complement(q, k, v, pattern, projection, scale, backend)
    out, lse = merge_partial_attention([sparse, complement])
    return (out, lse) if return_lse else out
