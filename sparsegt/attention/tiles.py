"""The `tiles` backend of `sparse_attention`: dense matrix products over the tiles that cover a pattern.

For patterns whose edges cluster into dense blocks (windows, bands, full attention per graph of a
batch, block diagonals), gathering one key row per edge wastes the machine: the CPU kernel waits on
memory. This backend covers the pattern with tiles (`tile_plan`), gathers each tile's queries and its
column blocks of keys/values once, and computes the tile's scores with a batched matrix product; the
entries that are not edges are masked to ``-inf``. Forward: ``out`` and ``lse`` only. Backward:
flash-style, the probabilities are recomputed from ``lse`` tile by tile, so nothing of size
[E, H] or larger is kept between the passes.

Work is done in chunks of tiles of one width, at most ``tile_plan.CHUNK_ENTRIES`` scores each, so extra memory
is bounded by the chunk, not by the pattern. Bias and dropout are supported (the counter-based mask of
`dropout.keep_mask`, bit for bit, through a per-edge table); a ``gate`` is not (it changes q.k per
edge, which is not a matrix product) and duplicate edges cannot share one dense entry: both raise
ValueError here, and ``backend="auto"`` sends such calls to the CPU kernel.

Pure PyTorch after the plan, so it runs on any device torch runs on; it is tested on CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..graph import Graph
from . import cpu_primitives as prim
from .dropout import keep_mask
from .tile_plan import TileChunk, TilePlan, tile_plan

EXP_FLOOR = -80.0

__all__ = ["tiles_attention"]



def _heads_first(t: Tensor) -> Tensor:
    """[N, H, X] -> contiguous [H, N, X]: a chunk's rows are then one index_select and one matrix batch."""
    return t.detach().transpose(0, 1).contiguous()


def _gather_rows(chunk: TileChunk, t: Tensor) -> Tensor:
    """[H, Nq, X] -> [H, c, R, X]."""
    return t.index_select(1, chunk.rows).view(t.shape[0], *chunk.shape[:2], t.shape[2])


def _gather_keys(chunk: TileChunk, t: Tensor) -> Tensor:
    """[H, Nk, X] -> [H, c, W, X]."""
    return t.index_select(1, chunk.key_ids).view(t.shape[0], chunk.shape[0], chunk.shape[2], t.shape[2])


def _scatter_rows(chunk: TileChunk, target: Tensor, value: Tensor) -> None:
    """Write [H, c, R, X] into the rows of ``target`` [H, Nq, X] (surplus rows are dropped)."""
    flat = value.reshape(value.shape[0], -1, value.shape[-1])
    if chunk.all_in_range:
        target.index_copy_(1, chunk.rows, flat)
    else:
        target.index_copy_(1, chunk.rows[chunk.in_range], flat[:, chunk.in_range])


def _scores(chunk: TileChunk, q: Tensor, k: Tensor, bias: Tensor | None, buffer: Tensor) -> Tensor:
    """[H, c, R, W] in ``buffer``: q.k (q arrives scaled) + bias ([H, E]); entries without an edge hold
    whatever the product gave (mask them)."""
    heads = q.shape[0]
    s = buffer[:heads * chunk.edge_map.numel()].view(heads, *chunk.shape)
    torch.matmul(_gather_rows(chunk, q), _gather_keys(chunk, k).transpose(-1, -2), out=s)
    if bias is not None:
        s.add_(bias[:, chunk.edge_map])  # -1 (no edge) reads the last edge: masked by the caller
    return s


def _exp_masked(s: Tensor, shift: Tensor, edge: Tensor) -> Tensor:
    """``exp(s - shift)`` at the edges and 0 elsewhere, in place (``shift`` bounds every edge's score).

    The exponent is clamped to [EXP_FLOOR, 0] first. The ceiling keeps the entries without an edge
    finite, whatever their score. The floor: an exponent below ~-87 gives a float32 denormal, and exp
    (and every op on denormals) runs 20-80x slower on x86; it changes a weight by at most
    exp(EXP_FLOOR) ~ 2e-35."""
    return s.sub_(shift).clamp_(EXP_FLOOR, 0.0).exp_().mul_(edge)


class _Dropout:
    """Dropout factors of a chunk's entries, [H, c, R, W]: ``1/(1-p)`` or 0 (the bits of `keep_mask`)."""

    def __init__(self, p: float, seed: int, num_edges: int, num_heads: int, dtype, device) -> None:
        self.scale = 1.0 / (1.0 - p)
        if device.type == "cpu":  # numba: the [E, H] keep bits, then the factors in place, per chunk
            self.keep = prim.keep_table(num_edges, num_heads, seed & prim.MASK32, (seed >> 32) & prim.MASK32,
                                        int(p * 4294967296.0))
        else:  # elsewhere: a [H, E] table of factors, gathered per chunk
            self.table = keep_mask(seed, num_edges, num_heads, p, device).t().to(dtype) * self.scale

    def factors(self, chunk: TileChunk, out: Tensor) -> Tensor:
        if out.device.type != "cpu":
            return out.copy_(self.table[:, chunk.edge_map])
        np_dtype = np.float32 if out.dtype == torch.float32 else np.float64
        prim.dense_keep_factors(chunk.edge_map.numpy(), self.keep, np_dtype(self.scale), out.numpy())
        return out


def _safe(t: Tensor) -> Tensor:
    """-inf (rows without edges) replaced by 0, so ``exp(s - t)`` is 0 there, not NaN."""
    return torch.where(torch.isinf(t), torch.zeros_like(t), t)


class _TilesAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, pattern, plan, scale, dropout_p, dropout_seed):
        num_rows, heads, vdim = q.shape[0], q.shape[1], v.shape[2]
        qh, kh, vh = _heads_first(q * scale), _heads_first(k), _heads_first(v)
        bias_h = None if bias is None else bias.detach().t()
        dropout = None
        if dropout_p > 0.0:
            dropout = _Dropout(dropout_p, dropout_seed, pattern.num_edges, heads, q.dtype, q.device)
        out = torch.zeros((heads, num_rows, vdim), dtype=q.dtype, device=q.device)
        lse = torch.full((heads, num_rows, 1), -torch.inf, dtype=q.dtype, device=q.device)
        chunks = plan.chunks(heads)
        size = max((heads * c.edge_map.numel() for c in chunks), default=0)
        buffer = torch.empty(size, dtype=q.dtype, device=q.device)
        factors = torch.empty(size if dropout else 0, dtype=q.dtype, device=q.device)
        for chunk in chunks:
            no_edge, edge = chunk.masks(q.dtype)
            s = _scores(chunk, qh, kh, bias_h, buffer).add_(no_edge)
            row_max = _safe(s.amax(-1, keepdim=True))
            p = _exp_masked(s, row_max, edge)  # unnormalised
            row_sum = p.sum(-1, keepdim=True)
            if dropout:
                p.mul_(dropout.factors(chunk, factors[:p.numel()].view(p.shape)))
            tile_out = torch.matmul(p, _gather_keys(chunk, vh))
            _scatter_rows(chunk, out, tile_out.div_(torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))))
            _scatter_rows(chunk, lse, row_max.add_(row_sum.log_()))
        ctx.save_for_backward(qh, kh, vh, bias, out, lse)
        ctx.pattern, ctx.plan, ctx.scale, ctx.dropout = pattern, plan, scale, dropout
        return out.transpose(0, 1), lse[..., 0].t()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        qh, kh, vh, bias, out, lse = ctx.saved_tensors
        pattern, plan, scale, dropout = ctx.pattern, ctx.plan, ctx.scale, ctx.dropout
        heads = qh.shape[0]
        dout = torch.zeros_like(out) if dout is None else _heads_first(dout)
        delta = (dout * out).sum(-1, keepdim=True)  # [H, Nq, 1]
        if dlse is not None:
            delta = delta - dlse.t()[..., None]
        bias_h = None if bias is None else bias.detach().t()
        dq, dk, dv = torch.zeros_like(qh), torch.zeros_like(kh), torch.zeros_like(vh)
        need_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros((heads, pattern.num_edges + 1), dtype=qh.dtype, device=qh.device) if need_dbias else None
        chunks = plan.chunks(heads)
        size = max((heads * c.edge_map.numel() for c in chunks), default=0)
        buffer, dp_buffer = (torch.empty(size, dtype=qh.dtype, device=qh.device) for _ in range(2))
        factors = torch.empty(size if dropout else 0, dtype=qh.dtype, device=qh.device)
        safe_lse = _safe(lse)
        for chunk in chunks:
            p = _exp_masked(_scores(chunk, qh, kh, bias_h, buffer), _gather_rows(chunk, safe_lse),
                            chunk.masks(qh.dtype)[1])
            tile_dout, tile_k, tile_v = _gather_rows(chunk, dout), _gather_keys(chunk, kh), _gather_keys(chunk, vh)
            dp = dp_buffer[:p.numel()].view(p.shape)
            torch.matmul(tile_dout, tile_v.transpose(-1, -2), out=dp)
            if dropout:
                keep = dropout.factors(chunk, factors[:p.numel()].view(p.shape))
                dp.mul_(keep)
            ds = dp.sub_(_gather_rows(chunk, delta)).mul_(p)  # the score gradient (= dL/dbias)
            _scatter_rows(chunk, dq, torch.matmul(ds, tile_k).mul_(scale))
            count, width = chunk.shape[0], chunk.shape[2]
            dk.index_add_(1, chunk.key_ids,
                          torch.matmul(ds.transpose(-1, -2), _gather_rows(chunk, qh)).view(heads, count * width, -1))
            if need_dbias:  # entries without an edge carry ds = 0; they land in the spare last column
                dbias[:, chunk.edge_map.masked_fill(chunk.edge_map < 0, pattern.num_edges)] = ds
            if dropout:
                p.mul_(keep)
            dv.index_add_(1, chunk.key_ids,
                          torch.matmul(p.transpose(-1, -2), tile_dout).view(heads, count * width, -1))
        dbias = dbias[:, :-1].t() if need_dbias else None
        return dq.transpose(0, 1), dk.transpose(0, 1), dv.transpose(0, 1), dbias, None, None, None, None, None


def tiles_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None, scale: float,
    dropout_p: float, dropout_seed: int | None, *, plan: TilePlan | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention by dense tiles. q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H].

    Returns ``out`` [Nq, H, Dv] (zeros on rows without edges) and ``lse`` [Nq, H] (``-inf`` there).
    ``plan`` defaults to `tile_plan(pattern)` (cached on the pattern).
    """
    if gate is not None:
        raise ValueError("backend='tiles' does not support gate (a per-edge factor inside q.k); "
                         "use backend='cpu' or 'auto'")
    if not q.is_floating_point():
        raise ValueError(f"backend='tiles' needs floating-point inputs, got {q.dtype}")
    plan = tile_plan(pattern) if plan is None else plan
    if plan.duplicates:
        raise ValueError(f"backend='tiles' cannot hold duplicate edges in a dense tile; the pattern has "
                         f"{plan.duplicates} duplicate (row, column) entries: use backend='cpu' or 'auto'")
    return _TilesAttention.apply(q, k, v, bias, pattern, plan, float(scale), float(dropout_p), dropout_seed)
