"""Content-based patterns built from q/k each step: exact `topk` and Spark's statistical `threshold_topk`.

They run on the device of ``q``, select under ``torch.no_grad`` (no gradient flows through the
choice of keys; gradients flow through the attention over the chosen keys), and score candidates in
chunks so memory is O(E_candidates + chunk), never O(Nq * Nk) unless the candidates are all pairs.

Scores: ``s(i, j) = mean_h <q[i, h], k[j, h]>`` — the per-head dot products averaged over heads (one
pattern shared by all heads, as the kernel expects), without the ``1/sqrt(D)`` scale (it does not
change any ranking or threshold of these builders).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, filter_edges, segment_arange

__all__ = ["topk", "threshold_topk", "edge_scores"]

CHUNK_ELEMENTS = 1 << 20  # elements of q[row] * k[col] materialised at once (cache-sized pieces)
BLOCK_EDGES = 1 << 18     # entries per row chunk of edge_scores (its dense block holds <= 4x this)


def _as_heads(q: Tensor, k: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(q, Tensor) or not isinstance(k, Tensor):
        raise ValueError(f"{name}: q and k must be tensors")
    if q.dim() == 2:
        q = q[:, None, :]
    if k.dim() == 2:
        k = k[:, None, :]
    if q.dim() != 3 or k.dim() != 3 or q.shape[1:] != k.shape[1:]:
        raise ValueError(f"{name}: q must be [Nq, H, D] or [Nq, D] and k [Nk, H, D] or [Nk, D] with the same "
                         f"H and D, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if q.device != k.device:
        raise ValueError(f"{name}: q is on {q.device} but k on {k.device}")
    return q.detach(), k.detach()


def _check_candidates(candidates: Graph, q: Tensor, k: Tensor, name: str) -> Graph:
    if not isinstance(candidates, Graph):
        raise ValueError(f"{name}: candidates must be a sparsegt.Graph, got {type(candidates).__name__}")
    if candidates.num_nodes != q.shape[0] or candidates.num_cols != k.shape[0]:
        raise ValueError(f"{name}: candidates is {candidates.num_nodes}x{candidates.num_cols} but q has "
                         f"{q.shape[0]} rows and k {k.shape[0]}")
    return candidates.to(q.device) if candidates.device != q.device else candidates


@torch.no_grad()
def edge_scores(q: Tensor, k: Tensor, pattern: Graph) -> Tensor:
    """[E] head-averaged dot product ``mean_h <q[row], k[col]>`` of every pattern entry, in chunks.

    Rows are taken in chunks of about ``BLOCK_EDGES`` entries. A chunk whose keys lie in a narrow
    column range (windows, blocks, small graphs of a batch) is scored by one dense GEMM over that
    range, ``q[rows] @ k[cols].T``, when the range holds at most 4x the chunk's entries; other chunks
    gather ``q[row] * k[col]`` (cache-sized pieces). Memory O(BLOCK_EDGES * 4 + piece), never Nq x Nk.
    """
    q, k = _as_heads(q, k, "edge_scores")
    pattern = _check_candidates(pattern, q, k, "edge_scores")
    heads = q.shape[1]
    qf, kf = q.flatten(1), k.flatten(1)
    out = torch.empty(pattern.num_edges, dtype=q.dtype, device=q.device)
    if pattern.num_edges == 0:
        return out
    indptr, cols = pattern.indptr, pattern.indices
    # row chunk boundaries at every ~BLOCK_EDGES entries (at least one row per chunk)
    targets = torch.arange(1, -(-pattern.num_edges // BLOCK_EDGES), device=q.device) * BLOCK_EDGES
    cuts = torch.searchsorted(indptr, targets, right=True).tolist()
    bounds = sorted(set([0] + cuts + [pattern.num_nodes]))
    piece = max(1, CHUNK_ELEMENTS // max(qf.shape[1], 1))
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=False):
        e0, e1 = int(indptr[r0]), int(indptr[r1])
        if e1 == e0:
            continue
        c = cols[e0:e1]
        lo, hi = int(c.min()), int(c.max()) + 1
        row = pattern.row_index()[e0:e1]
        if (r1 - r0) * (hi - lo) <= 4 * (e1 - e0):
            block = qf[r0:r1] @ kf[lo:hi].T
            out[e0:e1] = block[row - r0, c - lo] / heads
            continue
        for s in range(e0, e1, piece):
            t = min(s + piece, e1)
            product = torch.index_select(qf, 0, row[s - e0:t - e0]).mul_(torch.index_select(kf, 0, cols[s:t]))
            out[s:t] = product.sum(1) / heads
    return out


def _rank_within_rows(pattern: Graph, score: Tensor) -> tuple[Tensor, Tensor]:
    """(order, rank): edges ordered by row, then by descending score (ties: CSR order); rank in row."""
    by_score = torch.sort(score, descending=True, stable=True).indices
    order = by_score[torch.sort(pattern.row_index()[by_score], stable=True).indices]
    rank = torch.arange(pattern.num_edges, device=score.device) - pattern.indptr[pattern.row_index()[order]]
    return order, rank


@torch.no_grad()
def topk(q: Tensor, k: Tensor, candidates: Graph | None, k_keep: int) -> Graph:
    """Exact top-k attention pattern: per query, the ``k_keep`` candidate keys with the largest score.

    Args:
        q: [Nq, H, D] or [Nq, D]. k: [Nk, H, D] or [Nk, D].
        candidates: `Graph` [Nq, Nk] of allowed keys (e.g. `full(batch)` or `causal(...)`), or None
            for all keys (then scored in row chunks of [chunk, Nk]; memory O(chunk * Nk + Nq * k_keep)).
        k_keep: keys kept per query (rows with fewer candidates keep all of them).
    Returns:
        `Graph` [Nq, Nk], a subset of the candidates, sorted CSR (keys ascending in each row), keeping
        the candidates' batch offsets and edge tensors. Which of several equal scores is kept is
        unspecified (deterministic on a given device).
    """
    q, k = _as_heads(q, k, "topk")
    k_keep = check_int("topk: k_keep", k_keep, 0)
    if candidates is None:
        return _topk_all_keys(q, k, k_keep)
    candidates = _check_candidates(candidates, q, k, "topk")
    if candidates.num_edges == 0:
        return filter_edges(candidates, torch.zeros(0, dtype=torch.bool, device=q.device))
    score = edge_scores(q, k, candidates)
    keep = torch.zeros(candidates.num_edges, dtype=torch.bool, device=q.device)
    degree = candidates.indptr.diff()
    widest = int(degree.max())
    if k_keep >= widest:
        keep[:] = True
    elif candidates.num_nodes * widest <= 2 * candidates.num_edges + 4096:
        # rows of similar length: one torch.topk over a [Nq, widest] table (at most ~2E slots)
        table = torch.full((candidates.num_nodes, widest), -torch.inf, dtype=score.dtype, device=q.device)
        table[candidates.row_index(), segment_arange(degree)] = score
        slot = torch.topk(table, k_keep, dim=1).indices
        valid = slot < degree[:, None]
        keep[(candidates.indptr[:-1, None] + slot)[valid]] = True
    else:   # very uneven rows: sort by (row, score) instead of padding
        order, rank = _rank_within_rows(candidates, score)
        keep[order[rank < k_keep]] = True
    return filter_edges(candidates, keep)


def _topk_all_keys(q: Tensor, k: Tensor, k_keep: int) -> Graph:
    nq, nk = q.shape[0], k.shape[0]
    keep = min(k_keep, nk)
    if nq == 0 or keep == 0:
        return Graph.empty(nq, nk).to(q.device)
    flat_q = q.flatten(1) / q.shape[1]
    flat_k = k.flatten(1)
    chunk = max(1, CHUNK_ELEMENTS // max(nk, 1))
    cols = []
    for start in range(0, nq, chunk):
        block = flat_q[start:start + chunk] @ flat_k.T
        cols.append(torch.topk(block, keep, dim=1).indices)
    col = torch.cat(cols).reshape(-1)
    row = torch.arange(nq, device=q.device).repeat_interleave(keep)
    return csr_from_pairs(row, col, nq, nk, device=q.device)


@torch.no_grad()
def threshold_topk(q: Tensor, k: Tensor, candidates: Graph, k_keep: int, min_keep: int = 1) -> Graph:
    """Spark's statistical top-k in linear time: keep the candidates above an estimated threshold.

    Instead of sorting, each row's scores are modelled as Gaussian with the row's mean ``mu`` and
    standard deviation ``sigma``; the threshold ``tau = mu + sigma * Phi^-1(1 - k_keep / n_row)``
    keeps about ``k_keep`` of a row's ``n_row`` candidates (every candidate when ``n_row <= k_keep``).
    The count per row is approximate (exact only for Gaussian scores); cost is O(E) — two segment
    reductions and one comparison. The ``min_keep`` best keys of every non-empty row are always
    kept (their maximum is found by a segment max, still O(E)), so no row goes empty.

    Args and returns as `topk` (``candidates`` is required).
    """
    q, k = _as_heads(q, k, "threshold_topk")
    k_keep = check_int("threshold_topk: k_keep", k_keep, 1)
    if min_keep not in (0, 1):
        raise ValueError(f"threshold_topk: min_keep = {min_keep} must be 0 or 1 (the row maximum is kept)")
    candidates = _check_candidates(candidates, q, k, "threshold_topk")
    if candidates.num_edges == 0:
        return filter_edges(candidates, torch.zeros(0, dtype=torch.bool, device=q.device))
    score = edge_scores(q, k, candidates).double()
    row = candidates.row_index()
    n_row = candidates.indptr.diff().to(score.dtype)
    safe_n = n_row.clamp_min(1)
    mean = torch.zeros_like(n_row).index_add(0, row, score) / safe_n
    var = torch.zeros_like(n_row).index_add(0, row, (score - mean[row]) ** 2) / safe_n
    fraction = (k_keep / safe_n).clamp(max=1.0)
    z = torch.special.ndtri((1.0 - fraction).clamp(1e-12, 1.0))
    tau = mean + var.sqrt() * z
    keep = (score >= tau[row]) | (fraction[row] >= 1.0)
    if min_keep:
        row_max = torch.full_like(n_row, -torch.inf).scatter_reduce(0, row, score, "amax")
        keep |= score >= row_max[row]
    return filter_edges(candidates, keep)
