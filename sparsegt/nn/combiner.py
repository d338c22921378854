"""`CombinerAttention`: full attention at sub-quadratic cost through region summaries (Combiner).

Ren et al., "Combiner: Full Attention Transformer with Sparse Computation Cost", NeurIPS 2021
(arXiv:2107.05768). Attention is a conditional expectation ``out_i = E_{p(j|i)}[v_j]``; Combiner factorises
``p(j|i)``: the keys of i's own region Ω_i are attended directly, every other region r through an abstraction
(summary), and inside a region by a query-independent distribution q_r::

    p(j | i) = exp(s_ij) / Z_i                                    j in Ω_i (direct)
    p(j | i) = exp(s_ir) / Z_i * q_r(j)                           j in region r != Ω_i
    s_ij = <q_i, k_j> / sqrt(D)       s_ir = <q_i, k_r> / sqrt(D) + log |r|
    q_r(j) = softmax_{j in r}(t_j)    k_r = sum_{j in r} q_r(j) k_j     v_r = sum_{j in r} q_r(j) v_j
    Z_i = sum_{j in Ω_i} exp(s_ij) + sum_{r != Ω_i} exp(s_ir)

``t_j = w_h · x_j`` per head (a learned pooling score, zero at initialisation: mean pooling). The ``log |r|``
term makes a summary count as many keys as its region holds (with equal keys it is exact). This is one
softmax over a rectangular pattern (`sparsegt.patterns.combiner_pattern`: columns = N keys then R summaries),
so it is one `sparse_attention` call: ``out_i = sum_j p(j|i) v_j`` with sum_j p(j|i) = 1. With regions of one
key each, q_r = 1, k_r = k_j, v_r = v_j and log 1 = 0: exactly full attention. Our version: the paper's
Combiner-Fixed/-Axial choose Ω_i and the regions from a sparse-attention pattern and pool with max or mean;
here the regions are any partition (contiguous blocks for sequences, clusters or partitions for graphs) and the
pooling is the learned softmax above.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import sparse_attention
from ..patterns.combiner import CombinerPattern
from .attention import SparseMultiheadAttention
from .renamed import renamed_keywords

__all__ = ["CombinerAttention", "combiner_attention"]


def combiner_attention(q: Tensor, k: Tensor, v: Tensor, pool_logits: Tensor, combiner: CombinerPattern, *,
                       dropout_p: float = 0.0, backend: str = "auto") -> Tensor:
    """Combiner attention from projected inputs (module docstring).

    Args:
        q, k: [N, H, D]; v: [N, H, Dv]; pool_logits: [N, H] the in-region pooling scores t_j.
        combiner: the `CombinerPattern` of the batch.
        dropout_p: dropout on the normalised weights p(j|i) of the direct keys and the summaries (as
            `sparse_attention`'s; 0 at inference).
    Returns:
        [N, H, Dv].
    """
    N, H = k.shape[0], k.shape[1]
    if N != combiner.num_nodes or q.shape[0] != N or pool_logits.shape != (N, H):
        raise ValueError(f"combiner_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, pool_logits "
                         f"{tuple(pool_logits.shape)} must have N = {combiner.num_nodes} rows (the pattern's nodes) "
                         "and pool_logits [N, H]")
    region, R = combiner.region, combiner.num_regions
    index = region[:, None].expand(N, H)
    top = torch.full((R, H), -torch.inf, dtype=pool_logits.dtype, device=pool_logits.device)
    top = top.scatter_reduce(0, index, pool_logits.detach(), "amax")  # a constant shift: no gradient needed
    weight = torch.exp(pool_logits - top[region])
    weight = weight / torch.zeros_like(top).index_add(0, region, weight)[region]      # q_r(j) [N, H]
    k_summary = k.new_zeros(R, H, k.shape[2]).index_add(0, region, weight[..., None] * k)       # k_r [R, H, D]
    v_summary = v.new_zeros(R, H, v.shape[2]).index_add(0, region, weight[..., None] * v)       # v_r [R, H, Dv]
    pattern = combiner.pattern
    column = pattern.indices
    is_summary = column >= N
    log_size = torch.log(combiner.region_size.to(q.dtype))
    bias = torch.where(is_summary, log_size[(column - N).clamp_min(0)], torch.zeros((), dtype=q.dtype,
                                                                                     device=q.device))
    bias = bias[:, None].expand(-1, H).contiguous()
    return sparse_attention(q, torch.cat([k, k_summary]), torch.cat([v, v_summary]), pattern, bias=bias,
                            dropout_p=dropout_p, backend=backend)


class CombinerAttention(nn.Module):
    """Multi-head Combiner self-attention: x [N, C] and a `CombinerPattern` -> [N, C].

    The projections are a `SparseMultiheadAttention`'s (``attention``: Q, K, V, O stored as
    ``torch.nn.MultiheadAttention``), plus ``pool_score`` (C -> H, the in-region pooling score, zero-initialised).
    ``dropout``: on the attention weights, in training only.
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, bias: bool = True, backend: str = "auto",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=dropout, bias=bias, backend=backend)
        self.pool_score = nn.Linear(hidden, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.attention.reset_parameters()
        nn.init.zeros_(self.pool_score.weight)
        nn.init.zeros_(self.pool_score.bias)

    def forward(self, x: Tensor, combiner: CombinerPattern) -> Tensor:
        if not isinstance(combiner, CombinerPattern):
            raise ValueError("CombinerAttention needs a CombinerPattern (sparsegt.patterns.combiner_pattern(batch, "
                             f"region)), got {type(combiner).__name__}")
        q, k, v = self.attention.project(x)
        dropout_p = self.attention.attn_dropout if self.training else 0.0
        out = combiner_attention(q, k, v, self.pool_score(x), combiner, dropout_p=dropout_p,
                                 backend=self.attention.backend)
        return self.attention.out_proj(out.flatten(1))  # [N, H * Dv], also for N = 0
