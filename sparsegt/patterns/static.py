"""Static patterns for sequences and images: windows, dilation, strides, global tokens, random links,
BigBird, blocks, causal triangles, 2-D neighbourhoods and MobileViG's SVGA.

Sequences: the first argument ``n`` of every sequence builder is either an ``int`` (one sequence of
``n`` tokens; the result has no ``ptr``) or a list / 1-D tensor of lengths (a batch of sequences
laid end to end; the result is a batch with ``ptr``/``col_ptr``/``edge_ptr`` and never links two
sequences). Positions below are *within* a sequence: ``i`` is the query, ``j`` the key, ``L`` the
sequence length.

Every builder is vectorised and O(E) in memory (it computes each row's degree and writes its keys
directly, never an L x L mask); results are sorted CSR without duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..attention.dropout import MASK32, hash32_torch
from ..graph import Graph
from ._csr import check_int, csr_from_pairs, finish, segment_arange

__all__ = ["window", "dilated", "strided", "global_tokens", "random", "block_diagonal",
           "causal_sequence", "grid2d"]

Lengths = int | Sequence[int] | Tensor


class _Tokens:
    """Per-token sequence bookkeeping for ``n`` (an int or a batch of lengths)."""

    def __init__(self, n: Lengths, device: torch.device | str | None, name: str) -> None:
        if isinstance(n, Tensor):
            lengths = n.to(device=device, dtype=torch.long).reshape(-1)
            self.batched = True
        elif isinstance(n, Sequence) and not isinstance(n, str):
            lengths = torch.tensor([int(x) for x in n], dtype=torch.long, device=device)
            self.batched = True
        else:
            lengths = torch.tensor([check_int(f"{name}: n", n, 0)], dtype=torch.long, device=device)
            self.batched = False
        if lengths.numel() and bool((lengths < 0).any()):
            raise ValueError(f"{name}: sequence lengths must be >= 0, got {lengths.tolist()[:8]}")
        self.lengths = lengths
        self.ptr = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
        self.total = int(self.ptr[-1])
        self.seq = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
        self.start = self.ptr[self.seq]                              # [T] first token of my sequence
        self.local = torch.arange(self.total, device=lengths.device) - self.start   # [T] i
        self.length = lengths[self.seq]                              # [T] L

    def runs(self, first: Tensor, degree: Tensor, step: Tensor | int = 1) -> Graph:
        """Row t has keys ``start + first[t] + step * (0..degree[t]-1)`` (local ``first``)."""
        degree = degree.clamp_min(0)
        indptr = torch.zeros(self.total + 1, dtype=torch.long, device=self.lengths.device)
        indptr[1:] = torch.cumsum(degree, 0)
        offsets = segment_arange(degree)
        if not isinstance(step, int):
            offsets = offsets * torch.repeat_interleave(step, degree)
        elif step != 1:
            offsets = offsets * step
        indices = torch.repeat_interleave(self.start + first, degree) + offsets
        return self.finish(indptr, indices)

    def pairs(self, token_row: Tensor, local_col: Tensor) -> Graph:
        """Entries (token_row, key local_col in the query's sequence), deduplicated."""
        seq_start = self.start[token_row]
        return csr_from_pairs(token_row, seq_start + local_col, self.total, self.total, ptr=self.batch_ptr,
                              device=self.lengths.device)

    @property
    def batch_ptr(self) -> Tensor | None:
        return self.ptr if self.batched else None

    def finish(self, indptr: Tensor, indices: Tensor) -> Graph:
        return finish(indptr, indices, self.total, self.batch_ptr, None)


def dilated(n: Lengths, w: int, d: int, *, causal: bool = False, device=None) -> Graph:
    """Dilated sliding window (Longformer): keys ``j = i + d * m`` for ``|m| <= w`` inside the sequence
    (``-w <= m <= 0`` when ``causal``). ``d = 1`` is `window`. Up to ``2w + 1`` keys a row."""
    w = check_int("dilated: w", w, 0)
    d = check_int("dilated: d", d, 1)
    t = _Tokens(n, device, "dilated")
    m_lo = torch.maximum(torch.full_like(t.local, -w), -torch.div(t.local, d, rounding_mode="floor"))
    m_hi = torch.minimum(torch.full_like(t.local, 0 if causal else w),
                         torch.div(t.length - 1 - t.local, d, rounding_mode="floor"))
    return t.runs(t.local + d * m_lo, m_hi - m_lo + 1, d)


def window(n: Lengths, w: int, *, causal: bool = False, device=None) -> Graph:
    """Sliding window: keys ``|i - j| <= w`` (``i - w <= j <= i`` when ``causal``), ``2w + 1`` a row."""
    return dilated(n, w, 1, causal=causal, device=device)


def strided(n: Lengths, stride: int, *, causal: bool = False, device=None) -> Graph:
    """Strided (Sparse Transformer's second head): keys ``j`` with ``(i - j) % stride == 0`` (and
    ``j <= i`` when ``causal``). Sparse Transformer's strided attention is
    ``union(window(n, stride - 1, causal=True), strided(n, stride, causal=True))``.
    About ``L / stride`` keys a row: O(L^2 / stride) entries in all, as the pattern demands."""
    stride = check_int("strided: stride", stride, 1)
    t = _Tokens(n, device, "strided")
    first = torch.remainder(t.local, stride)
    last = t.local if causal else t.length - 1
    degree = torch.div(last - first, stride, rounding_mode="floor") + 1
    return t.runs(first, degree, stride)


def causal_sequence(n: Lengths, *, device=None) -> Graph:
    """Full causal attention: keys ``0 <= j <= i`` (``L(L+1)/2`` entries a sequence)."""
    t = _Tokens(n, device, "causal_sequence")
    return t.runs(torch.zeros_like(t.local), t.local + 1)


def global_tokens(n: Lengths, g: int, *, device=None) -> Graph:
    """The first ``g`` tokens of each sequence are global: they attend to every token of their
    sequence and every token attends to them (rows ``i < g``: all keys; other rows: keys ``j < g``)."""
    g = check_int("global_tokens: g", g, 0)
    t = _Tokens(n, device, "global_tokens")
    degree = torch.where(t.local < g, t.length, torch.clamp(t.length, max=g))
    return t.runs(torch.zeros_like(t.local), degree)


def block_diagonal(n: Lengths, b: int, *, device=None) -> Graph:
    """Consecutive blocks of ``b`` tokens (the last one may be shorter) with full attention inside."""
    b = check_int("block_diagonal: b", b, 1)
    t = _Tokens(n, device, "block_diagonal")
    first = torch.div(t.local, b, rounding_mode="floor") * b
    return t.runs(first, torch.minimum(first + b, t.length) - first)


def random(n: Lengths, r: int, seed: int = 0, *, causal: bool = False, device=None) -> Graph:
    """``r`` uniformly random keys per query within its sequence (``j <= i`` when ``causal``), drawn
    with replacement, duplicates removed (so up to ``r`` keys a row).

    The draw is a counter-based hash of ``(seed, sequence length, i, draw index)``: the same on
    every device and independent of the other sequences of a batch."""
    r = check_int("random: r", r, 0)
    t = _Tokens(n, device, "random")
    if r == 0 or t.total == 0:
        return t.finish(torch.zeros(t.total + 1, dtype=torch.long, device=t.lengths.device),
                        torch.zeros(0, dtype=torch.long, device=t.lengths.device))
    draw = torch.arange(r, device=t.local.device)
    seed_high = ((seed >> 32) & MASK32) * 0x45D9F3B
    salt = hash32_torch(torch.tensor(seed & MASK32, device=t.local.device) + seed_high)
    h = hash32_torch(hash32_torch(t.length * 0x9E3779B1 + salt) ^ t.local)
    h = hash32_torch(h[:, None] + draw[None, :] * 0x27D4EB2F)       # [T, r] 32-bit
    span = (t.local + 1 if causal else t.length)[:, None]
    local_col = torch.div(h * span, MASK32 + 1, rounding_mode="floor")   # uniform in [0, span)
    token_row = torch.arange(t.total, device=t.local.device).repeat_interleave(r)
    return t.pairs(token_row, local_col.reshape(-1))


def grid2d(h: int, w: int, radius: int = 1, kind: str = "square", svga_k: int = 2, *,
           num_images: int = 1, device=None) -> Graph:
    """Neighbourhoods on an ``h x w`` image (token ``t = row * w + col``, row-major).

    kind:
        ``"square"``: keys within Chebyshev distance ``radius`` (``radius=1``: 3x3 patch).
        ``"cross"``: keys within Manhattan distance ``radius``.
        ``"svga"``: MobileViG's sparse vision graph: every ``svga_k``-th token along the query's row
            and column (offsets ``m * svga_k`` for every m), the query itself included.
    ``num_images`` images of the same size are batched (``ptr`` set, images never linked).
    """
    h, w = check_int("grid2d: h", h, 0), check_int("grid2d: w", w, 0)
    radius = check_int("grid2d: radius", radius, 0)
    num_images = check_int("grid2d: num_images", num_images, 1)
    if kind in ("square", "cross"):
        span = torch.arange(-radius, radius + 1)
        dr, dc = torch.meshgrid(span, span, indexing="ij")
        dr, dc = dr.reshape(-1), dc.reshape(-1)
        if kind == "cross":
            inside = dr.abs() + dc.abs() <= radius
            dr, dc = dr[inside], dc[inside]
    elif kind == "svga":
        k = check_int("grid2d: svga_k", svga_k, 1)
        reach_w, reach_h = max(w - 1, 0) // k, max(h - 1, 0) // k
        along_row = torch.arange(-reach_w, reach_w + 1) * k
        along_col = torch.arange(-reach_h, reach_h + 1) * k
        dr = torch.cat([along_col, torch.zeros_like(along_row)])
        dc = torch.cat([torch.zeros_like(along_col), along_row])
    else:
        raise ValueError(f"grid2d: kind must be 'square', 'cross' or 'svga', got {kind!r}")
    dr, dc = dr.to(device), dc.to(device)
    pixels = h * w
    token = torch.arange(pixels * num_images, device=device)
    image = torch.div(token, max(pixels, 1), rounding_mode="floor")
    pixel = torch.remainder(token, max(pixels, 1))
    r0, c0 = torch.div(pixel, max(w, 1), rounding_mode="floor"), torch.remainder(pixel, max(w, 1))
    rr, cc = r0[:, None] + dr[None, :], c0[:, None] + dc[None, :]     # [T, |offsets|]
    valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    key = image[:, None] * pixels + rr * w + cc
    row = token[:, None].expand_as(key)
    ptr = torch.arange(num_images + 1, device=device) * pixels if num_images > 1 else None
    return csr_from_pairs(row[valid], key[valid], pixels * num_images, pixels * num_images, ptr=ptr,
                          device=token.device)
