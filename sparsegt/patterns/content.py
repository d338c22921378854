"""Content-based patterns built from q/k each step: exact `topk` and Spark's statistical `threshold_topk`.

They run on the device of ``q``, select under ``torch.no_grad`` (no gradient flows through the
choice of keys; gradients flow through the attention over the chosen keys), and score candidates in
chunks so memory is O(E_candidates + chunk), never O(Nq * Nk) unless the candidates are all pairs.

Scores: ``s(i, j) = mean_h <q[i, h], k[j, h]>`` — the per-head dot products averaged over heads (one
pattern shared by all heads, as the kernel expects), without the ``1/sqrt(D)`` scale (it does not
change any ranking or threshold of these builders).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, filter_edges, segment_arange

__all__ = ["topk", "threshold_topk", "edge_scores"]

CHUNK_ELEMENTS = 1 << 20  # elements of q[row] * k[col] materialised at once (cache-sized pieces)
BLOCK_EDGES = 1 << 18     # entries per row chunk of edge_scores (its dense block holds <= 4x this)
MAX_PASSES = 100          # threshold_topk's bucket passes; each narrows the score range >= 2x (~64 needed at most)


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


def _refine_thresholds(score: Tensor, row: Tensor, threshold: Tensor, rows: Tensor, inside: Tensor,
                       above: Tensor, k_keep: int, most: int) -> None:
    """Exact bucket selection with early stop for ``rows``; writes their ``threshold`` (a score).

    Per row the entries still in question, S (initially those where ``inside``), and ``above``
    entries of the row that score higher than all of S, with ``above < k_keep <= above + |S|``. A
    pass counts S in ``2**bits`` equal buckets of [min S, max S] (floor of a monotone float
    expression, so equal scores share a bucket and a higher bucket means a strictly higher score)
    and keeps the bucket holding the k-th largest score as the new S. A row stops when ``threshold =
    min(S)`` keeps ``above + |S| <= most`` entries, or when S is one repeated score (ties). The
    score range of S shrinks by ``2**bits`` a pass (so at most ~64 / bits passes) and S by about
    the same factor on spread-out scores; the table is [rows, 2**bits] <= 4|S|.
    """
    entries = inside.nonzero().squeeze(1)
    value = score.index_select(0, entries)
    slot = row.index_select(0, entries)
    if 2 * rows.numel() >= threshold.numel():       # most rows in question: the first pass indexes by row
        finished = torch.ones_like(threshold, dtype=torch.bool).index_fill_(0, rows, False)
        rows = torch.arange(threshold.numel(), device=score.device)
    else:
        slot_of_row = torch.full_like(threshold, -1, dtype=torch.long)
        slot_of_row[rows] = torch.arange(rows.numel(), device=score.device)
        slot = slot_of_row.index_select(0, slot)
        finished = torch.zeros_like(rows, dtype=torch.bool)
        above = above[rows]
    lo = torch.full_like(threshold, torch.inf)[: rows.numel()].scatter_reduce(0, slot, value, "amin")
    width = torch.full_like(lo, -torch.inf).scatter_reduce(0, slot, value, "amax") - lo
    for last_pass in range(MAX_PASSES, -1, -1):
        n_rows = rows.numel()
        buckets = 1 << int(max(1, min(8, math.floor(math.log2(4 * max(value.numel(), 1) / n_rows)))))
        step = (width / buckets).clamp_(min=torch.finfo(torch.float64).smallest_normal * 2 ** -52)   # > 0
        position = (value - lo.index_select(0, slot)).div_(step.index_select(0, slot))
        bucket = position.clamp_(0, buckets - 1).long()        # float clamp first: inf stays in the top bucket
        counts = torch.bincount(slot * buckets + bucket, minlength=n_rows * buckets).view(n_rows, buckets)
        at_least = torch.cat([counts.flip(1).cumsum(1).flip(1), torch.zeros_like(counts[:, :1])], 1) + above[:, None]
        chosen = ((at_least[:, :buckets] >= k_keep).sum(1) - 1).clamp_min(0)   # the bucket of the k-th largest
        kept = at_least.gather(1, chosen[:, None]).squeeze(1)
        above = at_least.gather(1, chosen[:, None] + 1).squeeze(1)
        in_chosen = (bucket == chosen.index_select(0, slot)).nonzero().squeeze(1)
        value, slot = value.index_select(0, in_chosen), slot.index_select(0, in_chosen)
        new_lo = torch.full_like(lo, torch.inf).scatter_reduce(0, slot, value, "amin")
        new_hi = torch.full_like(lo, -torch.inf).scatter_reduce(0, slot, value, "amax")
        stop = (kept <= most) | (new_hi <= new_lo) | (last_pass == 0)     # (a safety net: never reached)
        write = stop & ~finished
        threshold[rows[write]] = new_lo[write]
        go_on = ~(stop | finished)
        finished = finished[go_on]
        if not bool(go_on.any()):
            return
        renumber = torch.cumsum(go_on, 0) - 1
        alive = go_on.index_select(0, slot).nonzero().squeeze(1)
        value, slot = value.index_select(0, alive), renumber.index_select(0, slot.index_select(0, alive))
        rows, lo, width, above = rows[go_on], new_lo[go_on], (new_hi - new_lo)[go_on], above[go_on]


@torch.no_grad()
def threshold_topk(q: Tensor, k: Tensor, candidates: Graph, k_keep: int, min_keep: int = 1, *,
                   slack: float = 1.5) -> Graph:
    """Spark's statistical top-k in linear time: keep the candidates above a per-row threshold.

    Each row's threshold starts as Spark's statistical estimate: the scores are modelled as Gaussian
    with the row's mean ``mu`` and standard deviation ``sigma``, ``tau = mu + sigma * Phi^-1(1 -
    k_keep / n_row)`` (segment reductions, O(E)). Rows where that keeps between ``k_keep`` and
    ``floor(slack * k_keep)`` candidates are done (most rows, on near-Gaussian scores). The others
    (bimodal, heavy-tailed, uniform, ...) are corrected by a few bucket passes over the scores still
    in question (`_refine_thresholds`): each pass counts them in up to 256 buckets and narrows to the
    bucket holding the k-th largest score. No sort anywhere.

    Guarantees, per row with ``n_row`` candidates:
      - every kept score is >= every dropped score (a threshold), so the kept set contains an exact
        top-``k_keep`` (and the row maximum: no non-empty row goes empty);
      - rows with ``n_row <= floor(slack * k_keep)`` keep all candidates; the others keep between
        ``k_keep`` and ``floor(slack * k_keep)``, except that candidates whose score equals the
        threshold score are all kept (ties);
      - ``slack = 1`` gives the exact top-k plus ties.
    Cost: O(E) time and memory for the estimate, plus passes over the scores still in question
    (their score range shrinks 2**bits-fold a pass, bits <= 8).

    Args and returns as `topk` (``candidates`` is required). ``min_keep`` (0 or 1) is accepted for
    compatibility: the row maximum is always kept. ``slack``: >= 1, the allowed overshoot factor.
    """
    q, k = _as_heads(q, k, "threshold_topk")
    k_keep = check_int("threshold_topk: k_keep", k_keep, 1)
    if min_keep not in (0, 1):
        raise ValueError(f"threshold_topk: min_keep = {min_keep} must be 0 or 1 (the row maximum is kept)")
    if not slack >= 1.0:
        raise ValueError(f"threshold_topk: slack = {slack} must be >= 1 (the most kept per row is slack * k_keep)")
    candidates = _check_candidates(candidates, q, k, "threshold_topk")
    most = max(k_keep, math.floor(slack * k_keep))
    indptr, degree = candidates.indptr, candidates.indptr.diff()
    active = degree > most
    if candidates.num_edges == 0 or not bool(active.any()):
        return filter_edges(candidates, torch.ones(candidates.num_edges, dtype=torch.bool, device=q.device))
    # finite scores keep every difference below finfo.max (inf or nan would stall the buckets)
    score = edge_scores(q, k, candidates).double().nan_to_num(nan=-1e300).clamp_(-1e300, 1e300)
    row = candidates.row_index()
    # Spark's estimate; rows are contiguous CSR segments, so segment reductions need no atomics
    n_row = degree.to(score.dtype).clamp_min(1)
    mean = torch.segment_reduce(score, "sum", offsets=indptr) / n_row
    centred = score - mean.index_select(0, row)
    var = torch.segment_reduce(centred * centred, "sum", offsets=indptr) / n_row
    tau = mean + var.sqrt() * torch.special.ndtri((1.0 - k_keep / n_row).clamp(1e-12, 1.0))
    at_tau = score >= tau.index_select(0, row)
    count = torch.segment_reduce(at_tau.to(score.dtype), "sum", offsets=indptr).long()
    threshold = torch.where(active, tau, torch.full_like(tau, -torch.inf))     # inactive rows keep all
    work = active & ((count < k_keep) | (count > most))
    if bool(work.any()):
        # the k-th largest score is >= tau where tau keeps enough, else below tau
        enough = count >= k_keep
        above = torch.where(enough, torch.zeros_like(count), count)
        state = torch.where(work, torch.where(enough, 2, 1), 0).to(torch.int8).index_select(0, row)
        inside = torch.where(at_tau, state == 2, state == 1)   # work rows: S is above tau if tau keeps enough
        _refine_thresholds(score, row, threshold, work.nonzero().squeeze(1), inside, above, k_keep, most)
    return filter_edges(candidates, score >= threshold.index_select(0, row))
