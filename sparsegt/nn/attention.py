"""`SparseMultiheadAttention`: ``torch.nn.MultiheadAttention`` over the edges of a pattern.

For each head ``h`` and each query ``i`` with pattern row ``N(i)``::

    s_ij = <q_i, k_j ⊙ g_ij> / sqrt(D) + b_ij          (g: edge gate [E, H, D], b: edge bias [E, H])
    a_ij = softmax_{j in N(i)} s_ij                   (a row without edges outputs zeros)
    out_i = W_o concat_h( sum_j a_ij v_j )

with ``q = W_q x_query``, ``k = W_k x_key``, ``v = W_v x_value``. The projections are stored exactly
like ``torch.nn.MultiheadAttention`` (``in_proj_weight`` [3C, C], ``in_proj_bias`` [3C], ``out_proj``),
so weights move between the two with ``load_state_dict``. With ``pattern = full(batch)`` this layer
computes what ``torch.nn.MultiheadAttention`` computes on each graph separately, without padding.

Edge inputs, all in the pattern's CSR order: ``edge_bias`` [E, H] and ``edge_gate`` [E, H, D] given
directly, or ``edge_attr`` [E, edge_dim] projected by the layer (``edge_mode="bias"`` -> a bias per
head, ``"gate"`` -> a gate per head and channel, as in GT and Exphormer).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import sparse_attention
from ..graph import Graph
from ..patterns import threshold_topk, topk
from .segment import gather_keys, gather_queries, segment_softmax

__all__ = ["SparseMultiheadAttention", "record_attention"]

EDGE_MODES = (None, "bias", "gate")


class SparseMultiheadAttention(nn.Module):
    """Multi-head softmax attention restricted to a `Graph` pattern (rows: queries, columns: keys).

    Args:
        embed_dim: C, the model width (input and output). num_heads: H; C must be divisible by H.
        dropout: attention dropout on the normalised weights (training only; ``torch.nn.MultiheadAttention``'s
            name, kept as the attribute ``attn_dropout``).
        bias: add biases to the input/output projections. qkv_bias: biases on the q, k, v (and edge)
            projections only (default: ``bias``; GT has none there but one on its output projection).
        edge_dim: width of ``edge_attr`` to project, if ``edge_mode`` is set.
        edge_mode: None, ``"bias"`` (``edge_attr`` -> [E, H] score bias) or ``"gate"``
            (``edge_attr`` -> [E, H, D] gate multiplied into q*k).
        backend: passed to `sparse_attention` (``"auto"``, ``"torch"``, ``"cpu"``, ...).
        score_clamp: limit the scaled dot products to [-c, c] before the softmax (GT's clamp of 5), or None.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 edge_dim: int | None = None, edge_mode: str | None = None, backend: str = "auto",
                 score_clamp: float | None = None, qkv_bias: bool | None = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads})")
        if edge_mode not in EDGE_MODES:
            raise ValueError(f"edge_mode must be one of {EDGE_MODES}, got {edge_mode!r}")
        if edge_mode is not None and not edge_dim:
            raise ValueError(f"edge_mode={edge_mode!r} needs edge_dim (the width of edge_attr)")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.attn_dropout, self.edge_mode, self.backend = float(dropout), edge_mode, backend
        self.score_clamp = score_clamp
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim)) if qkv_bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.edge_proj = None
        if edge_mode == "bias":
            self.edge_proj = nn.Linear(edge_dim, num_heads, bias=qkv_bias)
        elif edge_mode == "gate":
            self.edge_proj = nn.Linear(edge_dim, embed_dim, bias=qkv_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.out_proj.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.edge_proj is not None:
            self.edge_proj.reset_parameters()

    def project(self, query: Tensor, key: Tensor | None = None,
                value: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q [Nq, H, D], k [Nk, H, D], v [Nk, H, D] from query [Nq, C], key/value [Nk, C].

        ``key`` defaults to ``query`` and ``value`` to ``key`` (self-attention)."""
        H, D = self.num_heads, self.head_dim
        # Three matmuls, not one fused [C, 3C]: the kernel wants each of q, k, v contiguous, and slices of a
        # fused output would be copied forward and zero-filled + copied back in the backward.
        key = query if key is None else key
        value = key if value is None else value
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return (F.linear(query, w_q, b_q).view(-1, H, D), F.linear(key, w_k, b_k).view(-1, H, D),
                F.linear(value, w_v, b_v).view(-1, H, D))

    def edge_terms(self, pattern: Graph, edge_attr: Tensor | None, edge_bias: Tensor | None,
                   edge_gate: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """The [E, H] bias and [E, H, D] gate passed to the kernel."""
        if edge_attr is not None:
            if self.edge_proj is None:
                raise ValueError("edge_attr was given but the layer has edge_mode=None; "
                                 "construct it with edge_dim and edge_mode='bias' or 'gate'")
            if edge_attr.shape[0] != pattern.num_edges:
                raise ValueError(f"edge_attr has {edge_attr.shape[0]} rows but the pattern has "
                                 f"{pattern.num_edges} edges (CSR order)")
            projected = self.edge_proj(edge_attr)
            if self.edge_mode == "bias":
                edge_bias = projected if edge_bias is None else edge_bias + projected
            else:
                projected = projected.view(-1, self.num_heads, self.head_dim)
                edge_gate = projected if edge_gate is None else edge_gate * projected
        return edge_bias, edge_gate

    # a list while `record_attention` is active: (pattern, [E, H] weights) of every call, else None
    recorded: list[tuple[Graph, Tensor]] | None = None

    def attention_weights(self, q: Tensor, k: Tensor, pattern: Graph, bias: Tensor | None = None,
                          gate: Tensor | None = None) -> Tensor:
        """[E, H] softmax weights ``a_ij`` of the kernel's formula (before attention dropout), in the pattern's
        CSR order. O(E*C): for inspecting a model (`record_attention`), not the forward pass."""
        scores = gather_queries(pattern, q) * gather_keys(pattern, k)
        scores = (scores if gate is None else scores * gate).sum(-1) * self.head_dim ** -0.5
        if self.score_clamp is not None:
            scores = scores.clamp(-self.score_clamp, self.score_clamp)
        return segment_softmax(pattern, scores if bias is None else scores + bias)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                pattern: Graph | None = None, *, edge_attr: Tensor | None = None,
                edge_bias: Tensor | None = None, edge_gate: Tensor | None = None,
                keep_top: int | None = None, keep_top_rule: str = "exact",
                return_edge_products: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Attention of each query over its pattern row: ``attn(q, k, v, pattern)`` as
        ``torch.nn.MultiheadAttention(q, k, v)``, or ``attn(x, pattern=p)`` for self-attention.

        Args:
            query: [Nq, C]. key, value: [Nk, C] (default: ``query``; self-attention).
            pattern: `Graph` with Nq rows and Nk columns (required).
            edge_attr: [E, edge_dim] projected to a bias or gate (``edge_mode``).
            edge_bias: [E, H] added to the scores. edge_gate: [E, H, D] multiplied into q*k.
            keep_top: if set, ``pattern`` is the candidate set and each query keeps only its
                ``keep_top`` highest-scoring candidates (`sparsegt.patterns.topk`, head-averaged
                scores, no gradient through the selection); edge inputs are not allowed then.
            keep_top_rule: how ``keep_top`` selects: ``"exact"`` (`sparsegt.patterns.topk`) or
                ``"statistical"`` (Spark's statistical top-k, `sparsegt.patterns.threshold_topk`: a per-query
                threshold from the mean and std of its scores, O(E), no sort; keeps ``keep_top`` to
                ``1.5 * keep_top`` keys, ties included).
            return_edge_products: also return ``ŵ_ij = q_i ⊙ k_j ⊙ g_ij / sqrt(D)`` [E, H, D] (``g``: the
                gate, 1 without one), the per-channel terms whose sum over D is the unclamped score (GT
                updates its edge states from them). O(E*C): built only when asked for.
        Returns:
            [Nq, C] (no attention weights: they would be an [E, H] tensor the kernel never builds), and
            with ``return_edge_products`` the [E, H, D] products.
        """
        if not isinstance(pattern, Graph):
            raise ValueError("SparseMultiheadAttention needs pattern=<Graph> (rows: queries, columns: keys), "
                             f"got {type(pattern).__name__}")
        q, k, v = self.project(query, key, value)
        if keep_top is not None:
            if edge_attr is not None or edge_bias is not None or edge_gate is not None:
                raise ValueError("keep_top selects a new pattern, so edge_attr/edge_bias/edge_gate (aligned "
                                 "with the candidate pattern) cannot be used with it")
            if keep_top_rule == "exact":
                pattern = topk(q.detach(), k.detach(), pattern, keep_top)
            elif keep_top_rule == "statistical":
                pattern = threshold_topk(q.detach(), k.detach(), pattern, keep_top)
            else:
                raise ValueError(f"keep_top_rule must be 'exact' or 'statistical', got {keep_top_rule!r}")
        bias, gate = self.edge_terms(pattern, edge_attr, edge_bias, edge_gate)
        products = None
        if return_edge_products:
            products = gather_queries(pattern, q) * gather_keys(pattern, k)
            products = (products if gate is None else products * gate) * self.head_dim ** -0.5
        dropout_p = self.attn_dropout if self.training else 0.0
        if self.recorded is not None:
            self.recorded.append((pattern, self.attention_weights(q, k, pattern, bias, gate).detach()))
        out = sparse_attention(q, k, v, pattern, bias=bias, gate=gate, dropout_p=dropout_p,
                               score_clamp=self.score_clamp, backend=self.backend)
        out = self.out_proj(out.reshape(-1, self.embed_dim))
        return out if products is None else (out, products)



@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, list[tuple[Graph, Tensor]]]]:
    """Record the attention weights of every `SparseMultiheadAttention` in ``model`` while the block runs::

        with record_attention(model) as recorded:
            model(batch)
        for name, calls in recorded.items():     # module name -> [(pattern, [E, H] weights), ...] per call
            ...

    The weights are recomputed beside the kernel call (which never builds them) from the same q, k, bias and
    gate; nothing else changes. Recording is switched off again on exit.
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, SparseMultiheadAttention)}
    recorded: dict[str, list[tuple[Graph, Tensor]]] = {name: [] for name in modules}
    try:
        for name, module in modules.items():
            module.recorded = recorded[name]
        yield recorded
    finally:
        for module in modules.values():
            module.recorded = None
