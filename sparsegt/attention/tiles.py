"""The `tiles` backend of `sparse_attention`: dense matrix products over the tiles that cover a pattern.

For patterns whose edges cluster into dense blocks (windows, bands, full attention per graph of a
batch, block diagonals), gathering one key row per edge wastes the machine: the CPU kernel waits on
memory. This backend covers the pattern with tiles (`tile_plan`: 128 query rows x blocks of 64 keys),
gathers each tile's queries and its key/value blocks once, and computes whole tiles; the entries that
are not edges are masked. Work runs in chunks of tiles of one width (at most
``tile_plan.CHUNK_ENTRIES`` scores each) through buffers reused across chunks, so extra memory is
bounded by the chunk, not by the pattern, and nothing of size [E, H] or larger is kept for the backward.

Two ways to compute a chunk:
- without bias and dropout (and with D == Dv): torch's fused CPU flash-attention kernels, the ones
  dense SDPA runs, with an additive 0 / -inf mask; the backward is theirs too unless the returned lse
  gets a gradient;
- otherwise: batched matrix products with the softmax in between, a flash-style backward that
  recomputes the probabilities from each row's maximum and sum (`row_stats`: exact at any constant offset of
  the scores), a bias gathered per entry, and the counter-based dropout mask of `dropout.keep_mask` bit for
  bit.

The fused backward rebuilds the weights from the float32 lse, which is exact enough only while the lse is
small: row tiles with a larger lse, a NaN row, or an lse gradient take the second way, recomputing their
rows' maximum and sum from the scores (one more pass over the tile).

A ``gate`` (a per-edge factor inside q.k, not a matrix product) and duplicate edges (two edges cannot
share one dense entry) raise ValueError here; ``backend="auto"`` sends such calls to the CPU kernel.
The computation is torch (plus numba for the plan and the dropout factors on CPU); it is tested on CPU
only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..graph import Graph
from . import numba_runtime as rt
from .backend import AttentionInputs, Backend, Support, unsupported_error
from .dropout import keep_mask
from .row_stats import RowStats
from .tile_plan import TileChunk, TilePlan, tile_fill, tile_plan

EXP_FLOOR = -80.0
FLASH_MAX_LSE = 16.0  # rows whose |lse| is larger do not take the fused backward (`_flash_backward_tiles`)
# torch's fused CPU flash-attention kernels (the ones dense SDPA runs), with an additive mask: used per
# chunk when there is no bias and no dropout (they cannot take either in our form) and D == Dv
_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)

__all__ = ["tiles_attention", "TILES"]

# auto uses dense tiles when at least this fraction of their entries are edges and rows are long: on short
# rows (small graphs) the fused kernel's keys stay in cache and it beats the tiles' many passes over memory
AUTO_MIN_FILL = 0.25
AUTO_MIN_MEAN_DEGREE = 128
MAX_EDGES = 2**31  # the edge map is int32


def _heads_first(t: Tensor, multiple: int) -> Tensor:
    """[N, H, X] -> contiguous [H, N', X], N' = N rounded up to ``multiple`` (zero rows appended), so that
    a row tile (or a column block) is one contiguous [multiple * X] run: gathers copy whole tiles."""
    padded = t.new_empty((t.shape[1], -(-t.shape[0] // multiple) * multiple, t.shape[2]))
    padded[:, :t.shape[0]] = t.detach().transpose(0, 1)
    padded[:, t.shape[0]:] = 0
    return padded


def _tile_runs(t: Tensor, run: int) -> Tensor:
    """[H, N', X] -> [H, N'/run, run*X]: one row per tile (or block)."""
    return t.view(t.shape[0], t.shape[1] // run, run * t.shape[2])


class _Workspace:
    """Buffers reused by every chunk of a call (a fresh multi-MiB tensor per chunk costs its page faults)."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device, self.buffers = dtype, device, {}

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        size = math.prod(shape)
        if name not in self.buffers or self.buffers[name].numel() < size:
            self.buffers[name] = torch.empty(size, dtype=self.dtype, device=self.device)
        return self.buffers[name][:size].view(shape)


def _gather_rows(chunk: TileChunk, t: Tensor, tile_rows: int, work: _Workspace, name: str) -> Tensor:
    """[H, Nq', X] -> [H, c, R, X]: the chunk's row tiles."""
    runs = _tile_runs(t, tile_rows)
    out = work.take(name, (t.shape[0], chunk.shape[0], runs.shape[2]))
    torch.index_select(runs, 1, chunk.tiles, out=out)
    return out.view(t.shape[0], chunk.shape[0], tile_rows, t.shape[2])


def _gather_keys(chunk: TileChunk, t: Tensor, block_cols: int, work: _Workspace, name: str) -> Tensor:
    """[H, Nk', X] -> [H, c, W, X]: the chunk's column blocks, tile by tile."""
    runs = _tile_runs(t, block_cols)
    out = work.take(name, (t.shape[0], chunk.blocks.shape[0], runs.shape[2]))
    torch.index_select(runs, 1, chunk.blocks, out=out)
    return out.view(t.shape[0], chunk.shape[0], chunk.shape[2], t.shape[2])


def _scatter_rows(chunk: TileChunk, target: Tensor, value: Tensor, tile_rows: int) -> None:
    """Write [H, c, R, X] into the chunk's row tiles of ``target`` [H, Nq', X]."""
    _tile_runs(target, tile_rows).index_copy_(1, chunk.tiles, value.reshape(value.shape[0], chunk.shape[0], -1))


def _add_keys(chunk: TileChunk, target: Tensor, value: Tensor, block_cols: int) -> None:
    """Add [H, c, W, X] into the chunk's column blocks of ``target`` [H, Nk', X]."""
    blocks = value.reshape(value.shape[0], chunk.blocks.shape[0], -1)
    _tile_runs(target, block_cols).index_add_(1, chunk.blocks, blocks)


def _scores(chunk: TileChunk, q_tile: Tensor, k_tile: Tensor, bias: Tensor | None, work: _Workspace) -> Tensor:
    """[H, c, R, W]: q.k (q arrives scaled) + bias ([H, E]); entries without an edge hold whatever the
    product gave (mask them)."""
    s = work.take("scores", (q_tile.shape[0], *chunk.shape))
    torch.matmul(q_tile, k_tile.transpose(-1, -2), out=s)
    if bias is not None:
        s.add_(bias[:, chunk.edge_map])  # -1 (no edge) reads the last edge: masked by the caller
    return s


def _exp_masked(s: Tensor, shift: Tensor, edge: Tensor) -> Tensor:
    """``exp(s - shift)`` at the edges and 0 elsewhere, in place (``shift`` bounds every edge's score).

    The exponent is capped at 0 first, which keeps the entries without an edge finite whatever their score.
    Exponents below EXP_FLOOR give exactly 0: an exponent below ~-87 gives a float32 denormal, and exp (and
    every op on denormals) runs 20-80x slower on x86; the weight lost is at most exp(EXP_FLOOR) ~ 2e-35.
    (Raising them to the floor instead would give a row whose every score is -inf a uniform weight: the mean
    of v instead of zeros.)"""
    s.sub_(shift).clamp_(max=0.0)
    return s.masked_fill_(s < EXP_FLOOR, -torch.inf).exp_().mul_(edge)


class _Dropout:
    """Dropout factors of a chunk's entries, [H, c, R, W]: ``1/(1-p)`` or 0 (the bits of `keep_mask`)."""

    def __init__(self, p: float, seed: int, num_edges: int, num_heads: int, dtype, device) -> None:
        self.scale = 1.0 / (1.0 - p)
        if device.type == "cpu":  # numba: the [H, E] keep bits, then the factors in place, per chunk
            self.keep = rt.keep_table(num_edges, num_heads, seed & rt.MASK32, (seed >> 32) & rt.MASK32,
                                        int(p * 4294967296.0))
        else:  # elsewhere: a [H, E] table of factors, gathered per chunk
            self.table = keep_mask(seed, num_edges, num_heads, p, device).t().to(dtype) * self.scale

    def factors(self, chunk: TileChunk, out: Tensor) -> Tensor:
        if out.device.type != "cpu":
            return out.copy_(self.table[:, chunk.edge_map])
        np_dtype = rt.numpy_float(out.dtype)
        rt.dense_keep_factors(chunk.edge_map.numpy(), self.keep, np_dtype(self.scale), out.numpy())
        return out


def _fused(q: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float) -> bool:
    return (_FLASH is not None and _FLASH_BACKWARD is not None and q.device.type == "cpu" and bias is None
            and dropout_p == 0.0 and q.shape[2] == v.shape[2])


def _safe(t: Tensor) -> Tensor:
    """-inf (rows without edges) replaced by 0, so ``exp(s - t)`` is 0 there, not NaN."""
    return torch.where(torch.isinf(t), torch.zeros_like(t), t)


def _bias_by_head(bias: Tensor | None) -> Tensor | None:
    """[E, H] -> [H, E + 1], the last column 0: the entries of a tile without an edge (edge map -1) read 0, not
    the last edge's bias (a NaN there would reach every row of the tile)."""
    if bias is None:
        return None
    return torch.cat([bias.detach().t(), bias.new_zeros((bias.shape[1], 1))], 1)


def _softmax(s: Tensor, edge: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Of scores ``s`` [H, c, R, W] that hold -inf where there is no edge: the unnormalised weights
    ``exp(s - row_max)`` (in ``s``'s memory) and the statistics of `row_stats`, ``row_max`` and ``row_sum``
    [H, c, R, 1]."""
    row_max = s.amax(-1, keepdim=True)
    p = _exp_masked(s, _safe(row_max), edge)
    return p, row_max, p.sum(-1, keepdim=True)


def _flash_backward_tiles(plan: TilePlan, lse: Tensor) -> Tensor:
    """[row tiles] bool: the tiles whose every row torch's fused backward can take exactly. That kernel
    rebuilds the weights as ``exp(s - lse)`` from the float32 lse, which costs about ``|lse| * 2**-24`` relative
    error: below 1e-6 while ``|lse| <= FLASH_MAX_LSE``; other tiles recompute their rows' maximum and sum."""
    exact = (lse.abs() <= FLASH_MAX_LSE) | torch.isneginf(lse)  # [H, Nq', 1]
    return exact.view(lse.shape[0], -1, plan.tile_rows).all(-1).all(0)


class _TilesAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, pattern, plan, scale, dropout_p, dropout_seed):
        num_rows, heads, vdim = q.shape[0], q.shape[1], v.shape[2]
        rows, cols = plan.tile_rows, plan.block_cols
        qh, kh, vh = _heads_first(q * scale, rows), _heads_first(k, cols), _heads_first(v, cols)
        bias_h = _bias_by_head(bias)
        dropout = None
        if dropout_p > 0.0:
            dropout = _Dropout(dropout_p, dropout_seed, pattern.num_edges, heads, q.dtype, q.device)
        out = torch.zeros((heads, qh.shape[1], vdim), dtype=q.dtype, device=q.device)
        fused = _fused(q, v, bias, dropout_p)
        # the fused kernels give the lse only; otherwise the row statistics of `row_stats` are kept
        stats_shape = (heads, qh.shape[1], 1)
        lse = torch.full(stats_shape, -torch.inf, dtype=q.dtype, device=q.device) if fused else None
        stats = None if fused else RowStats(torch.full(stats_shape, -torch.inf, dtype=q.dtype, device=q.device),
                                            torch.zeros(stats_shape, dtype=q.dtype, device=q.device))
        work = _Workspace(q.dtype, q.device)
        for chunk in plan.chunks(heads):
            no_edge = chunk.no_edge_mask(q.dtype)
            if fused:  # rows without an edge come back as 0 with lse 0: their lse is set to -inf
                tile_out, tile_lse = _FLASH(
                    _gather_rows(chunk, qh, rows, work, "q"), _gather_keys(chunk, kh, cols, work, "k"),
                    _gather_keys(chunk, vh, cols, work, "v"), 0.0, False, attn_mask=no_edge[None], scale=1.0)
                _scatter_rows(chunk, out, tile_out, rows)
                _scatter_rows(chunk, lse, tile_lse.masked_fill_(~chunk.has_edge(), -torch.inf)[..., None], rows)
                continue
            s = _scores(chunk, _gather_rows(chunk, qh, rows, work, "q"), _gather_keys(chunk, kh, cols, work, "k"),
                        bias_h, work).add_(no_edge)
            p, row_max, row_sum = _softmax(s, chunk.edge_weight(q.dtype))
            if dropout:
                p.mul_(dropout.factors(chunk, work.take("factors", p.shape)))
            tile_out = torch.matmul(p, _gather_keys(chunk, vh, cols, work, "v"), out=work.take("out", (
                heads, *chunk.shape[:2], vdim)))
            tile_out.div_(torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum)))
            _scatter_rows(chunk, out, tile_out, rows)
            _scatter_rows(chunk, stats.row_max, row_max, rows)
            _scatter_rows(chunk, stats.row_sum, row_sum, rows)
        ctx.save_for_backward(qh, kh, vh, bias, out, lse, *(stats or (None, None)))
        if not fused:
            lse = stats.lse()
        ctx.set_materialize_grads(False)  # an unused lse arrives as None: the fused backward can run
        ctx.pattern, ctx.plan, ctx.scale, ctx.dropout, ctx.fused = pattern, plan, scale, dropout, fused
        ctx.sizes = (num_rows, k.shape[0])
        return out[:, :num_rows].transpose(0, 1), lse[:, :num_rows, 0].t()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        qh, kh, vh, bias, out, lse, row_max, row_sum = ctx.saved_tensors
        pattern, plan, scale, dropout = ctx.pattern, ctx.plan, ctx.scale, ctx.dropout
        heads, (num_rows, num_keys) = qh.shape[0], ctx.sizes
        rows, cols = plan.tile_rows, plan.block_cols
        dtype = qh.dtype
        stats = None if row_max is None else RowStats(row_max, row_sum)
        dout = torch.zeros_like(out) if dout is None else _heads_first(dout, rows)
        # rows with a NaN score: NaN weight on those edges, none on the others (as the reference's gradient)
        nan_rows = torch.isnan(lse if stats is None else stats.row_max)  # [H, Nq', 1]
        has_nan = bool(nan_rows.any())
        flash_tiles = None  # the fused backward takes no lse gradient, and NaN rows would reach other rows
        if ctx.fused and dlse is None and not has_nan:
            flash_tiles = _flash_backward_tiles(plan, lse)
        if flash_tiles is None or not bool(flash_tiles.all()):
            delta = (dout * out).sum(-1, keepdim=True)  # [H, Nq', 1]
            if dlse is not None:
                delta[:, :num_rows] -= dlse.t()[..., None]
            delta.masked_fill_(nan_rows, 0.0)
        bias_h = _bias_by_head(bias)
        dq, dk, dv = torch.zeros_like(qh), torch.zeros_like(kh), torch.zeros_like(vh)
        need_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros((heads, pattern.num_edges + 1), dtype=dtype, device=qh.device) if need_dbias else None
        work = _Workspace(dtype, qh.device)
        safe_lse = None if flash_tiles is None else _safe(lse)
        for chunk in plan.chunks(heads):
            if flash_tiles is not None and bool(flash_tiles[chunk.tiles].all()):
                # with the forward's out and lse (0 on rows without an edge, as the kernel left them)
                tile_q, tile_k = _gather_rows(chunk, qh, rows, work, "q"), _gather_keys(chunk, kh, cols, work, "k")
                tile_dq, tile_dk, tile_dv = _FLASH_BACKWARD(
                    _gather_rows(chunk, dout, rows, work, "dout"), tile_q, tile_k,
                    _gather_keys(chunk, vh, cols, work, "v"), _gather_rows(chunk, out, rows, work, "out"),
                    _gather_rows(chunk, safe_lse, rows, work, "lse")[..., 0], 0.0, False,
                    attn_mask=chunk.no_edge_mask(dtype)[None], scale=1.0)
                _scatter_rows(chunk, dq, tile_dq.mul_(scale), rows)
                _add_keys(chunk, dk, tile_dk, cols)
                _add_keys(chunk, dv, tile_dv, cols)
                continue
            tile_q, tile_k = _gather_rows(chunk, qh, rows, work, "q"), _gather_keys(chunk, kh, cols, work, "k")
            tile_v, tile_dout = _gather_keys(chunk, vh, cols, work, "v"), _gather_rows(chunk, dout, rows, work, "dout")
            s = _scores(chunk, tile_q, tile_k, bias_h, work)
            nan_scores = torch.isnan(s) & (chunk.edge_map >= 0) if has_nan else None
            edge = chunk.edge_weight(dtype)
            if stats is None:  # the forward ran the fused kernels: recompute the rows' maximum and sum
                p, _, tile_sum = _softmax(s.add_(chunk.no_edge_mask(dtype)), edge)
            else:
                tile_sum = _gather_rows(chunk, stats.row_sum, rows, work, "row_sum")
                p = _exp_masked(s, _safe(_gather_rows(chunk, stats.row_max, rows, work, "row_max")), edge)
            p.div_(torch.where(tile_sum > 0, tile_sum, torch.ones_like(tile_sum)))
            if nan_scores is not None:
                p.masked_fill_(torch.isnan(tile_sum), 0.0).masked_fill_(nan_scores, torch.nan)
                tile_q.masked_fill_(torch.isnan(tile_q), 0.0)  # a NaN query reaches dk through ds only
            dp = torch.matmul(tile_dout, tile_v.transpose(-1, -2), out=work.take("dp", p.shape))
            if dropout:
                keep = dropout.factors(chunk, work.take("factors", p.shape))
                dp.mul_(keep)
            ds = dp.sub_(_gather_rows(chunk, delta, rows, work, "delta")).mul_(p)  # score gradient (= dL/dbias)
            _scatter_rows(chunk, dq, torch.matmul(ds, tile_k, out=work.take("dq", tile_q.shape)).mul_(scale), rows)
            _add_keys(chunk, dk, torch.matmul(ds.transpose(-1, -2), tile_q, out=work.take("dk", tile_k.shape)), cols)
            if need_dbias:  # entries without an edge carry ds = 0; they land in the spare last column
                dbias[:, chunk.edge_map.masked_fill(chunk.edge_map < 0, pattern.num_edges)] = ds
            if dropout:
                p.mul_(keep)
            _add_keys(chunk, dv, torch.matmul(p.transpose(-1, -2), tile_dout, out=work.take("dv", tile_v.shape)), cols)
        dbias = dbias[:, :-1].t() if need_dbias else None
        return (dq[:, :num_rows].transpose(0, 1), dk[:, :num_keys].transpose(0, 1), dv[:, :num_keys].transpose(0, 1),
                dbias, None, None, None, None, None)


def finite_keys_and_values(k: Tensor, v: Tensor) -> bool:
    """Whether k and v hold only finite numbers (tiles, whose products mix a tile's keys, need them)."""
    return bool(torch.isfinite(k).all()) and bool(torch.isfinite(v).all())


class TilesBackend(Backend):
    """``backend="tiles"``: float32/float64 tensors (torch ops; the plan is built with numba), no gate, no
    score clamp, no duplicate edges, k and v finite, fewer than 2**31 edges. Auto takes it on CPU (the only
    device it is tested on) for rows of at least ``AUTO_MIN_MEAN_DEGREE`` keys on average whose tiles are at
    least ``AUTO_MIN_FILL`` edges."""

    name = "tiles"
    supports = Support(dtypes=rt.NUMBA_DTYPES, gate=False, score_clamp=False, pattern="no duplicate edges",
                       finite_keys_and_values=True)

    def unsupported_reasons(self, inputs: AttentionInputs, *, auto: bool = False,
                            plan: TilePlan | None = None) -> list[str]:
        """As `Backend.unsupported_reasons`; ``plan``: the tile plan to check (default `tile_plan(pattern)`)."""
        reasons = self.supports.reasons(inputs)
        if inputs.pattern.num_edges >= MAX_EDGES:
            reasons.append(f"addresses edges with int32; this pattern has {inputs.pattern.num_edges}")
        if not reasons and auto:
            reasons = self.auto_reasons(inputs)
        if not reasons:
            reasons = self.data_reasons(inputs, plan)
        return reasons

    def auto_reasons(self, inputs: AttentionInputs) -> list[str]:
        if inputs.device.type != "cpu":
            return [f"auto takes it on CPU only (where it is tested), not on {inputs.device}"]
        if inputs.mean_degree < AUTO_MIN_MEAN_DEGREE:
            return [f"auto takes it for at least {AUTO_MIN_MEAN_DEGREE} keys per row on average, got "
                    f"{inputs.mean_degree:.3g}"]
        fill = tile_fill(inputs.pattern)
        if fill < AUTO_MIN_FILL:
            return [f"auto takes it when edges fill at least {AUTO_MIN_FILL} of the tiles, got {fill:.3g}"]
        return []

    def data_reasons(self, inputs: AttentionInputs, plan: TilePlan | None = None) -> list[str]:
        plan = tile_plan(inputs.pattern) if plan is None else plan
        if plan.duplicates:
            return [f"cannot hold duplicate edges in a dense tile; the pattern has {plan.duplicates} duplicate "
                    "(row, column) entries"]
        if not finite_keys_and_values(inputs.k, inputs.v):
            return ["multiplies whole tiles, so a NaN or inf in k or v would reach rows that do not attend to it "
                    "(0 * NaN = NaN); k or v holds one"]
        return []

    def autograd_call(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None, *,
                      plan: TilePlan | None = None):
        plan = tile_plan(inputs.pattern) if plan is None else plan
        return _TilesAttention, (inputs.q, inputs.k, inputs.v, inputs.bias, inputs.pattern, plan, float(scale),
                                 float(inputs.dropout_p), dropout_seed)


TILES = TilesBackend()


def tiles_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None, scale: float,
    dropout_p: float, dropout_seed: int | None, *, plan: TilePlan | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention by dense tiles. q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H].

    Returns ``out`` [Nq, H, Dv] (zeros on rows without edges) and ``lse`` [Nq, H] (``-inf`` there).
    ``plan`` defaults to `tile_plan(pattern)` (built once per pattern and kept on it).
    """
    inputs = AttentionInputs(q, k, v, pattern, bias, gate, dropout_p)
    reasons = TILES.unsupported_reasons(inputs, plan=plan)
    if reasons:
        raise unsupported_error("tiles", reasons)
    function, arguments = TILES.autograd_call(inputs, scale, dropout_seed, plan=plan)
    return function.apply(*arguments)
