"""The pure-PyTorch reference backend: gather, segment softmax, segment sum; autograd does backward.

Memory is O(E*H*D) (it materialises q and k on every edge); it exists to be obviously correct, and
every other backend is tested against it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from .backend import AttentionInputs, Backend, Support
from .dropout import keep_mask

__all__ = ["reference_attention", "TORCH"]


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None,
    scale: float, dropout_p: float, dropout_seed: int | None, score_clamp: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns ``out`` [Nq, H, Dv] and ``lse`` [Nq, H] (``-inf`` on rows without edges)."""
    num_rows, num_heads = q.shape[0], q.shape[1]
    row, col = pattern.row_index(), pattern.indices
    qk = q[row] * k[col]
    if gate is not None:
        qk = qk * gate
    score = qk.sum(-1) * scale
    if score_clamp is not None:
        score = score.clamp(-score_clamp, score_clamp)
    if bias is not None:
        score = score + bias
    # The row maximum only shifts the exponent; softmax is invariant to it, so no gradient flows there.
    row_max = torch.full((num_rows, num_heads), -torch.inf, dtype=score.dtype, device=score.device)
    row_max = row_max.scatter_reduce(0, row[:, None].expand_as(score), score.detach(), "amax")
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weight = torch.exp(score - row_max[row])
    denom = torch.zeros_like(row_max).index_add(0, row, weight)
    has_edges = denom > 0
    safe_denom = torch.where(has_edges, denom, torch.ones_like(denom))
    prob = weight / safe_denom[row]
    lse = torch.where(has_edges, torch.log(safe_denom) + row_max, torch.full_like(denom, -torch.inf))
    lse = torch.where(torch.isnan(denom), denom, lse)  # a NaN score makes its row's lse NaN, not -inf
    if dropout_p > 0.0:
        keep = keep_mask(dropout_seed, pattern.num_edges, num_heads, dropout_p, q.device)
        prob = prob * keep / (1.0 - dropout_p)
    out = torch.zeros((num_rows, num_heads, v.shape[2]), dtype=v.dtype, device=v.device)
    out = out.index_add(0, row, prob[..., None] * v[col])
    return out, lse


class TorchBackend(Backend):
    """``backend="torch"``: any device, any floating dtype, every option, any pattern; O(E*H*D) memory."""

    name = "torch"
    supports = Support()

    def run(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None) -> tuple[Tensor, Tensor]:
        return reference_attention(inputs.q, inputs.k, inputs.v, inputs.pattern, inputs.bias, inputs.gate, scale,
                                   inputs.dropout_p, dropout_seed, inputs.score_clamp)


TORCH = TorchBackend()
