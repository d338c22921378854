"""The attention graph of a layer: its weights recomputed from q, k and the pattern, and their PageRank.

A layer's softmax attention is a weighted directed graph on its tokens: query i points to each key j of
its pattern row with weight ``a_ij`` (the row sums to 1). The kernel never materialises the [E, H] weights
(`sparse_attention` returns only outputs), so `attention_weights` recomputes them from the layer's own
projections, exactly as the kernel defines them::

    s_ij = clamp(<q_i, k_j ⊙ g_ij> / sqrt(D), -c, c) + b_ij        a_ij = softmax_{j in N(i)} s_ij

`weighted_pagerank` scores the nodes of such a graph (Zero-TPrune's importance; Wang et al., "Zero-TPrune:
Zero-Shot Token Pruning through Leveraging of the Attention Graph in Pre-Trained Transformers", CVPR 2024,
arXiv:2312.17464): a node is important when important nodes attend to it. With ``P_ij = w_ij / sum_j' w_ij'``
(row-normalised weights; attention rows are already normalised), n the graph's node count and ``alpha`` the
damping::

    s^(0) = 1/n
    s^(t+1)_j = alpha * ( sum_i s^(t)_i P_ij + (1/n) sum_{i dangling} s^(t)_i ) + (1 - alpha) / n

(a dangling node, one without out-weight, spreads its score evenly). ``alpha = 1`` is Zero-TPrune's weighted
PageRank (power iteration of ``s <- A^T s`` from the uniform start); ``alpha = 0.85`` is classic PageRank.
This is networkx's ``pagerank(G, alpha, weight="weight")`` (uniform personalization and dangling
distribution, stop when ``sum |s^(t+1) - s^(t)| < n * tol``), computed per graph of a batch and per head.
On CPU the power iteration runs in one numba call (`pagerank_kernels`: each graph in its own scores, in
parallel, each stopping when it has converged); elsewhere, or when an entry links two graphs, on torch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..attention.numba_runtime import numba_threads, thread_count
from ..graph import Graph
from ..nn import SparseMultiheadAttention
from ..nn.segment import gather_keys, gather_queries, segment_softmax
from ..patterns import full, threshold_topk, topk
from .pagerank_kernels import pagerank_graphs

__all__ = ["attention_weights", "weighted_pagerank", "full_block_dots", "padded_blocks", "blocks_pay"]

PAGERANK_MIN_WORK = 1 << 16  # entries x heads below which one thread runs the kernel


@torch.no_grad()
def attention_weights(attention: SparseMultiheadAttention, x: Tensor, pattern: Graph, *,
                      edge_attr: Tensor | None = None, keep_top: int | None = None,
                      keep_top_rule: str = "exact") -> tuple[Graph, Tensor]:
    """The softmax weights of ``attention(x, pattern=pattern, edge_attr=..., keep_top=...)`` (self-attention).

    Args:
        attention: the layer's `SparseMultiheadAttention`. x: [N, C] its input. pattern: `Graph` [N, N].
        edge_attr: [E, edge_dim] edge inputs, as the layer passes them. keep_top / keep_top_rule: the
            layer's top-k selection; the weights are then over the selected pattern.
    Returns:
        (pattern the weights live on, [E, H] weights, each non-empty row summing to one per head).
    """
    q, k, _ = attention.project(x)
    if keep_top is not None:
        select = {"exact": topk, "statistical": threshold_topk}.get(keep_top_rule)
        if select is None:
            raise ValueError(f"keep_top_rule must be 'exact' or 'statistical', got {keep_top_rule!r}")
        pattern = select(q, k, pattern, keep_top)
    bias, gate = attention.edge_terms(pattern, edge_attr, None, None)
    dots = full_block_dots(pattern, q, k) if gate is None else None
    if dots is None:
        products = gather_queries(pattern, q) * gather_keys(pattern, k)
        dots = (products if gate is None else products * gate).sum(-1)
    score = dots * attention.head_dim ** -0.5
    if attention.score_clamp is not None:
        score = score.clamp(-attention.score_clamp, attention.score_clamp)
    if bias is not None:
        score = score + bias
    return pattern, segment_softmax(pattern, score)


def blocks_pay(sizes: Tensor) -> bool:
    """Whether zero-padded per-graph blocks of graphs of ``sizes`` nodes hold at most 4x their sum n_b^2 real
    entries (else a product of the padded blocks computes mostly padding)."""
    width = int(sizes.max()) if sizes.numel() else 0
    return sizes.numel() * width * width <= 4 * int((sizes * sizes).sum())


def padded_blocks(ptr: Tensor, *rows: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
    """Each of ``rows`` ([N, *F], the nodes of the graphs ``ptr`` [B+1] delimits, in order) as zero-padded
    per-graph blocks [B, n_max, *F], with ``(graph_of, position)`` [N] each, the block and row of every node."""
    sizes = ptr.diff()
    graph_of = torch.repeat_interleave(torch.arange(sizes.numel(), device=ptr.device), sizes)
    position = torch.arange(int(ptr[-1]), device=ptr.device) - ptr[:-1].index_select(0, graph_of)
    width = int(sizes.max()) if sizes.numel() else 0
    padded = []
    for x in rows:
        block = x.new_zeros(sizes.numel(), width, *x.shape[1:])
        block[graph_of, position] = x
        padded.append(block)
    return padded, graph_of, position


@torch.no_grad()
def full_block_dots(pattern: Graph, q: Tensor, k: Tensor) -> Tensor | None:
    """[E, H] ``<q_i, k_j>`` of every entry of a pattern that is `full` per graph (each row lists every node
    of its graph, in order), by one batched product of the graphs' zero-padded [n_max, H, D] blocks instead
    of [E, H, D] gathers; None when the pattern is not of that form or padding would hold over 4x E entries.

    In a full pattern the entries of graph b's rows, in CSR order, are its [n_b, n_b] block in row-major
    order, so the valid entries of the padded [B, n_max, n_max] products, taken in order, are the pattern's.
    """
    n = pattern.num_nodes
    ptr = pattern.ptr if pattern.ptr is not None else torch.tensor([0, n], device=q.device)
    sizes = ptr.diff()
    if n != pattern.num_cols or not n or int((sizes * sizes).sum()) != pattern.num_edges \
            or not blocks_pay(sizes):
        return None
    expected = full(Graph.empty(n, ptr=ptr))
    if not (torch.equal(pattern.indptr, expected.indptr) and torch.equal(pattern.indices, expected.indices)):
        return None
    (padded_q, padded_k), _, _ = padded_blocks(ptr, q, k)
    dots = torch.einsum("bihd,bjhd->bijh", padded_q, padded_k)                 # [B, n_max, n_max, H]
    valid = torch.arange(padded_q.shape[1], device=q.device) < sizes[:, None]  # [B, n_max]
    return dots[valid[:, :, None] & valid[:, None, :]]                         # [E, H], CSR order


@torch.no_grad()
def weighted_pagerank(pattern: Graph, weight: Tensor, damping: float = 0.85, max_iter: int = 100,
                      tol: float = 1e-6) -> Tensor:
    """PageRank of every node of a weighted graph (edges row -> column), per graph of a batch (module docstring).

    Args:
        pattern: square `Graph` [N, N] (a batch: each graph ranked on its own, scores summing to 1 per graph).
        weight: [E] or [E, H] non-negative edge weights in CSR order (attention weights; H: one ranking per head).
        damping: alpha in [0, 1]. max_iter: most power iterations. tol: stop when every graph's (and head's)
            L1 change is below ``n_b * tol``.
    Returns:
        [N] or [N, H] scores (the dtype of ``weight``; computed in float64).
    """
    if pattern.num_nodes != pattern.num_cols:
        raise ValueError(f"weighted_pagerank needs a square graph, got {pattern.num_nodes}x{pattern.num_cols}")
    if weight.shape[:1] != (pattern.num_edges,) or weight.dim() not in (1, 2):
        raise ValueError(f"weight must be [E] or [E, H] with E = {pattern.num_edges} (CSR order), "
                         f"got {tuple(weight.shape)}")
    if not 0.0 <= damping <= 1.0:
        raise ValueError(f"damping must be in [0, 1], got {damping}")
    if bool((weight < 0).any()) or not bool(torch.isfinite(weight).all()):
        raise ValueError("weighted_pagerank: weights must be finite and non-negative")
    w = weight.double().reshape(pattern.num_edges, -1)
    heads, n = w.shape[1], pattern.num_nodes
    row, col = pattern.row_index(), pattern.indices
    out_weight = w.new_zeros(n, heads).index_add_(0, row, w)
    dangling = (out_weight == 0).to(w.dtype)
    transition = w / out_weight.index_select(0, row).clamp_min(torch.finfo(w.dtype).tiny)
    graph_of = pattern.batch_index if pattern.ptr is not None else torch.zeros(n, dtype=torch.long, device=w.device)
    counts = (pattern.ptr.diff() if pattern.ptr is not None else torch.tensor([n], device=w.device)).to(w.dtype)
    if w.device.type == "cpu" and bool((graph_of.index_select(0, row) == graph_of.index_select(0, col)).all()):
        score = torch.empty(n, heads, dtype=torch.float64)
        ptr = pattern.ptr if pattern.ptr is not None else torch.tensor([0, n])
        with numba_threads(thread_count(pattern.num_edges * heads, PAGERANK_MIN_WORK)):
            pagerank_graphs(pattern.indptr.contiguous().numpy(), col.contiguous().numpy(),
                            transition.contiguous().numpy(), dangling.bool().numpy(), ptr.numpy(), float(damping),
                            int(max_iter), float(tol), score.numpy())
    else:
        score = _power_iteration_torch(row, col, transition, dangling, graph_of, counts, damping, max_iter, tol)
    return score.to(weight.dtype).reshape(n, *weight.shape[1:])


def _power_iteration_torch(row: Tensor, col: Tensor, transition: Tensor, dangling: Tensor, graph_of: Tensor,
                           counts: Tensor, damping: float, max_iter: int, tol: float) -> Tensor:
    """[N, H] scores by power iteration on torch ops over every entry of the batch (any device), until every
    graph and head has converged."""
    uniform = (1.0 / counts.clamp_min(1)).index_select(0, graph_of)[:, None]        # [N, 1]: 1 / n_b
    score = uniform.expand(dangling.shape).clone()
    for _ in range(max_iter):
        spread = torch.zeros_like(score).index_add_(0, col, transition * score.index_select(0, row))
        lost = torch.zeros(counts.numel(), score.shape[1], dtype=score.dtype, device=score.device).index_add_(
            0, graph_of, score * dangling)
        new = damping * (spread + lost.index_select(0, graph_of) * uniform) + (1.0 - damping) * uniform
        change = torch.zeros_like(lost).index_add_(0, graph_of, (new - score).abs())
        score = new
        if bool((change < counts[:, None] * tol).all()):
            break
    return score
