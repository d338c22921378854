"""XAttention's block selection: antidiagonal sums score key blocks; keep the fewest blocks per query
block whose softmax mass reaches a threshold. One sequence or a batch of sequences of any lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, finish, segment_arange
from .content import _as_heads

__all__ = ["block_select", "antidiagonal_block_mass", "select_blocks"]


def _check_blocks(q: Tensor, k: Tensor, block: int, stride: int) -> tuple[Tensor, Tensor, int, int]:
    q, k = _as_heads(q, k, "block_select")
    block = check_int("block_select: block", block, 1)
    stride = check_int("block_select: stride", stride, 1)
    if block % stride:
        raise ValueError(f"block_select: block = {block} must be a multiple of stride = {stride}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"block_select: q and k must cover the same L tokens, got {q.shape[0]} and "
                         f"{k.shape[0]}")
    return q, k, block, stride


def _stacked_block_mass(q: Tensor, k: Tensor, lengths: Tensor, block: int, stride: int, causal: bool,
                        scale: float, rows_per_chunk: int) -> Iterator[tuple[int, Tensor]]:
    """Block mass of ``Bg`` sequences stacked and zero-padded to the same ``Lp = NB * block`` tokens.

    q, k: [Bg, Lp, H, D]; lengths: [Bg] real tokens of each. Yields ``(b0, mass)`` with ``mass``
    [Bg, nb, NB] float64 the normalised mass of query blocks ``b0 .. b0 + nb - 1``: chunks of query
    blocks, so memory is O(Bg * chunk * Lp / S), never the Lp x Lp scores nor all of [NB, NB].
    """
    count, padded, heads, dim = q.shape
    groups, per_block, n_blocks = padded // stride, block // stride, padded // block
    q_groups = q.reshape(count, groups, stride * heads * dim)                        # rows a*S .. a*S+S-1
    k_groups = k.reshape(count, groups, stride, heads * dim).flip(2).reshape(count, groups, -1)  # reversed
    group_start = torch.arange(groups, device=q.device) * stride
    valid_key = group_start[None, :] < lengths[:, None]                              # [Bg, G]
    blocks_per_chunk = max(1, rows_per_chunk // (per_block * count))
    for b0 in range(0, n_blocks, blocks_per_chunk):
        b1 = min(n_blocks, b0 + blocks_per_chunk)
        g0, g1 = b0 * per_block, b1 * per_block
        a = torch.bmm(q_groups[:, g0:g1], k_groups.transpose(1, 2)) * (scale / heads)   # [Bg, g, G]
        allowed = valid_key[:, None, :]
        if causal:
            allowed = allowed & (torch.arange(groups, device=q.device)[None, None, :]
                                 <= torch.arange(g0, g1, device=q.device)[None, :, None])
        a = a.masked_fill(~allowed, -torch.inf)
        prob = torch.softmax(a.double(), dim=2).nan_to_num(0.0)
        prob = prob * (group_start[g0:g1][None, :] < lengths[:, None])[:, :, None]     # padded queries: 0
        mass = prob.reshape(count, b1 - b0, per_block, n_blocks, per_block).sum((2, 4))
        total = mass.sum(2, keepdim=True)
        yield b0, torch.where(total > 0, mass / total.clamp_min(1e-300), mass)


@torch.no_grad()
def antidiagonal_block_mass(q: Tensor, k: Tensor, block: int, stride: int, *, causal: bool = False,
                            scale: float | None = None, rows_per_chunk: int = 256) -> Tensor:
    """[Bq, Bk] estimated softmax mass of every (query block, key block) of one sequence, rows summing to 1.

    XAttention's estimate: for every stride x stride sub-block of the score matrix, sum its
    antidiagonal, ``A[a, b] = sum_s <q[a*S + s], k[b*S + S-1-s]>`` (heads averaged, times ``scale``,
    default ``D ** -0.5``); softmax each row of A over the key positions (causal: only ``b <= a``);
    sum the probabilities over each block's ``block/stride`` rows and columns; normalise per query
    block. Work O(L^2 H D / S), memory O(rows_per_chunk * L / S + Bq * Bk) — never L x L.
    (`block_select` never holds the whole [Bq, Bk]: it selects chunk by chunk.)

    Args:
        q, k: [L, H, D] or [L, D] (one sequence). block: B, a multiple of ``stride`` (S).
    """
    q, k, block, stride = _check_blocks(q, k, block, stride)
    L, H, D = q.shape
    scale = D ** -0.5 if scale is None else float(scale)
    n_blocks = -(-L // block)
    if n_blocks == 0:
        return torch.zeros(0, 0, dtype=torch.float64, device=q.device)
    pad = n_blocks * block - L
    qp = torch.cat([q, q.new_zeros(pad, H, D)])[None]
    kp = torch.cat([k, k.new_zeros(pad, H, D)])[None]
    lengths = torch.tensor([L], device=q.device)
    chunks = _stacked_block_mass(qp, kp, lengths, block, stride, causal, scale, rows_per_chunk)
    return torch.cat([mass[0] for _, mass in chunks])


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


def _sequence_lengths(lengths: int | Sequence[int] | Tensor | None, total: int, device: torch.device
                      ) -> tuple[Tensor, bool]:
    """([B] lengths, batched?) from ``lengths`` (None or an int: one sequence of all ``total`` tokens)."""
    if lengths is None or (not isinstance(lengths, Tensor | Sequence) and hasattr(lengths, "__index__")):
        if lengths is not None and int(lengths) != total:
            raise ValueError(f"block_select: lengths = {int(lengths)} but q has {total} tokens")
        return torch.tensor([total], dtype=torch.long, device=device), False
    if isinstance(lengths, Tensor):
        out = lengths.to(device=device, dtype=torch.long).reshape(-1)
    else:
        out = torch.tensor([int(x) for x in lengths], dtype=torch.long, device=device)
    if out.numel() and bool((out < 0).any()):
        raise ValueError(f"block_select: sequence lengths must be >= 0, got {out.tolist()[:8]}")
    if int(out.sum()) != total:
        raise ValueError(f"block_select: the lengths sum to {int(out.sum())} but q has {total} tokens; pass one "
                         "length per sequence laid end to end in q")
    return out, True


@torch.no_grad()
def block_select(q: Tensor, k: Tensor, block: int = 128, stride: int = 8, threshold: float = 0.9, *,
                 lengths: int | Sequence[int] | Tensor | None = None, causal: bool = False,
                 keep_diagonal: bool = False, scale: float | None = None, rows_per_chunk: int = 256) -> Graph:
    """XAttention pattern: token-level CSR of the selected (query block, key block)s of each sequence.

    Scores blocks with `antidiagonal_block_mass`, keeps per query block the fewest key blocks whose
    estimated mass reaches ``threshold`` (`select_blocks`), and expands them to tokens (with
    ``causal``, keys after the query are dropped). XAttention's defaults: block 128, stride 8 or 16,
    threshold 0.9.

    A batch (``lengths``, as for the static builders: sequences laid end to end in q and k) is
    scored per sequence — blocks start at each sequence's first token and never cross into another
    sequence, so a sequence's pattern does not depend on the rest of the batch. Sequences with the
    same number of blocks are stacked and scored by one batched matmul per chunk of query blocks
    (a Python loop over the distinct block counts and chunks, none over sequences or blocks).

    Args:
        q, k: [T, H, D] or [T, D]. lengths: None (one sequence, no ``ptr``) or [B] lengths summing to
            T (the result is a batch with ``ptr``). rows_per_chunk: stride groups scored at once.
    Returns:
        `Graph` [T, T], sorted CSR, O(E) memory (plus O(rows_per_chunk * L / S) while scoring).
    """
    q, k, block, stride = _check_blocks(q, k, block, stride)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"block_select: threshold = {threshold} must be in (0, 1]")
    total, H, D = q.shape
    device = q.device
    seq_len, batched = _sequence_lengths(lengths, total, device)
    seq_start = torch.cumsum(seq_len, 0) - seq_len
    scale = D ** -0.5 if scale is None else float(scale)
    seq_blocks = -(-seq_len // block)                                  # [B] blocks of each sequence
    first_block = torch.cumsum(seq_blocks, 0) - seq_blocks            # [B] global id of its block 0
    query_blocks, key_blocks = [], []
    for n_blocks in torch.unique(seq_blocks[seq_blocks > 0]).tolist():
        seqs = (seq_blocks == n_blocks).nonzero().squeeze(1)          # stacked: same padded length
        local = torch.arange(n_blocks * block, device=device)
        real = local[None, :] < seq_len[seqs][:, None]                # [Bg, Lp]
        token = (seq_start[seqs][:, None] + local[None, :]).clamp_max(max(total - 1, 0))
        mask = real[:, :, None, None].to(q.dtype)
        qp, kp = q[token] * mask, k[token] * mask                      # [Bg, Lp, H, D], zero padding
        for b0, mass in _stacked_block_mass(qp, kp, seq_len[seqs], block, stride, causal, scale, rows_per_chunk):
            count, nb, _ = mass.shape
            keep = select_blocks(mass.reshape(count * nb, n_blocks), threshold).view(count, nb, n_blocks)
            if keep_diagonal:
                rows = torch.arange(nb, device=device)
                keep[:, rows, b0 + rows] = True
            s, i, j = keep.nonzero(as_tuple=True)
            query_blocks.append(first_block[seqs][s] + b0 + i)
            key_blocks.append(first_block[seqs][s] + j)
    if not query_blocks:
        return csr_from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), total, total,
                              ptr=torch.cat([seq_len.new_zeros(1), torch.cumsum(seq_len, 0)]) if batched else None,
                              device=device)
    return _expand_blocks(torch.cat(query_blocks), torch.cat(key_blocks), seq_len, seq_blocks, block, causal,
                          batched)


def _expand_blocks(query_block: Tensor, key_block: Tensor, seq_len: Tensor, seq_blocks: Tensor, block: int,
                   causal: bool, batched: bool) -> Graph:
    """Token-level sorted CSR of kept (query block, key block) pairs given by global block ids.

    Every (token row, kept key block) is a run of consecutive keys; runs are built per row in
    ascending key order (clipped at the row's own position when ``causal``), so the CSR comes out
    sorted without a sort over the E entries, and the only E-sized work is writing the keys."""
    device = query_block.device
    total_blocks, total = int(seq_blocks.sum()), int(seq_len.sum())
    order = torch.sort(query_block * total_blocks + key_block).indices     # kept block pairs only (<< E)
    query_block, key_block = query_block[order], key_block[order]
    seq_of_block = torch.repeat_interleave(torch.arange(seq_len.numel(), device=device), seq_blocks)
    local_block = torch.arange(total_blocks, device=device) - (torch.cumsum(seq_blocks, 0) - seq_blocks)[seq_of_block]
    block_first_token = (torch.cumsum(seq_len, 0) - seq_len)[seq_of_block] + local_block * block   # [NB]
    block_size = torch.clamp(seq_len[seq_of_block] - local_block * block, max=block)      # the last may be short
    kept_per_block = torch.bincount(query_block, minlength=total_blocks)
    block_ptr = torch.cumsum(kept_per_block, 0) - kept_per_block
    token_block = torch.repeat_interleave(torch.arange(total_blocks, device=device), block_size)  # [T]
    reps = kept_per_block[token_block]
    run_row = torch.arange(total, device=device).repeat_interleave(reps)                  # [runs]
    run_block = key_block[torch.repeat_interleave(block_ptr[token_block], reps) + segment_arange(reps)]
    run_first = block_first_token[run_block]
    run_len = block_size[run_block]
    if causal:                               # same sequence, so global order is local order
        run_len = (run_row - run_first + 1).clamp(min=0).minimum(run_len)
    indptr = torch.zeros(total + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(torch.zeros(total, dtype=torch.long, device=device).index_add_(0, run_row, run_len), 0)
    run_start = torch.cumsum(run_len, 0) - run_len
    num_entries = int(indptr[-1])
    cols = torch.repeat_interleave(run_first - run_start, run_len, output_size=num_entries)
    cols.add_(torch.arange(num_entries, device=device))          # key = run_first + offset in the run
    ptr = torch.cat([seq_len.new_zeros(1), torch.cumsum(seq_len, 0)]) if batched else None
    return finish(indptr, cols, total, ptr, None)
