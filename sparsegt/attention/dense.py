"""The dense oracle for tests: masked softmax over an [Nq, Nk] score matrix. O(N^2): tests only."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph


def densify(pattern: Graph, bias: Tensor | None = None, heads: int = 1) -> tuple[Tensor, Tensor]:
    """Dense ``mask`` [Nq, Nk] and additive ``bias`` [Nq, Nk, H] equivalent to a CSR pattern.

    Duplicate edges are exact: k copies of (i, j) with biases b_1..b_k weigh like one entry with bias
    log(sum exp(b_e)) (a multiplicity of k without bias becomes log k).
    """
    row, col = pattern.row_index(), pattern.indices
    shape = (pattern.num_nodes, pattern.num_cols)
    edge_bias = bias if bias is not None else torch.zeros(pattern.num_edges, heads, dtype=torch.float64)
    dense = torch.full((*shape, edge_bias.shape[1]), -torch.inf, dtype=edge_bias.dtype)
    flat = (row * shape[1] + col).long()
    dense = dense.reshape(-1, edge_bias.shape[1])
    dense = dense.scatter_reduce(0, flat[:, None].expand_as(edge_bias), edge_bias, "amax")
    # log-sum-exp over duplicates, stabilised by the maximum just computed
    top = dense[flat]
    total = torch.zeros_like(dense).index_add(0, flat, torch.exp(edge_bias - top))
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    mask[flat] = True
    merged = torch.where(mask[:, None], torch.log(total.clamp_min(1e-300)) + dense, dense)
    return mask.reshape(shape), merged.reshape(*shape, edge_bias.shape[1])


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, bias: Tensor | None = None,
                    gate: Tensor | None = None, scale: float | None = None,
                    score_clamp: float | None = None) -> tuple[Tensor, Tensor]:
    """Masked softmax attention. q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], mask [Nq, Nk] bool,
    bias [Nq, Nk, H], gate [Nq, Nk, H, D] (dense). Returns ``out`` [Nq, H, Dv] and ``lse`` [Nq, H];
    rows whose mask is empty give zeros and ``-inf``. ``score_clamp``: the scaled dot products are limited
    to [-c, c] before the bias is added."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if gate is None:
        score = torch.einsum("ihd,jhd->ijh", q, k)
    else:
        score = torch.einsum("ihd,jhd,ijhd->ijh", q, k, gate)
    score = score * scale
    if score_clamp is not None:
        score = score.clamp(-score_clamp, score_clamp)
    if bias is not None:
        score = score + bias
    score = score.masked_fill(~mask[..., None], -torch.inf)
    lse = torch.logsumexp(score, dim=1)
    empty = ~mask.any(1)
    safe_lse = torch.where(empty[:, None], torch.zeros_like(lse), lse)
    prob = torch.exp(score - safe_lse[:, None, :]).masked_fill(~mask[..., None], 0.0)
    out = torch.einsum("ijh,jhd->ihd", prob, v)
    return out, lse
