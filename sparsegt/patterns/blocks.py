"""XAttention's block selection: antidiagonal sums score key blocks; keep the fewest blocks per query
block whose softmax mass reaches a threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, segment_arange
from .content import _as_heads

__all__ = ["block_select", "antidiagonal_block_mass", "select_blocks"]


@torch.no_grad()
def antidiagonal_block_mass(q: Tensor, k: Tensor, block: int, stride: int, *, causal: bool = False,
                            scale: float | None = None, rows_per_chunk: int = 256) -> Tensor:
    """[Bq, Bk] estimated softmax mass of every (query block, key block), each row summing to 1.

    XAttention's estimate: for every stride x stride sub-block of the score matrix, sum its
    antidiagonal, ``A[a, b] = sum_s <q[a*S + s], k[b*S + S-1-s]>`` (heads averaged, times ``scale``,
    default ``D ** -0.5``); softmax each row of A over the key positions (causal: only ``b <= a``);
    sum the probabilities over each block's ``block/stride`` rows and columns; normalise per query
    block. Work O(L^2 H D / S), memory O(rows_per_chunk * L / S + Bq * Bk) — never L x L.

    Args:
        q, k: [L, H, D] or [L, D] (one sequence). block: B, a multiple of ``stride`` (S).
    """
    q, k = _as_heads(q, k, "block_select")
    block = check_int("block_select: block", block, 1)
    stride = check_int("block_select: stride", stride, 1)
    if block % stride:
        raise ValueError(f"block_select: block = {block} must be a multiple of stride = {stride}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"block_select: q and k must cover the same L tokens, got {q.shape[0]} and "
                         f"{k.shape[0]}")
    L, H, D = q.shape
    scale = D ** -0.5 if scale is None else float(scale)
    n_blocks = -(-L // block)
    padded = n_blocks * block
    pad = lambda x: torch.cat([x, x.new_zeros(padded - L, H, D)]) if padded > L else x
    qp, kp = pad(q), pad(k)
    groups = padded // stride
    q_groups = qp.reshape(groups, stride * H * D)                               # rows a*S .. a*S+S-1
    k_groups = kp.reshape(groups, stride, H * D).flip(1).reshape(groups, stride * H * D)  # reversed
    per_block = block // stride
    valid_key = torch.arange(groups, device=q.device) * stride < L
    mass = torch.zeros(n_blocks, n_blocks, dtype=torch.float64, device=q.device)
    for start in range(0, groups, rows_per_chunk):
        stop = min(start + rows_per_chunk, groups)
        a = q_groups[start:stop] @ k_groups.T * (scale / H)                 # [chunk, groups]
        allowed = valid_key[None, :].expand_as(a)
        if causal:
            allowed = allowed & (torch.arange(groups, device=q.device)[None, :]
                                 <= torch.arange(start, stop, device=q.device)[:, None])
        a = a.masked_fill(~allowed, -torch.inf)
        prob = torch.softmax(a.double(), dim=1).nan_to_num(0.0)
        prob = prob * (torch.arange(start, stop, device=q.device) * stride < L)[:, None]
        by_key_block = prob.reshape(stop - start, n_blocks, per_block).sum(2)
        query_block = torch.div(torch.arange(start, stop, device=q.device), per_block, rounding_mode="floor")
        mass.index_add_(0, query_block, by_key_block)
    total = mass.sum(1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-300), mass)


def select_blocks(mass: Tensor, threshold: float, keep_diagonal: bool = False) -> Tensor:
    """[Bq, Bk] bool: per row, the fewest blocks (largest first) whose mass sums to >= threshold.

    Ties keep the lower block index; ``keep_diagonal`` adds block (i, i) (XAttention keeps it in
    causal prefill)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"block_select: threshold = {threshold} must be in (0, 1]")
    value, order = torch.sort(mass, dim=1, descending=True, stable=True)
    before = torch.cumsum(value, 1) - value                   # mass of the blocks ranked before
    take = (before < threshold - 1e-12) & (value > 0)
    keep = torch.zeros_like(mass, dtype=torch.bool).scatter(1, order, take)
    if keep_diagonal:
        diag = torch.arange(min(mass.shape), device=mass.device)
        keep[diag, diag] = True
    return keep


@torch.no_grad()
def block_select(q: Tensor, k: Tensor, block: int = 128, stride: int = 8, threshold: float = 0.9, *,
                 causal: bool = False, keep_diagonal: bool = False, scale: float | None = None) -> Graph:
    """XAttention pattern for one sequence: token-level CSR of the selected (query block, key block)s.

    Scores blocks with `antidiagonal_block_mass`, keeps per query block the fewest key blocks whose
    estimated mass reaches ``threshold`` (`select_blocks`), and expands them to tokens (with
    ``causal``, keys after the query are dropped). XAttention's defaults: block 128, stride 8 or 16,
    threshold 0.9.

    Args:
        q, k: [L, H, D] or [L, D]. Returns `Graph` [L, L], sorted, O(E) memory.
    """
    mass = antidiagonal_block_mass(q, k, block, stride, causal=causal, scale=scale)
    keep = select_blocks(mass, threshold, keep_diagonal)
    L = q.shape[0]
    if L == 0:
        return Graph.empty(0).to(q.device)
    token = torch.arange(L, device=q.device)
    qblock = torch.div(token, block, rounding_mode="floor")
    n_blocks = keep.shape[0]
    kept_per_block = keep.sum(1)
    block_ids = torch.arange(n_blocks, device=q.device)[None, :].expand_as(keep)[keep]   # row-major, sorted
    block_ptr = torch.cat([kept_per_block.new_zeros(1), torch.cumsum(kept_per_block, 0)])
    # per token row: its query block's kept key blocks, each expanded to its tokens
    sizes = torch.clamp(L - torch.arange(n_blocks, device=q.device) * block, max=block)
    reps = kept_per_block[qblock]
    row_of_entry = token.repeat_interleave(reps)
    which = torch.repeat_interleave(block_ptr[qblock], reps) + segment_arange(reps)
    kblock = block_ids[which]
    counts = sizes[kblock]
    row = row_of_entry.repeat_interleave(counts)
    col = kblock.repeat_interleave(counts) * block + segment_arange(counts)
    if causal:
        ok = col <= row
        row, col = row[ok], col[ok]
    return csr_from_pairs(row, col, L, L)
