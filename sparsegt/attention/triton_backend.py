"""The ``triton`` backend of `sparse_attention`: Triton kernels for GPUs (`triton_kernels`), forward and
backward, every option (bias, gate, score clamp, dropout), any pattern.

On CUDA it is the first backend ``backend="auto"`` takes. On CPU it runs only in Triton's interpreter
(``TRITON_INTERPRET=1`` set before sparsegt is imported; slow, for tests), and auto never takes it there.
Triton is an optional dependency (``pip install sparsegt[triton]``); without it the backend states why it
cannot run and auto goes on to the next one. The kernels' module is imported on the first call, so
importing sparsegt neither needs Triton nor pays for loading it.

Dtypes: float16, bfloat16, float32 with float32 accumulation, float64 with float64 accumulation; ``out``
and ``lse`` come back in the inputs' dtype.

Memory beyond the inputs and outputs: the forward keeps the row maxima and log-sums [Nq, H] (float32)
for the backward; the backward holds two [E, H] buffers (the score gradient past the clamp and the
dropped-out weights, read by the key pass); rows or columns cut into segments add a [S, H, D] buffer of
partial results (S = rows + edges / piece). The dropout mask is recomputed from its seed, never stored.

Work is cut into segments of at most ``piece`` edges of one row (forward, query pass) or one key column
(key pass, over the transposed pattern), one program per (segment, head), merged in order afterwards: no
atomics, results do not depend on scheduling.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..graph import Graph
from . import dropout as drop
from .backend import AttentionInputs, Backend, Support, unsupported_error

__all__ = ["triton_attention", "TRITON", "Segments", "segments", "DEFAULT_PIECE", "BLOCK_EDGES"]

DEFAULT_PIECE = 256  # edges of one row (or column) per program; longer rows are cut and merged
BLOCK_EDGES = 32  # edges per block inside a program (a [BLOCK_EDGES, D] tile of gathered keys)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _kernels() -> ModuleType:
    """The kernels' module, imported on first use (Triton is optional; the interpreter is chosen when the
    kernels are defined, so ``TRITON_INTERPRET`` must be set before this first call)."""
    return importlib.import_module(".triton_kernels", __package__)


@dataclass(frozen=True)
class Segments:
    """Rows (or columns) cut into runs of at most ``piece`` consecutive edges; every row has at least one
    segment (an empty row has one empty segment), and the segments of a row are consecutive.

    ``owner`` [S] the row of each segment, ``start``/``end`` [S] its edge range (CSR positions; CSC
    positions for columns), ``ptr`` [rows + 1] the first segment of each row; ``split``: some row has
    more than one segment (the kernels then write partial results that a merge combines)."""

    owner: Tensor
    start: Tensor
    end: Tensor
    ptr: Tensor

    @property
    def count(self) -> int:
        return self.owner.numel()

    @property
    def split(self) -> bool:
        return self.count > self.ptr.numel() - 1


def segments(pattern: Graph, side: str, piece: int) -> Segments:
    """The pattern's rows (``side="rows"``) or columns (``"cols"``) cut into segments: the plan
    ``"triton_segments"`` at key (side, piece), built with torch ops on the pattern's device."""
    def build() -> Segments:
        indptr = pattern.indptr if side == "rows" else pattern.csc()[0]
        lengths = indptr.diff()
        pieces = torch.clamp((lengths + piece - 1) // piece, min=1)
        ptr = torch.zeros(lengths.numel() + 1, dtype=torch.long, device=indptr.device)
        ptr[1:] = torch.cumsum(pieces, 0)
        owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=indptr.device), pieces)
        start = indptr[owner] + (torch.arange(owner.numel(), device=indptr.device) - ptr[owner]) * piece
        end = torch.minimum(start + piece, indptr[owner + 1])
        return Segments(owner, start.contiguous(), end.contiguous(), ptr)

    return pattern.plan("triton_segments", build, key=(side, piece))


def _accumulator(kern: ModuleType, dtype: torch.dtype) -> tuple[torch.dtype, object]:
    """(torch dtype, Triton dtype) the kernels accumulate in: float64 for float64 inputs, else float32."""
    return (torch.float64, kern.tl.float64) if dtype == torch.float64 else (torch.float32, kern.tl.float32)


def _block(width: int) -> int:
    """The power-of-two block covering ``width`` channels (at least 16, Triton's smallest useful tile)."""
    return max(16, 1 << max(0, width - 1).bit_length())


def _dropout_args(dropout_p: float, dropout_seed: int | None) -> tuple[int, int, int]:
    """(seed_lo, seed_hi, threshold) as the kernels take them (zeros without dropout)."""
    if dropout_p <= 0.0:
        return 0, 0, 0
    seed = int(dropout_seed)
    return seed & drop.MASK32, (seed >> 32) & drop.MASK32, int(dropout_p * 4294967296.0)


def _scalars(scale: float, score_clamp: float | None, dropout_p: float, dtype: torch.dtype,
             device: torch.device) -> Tensor:
    """[3] (scale, clamp, keep_scale) in the accumulator's dtype, as the kernels read them."""
    return torch.tensor([scale, score_clamp or 0.0, 1.0 / (1.0 - dropout_p)], dtype=dtype, device=device)


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, gate, pattern, scale, dropout_p, dropout_seed, score_clamp, piece, block_e):
        kern = _kernels()
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        bias = None if bias is None else bias.contiguous()
        gate = None if gate is None else gate.contiguous()
        num_rows, num_heads, dim = q.shape
        vdim = v.shape[2]
        acc_dtype, acc = _accumulator(kern, q.dtype)
        plan = segments(pattern, "rows", piece)
        dummy = torch.zeros(1, dtype=q.dtype, device=q.device)
        seed_lo, seed_hi, threshold = _dropout_args(dropout_p, dropout_seed)
        scalars = _scalars(scale, score_clamp, dropout_p, acc_dtype, q.device)
        out = torch.empty((num_rows, num_heads, vdim), dtype=q.dtype, device=q.device)
        row_max = torch.empty((num_rows, num_heads), dtype=acc_dtype, device=q.device)
        row_logsum = torch.empty_like(row_max)
        if plan.split:
            seg_out = torch.empty((plan.count, num_heads, vdim), dtype=acc_dtype, device=q.device)
            seg_max = torch.empty((plan.count, num_heads), dtype=acc_dtype, device=q.device)
            seg_logsum = torch.empty_like(seg_max)
        else:
            seg_out, seg_max, seg_logsum = out, row_max, row_logsum
        if plan.count and num_heads:
            kern.forward_kernel[(plan.count, num_heads)](
                q, k, v, pattern.indices, dummy if bias is None else bias, dummy if gate is None else gate,
                plan.owner, plan.start, plan.end, seg_out, seg_max, seg_logsum,
                num_heads, dim, vdim, scalars, seed_lo, seed_hi, threshold, HAS_BIAS=bias is not None,
                HAS_GATE=gate is not None, HAS_CLAMP=score_clamp is not None, HAS_DROPOUT=dropout_p > 0.0,
                BLOCK_E=block_e, BLOCK_D=_block(dim), BLOCK_DV=_block(vdim), ACC=acc)
            if plan.split:
                kern.merge_forward_kernel[(num_rows, num_heads)](
                    seg_out, seg_max, seg_logsum, plan.ptr, out, row_max, row_logsum, num_heads, vdim,
                    BLOCK_DV=_block(vdim), ACC=acc)
        lse = (row_max + row_logsum).to(q.dtype)
        ctx.pattern, ctx.piece, ctx.block_e, ctx.score_clamp = pattern, piece, block_e, score_clamp
        ctx.dropout = (dropout_p, seed_lo, seed_hi, threshold)
        ctx.has_bias, ctx.has_gate = bias is not None, gate is not None
        ctx.save_for_backward(q, k, v, bias, gate, out, row_max, row_logsum, scalars)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        kern = _kernels()
        q, k, v, bias, gate, out, row_max, row_logsum, scalars = ctx.saved_tensors
        pattern, piece, block_e = ctx.pattern, ctx.piece, ctx.block_e
        num_rows, num_heads, dim = q.shape
        vdim = v.shape[2]
        num_edges = pattern.num_edges
        acc_dtype, acc = _accumulator(kern, q.dtype)
        dropout_p, seed_lo, seed_hi, threshold = ctx.dropout
        dout = torch.zeros_like(out) if dout is None else dout.contiguous()
        dlse = torch.zeros_like(row_max) if dlse is None else dlse.contiguous()
        need_dbias = ctx.has_bias and ctx.needs_input_grad[3]
        need_dgate = ctx.has_gate and ctx.needs_input_grad[4]
        dummy = torch.zeros(1, dtype=q.dtype, device=q.device)
        dscore = torch.empty((num_edges, num_heads), dtype=acc_dtype, device=q.device)
        dweight = torch.empty_like(dscore)
        dbias = torch.empty((num_edges, num_heads), dtype=q.dtype, device=q.device) if need_dbias else None
        dgate = torch.empty((num_edges, num_heads, dim), dtype=q.dtype, device=q.device) if need_dgate else None
        dq = torch.empty_like(q)
        rows = segments(pattern, "rows", piece)
        seg_dq = torch.empty((rows.count, num_heads, dim), dtype=acc_dtype, device=q.device) if rows.split else dq
        if rows.count and num_heads:
            kern.backward_rows_kernel[(rows.count, num_heads)](
                q, k, v, pattern.indices, dummy if bias is None else bias, dummy if gate is None else gate,
                rows.owner, rows.start, rows.end, out, row_max, row_logsum, dout, dlse,
                seg_dq, dscore, dweight, dummy if dbias is None else dbias, dummy if dgate is None else dgate,
                num_heads, dim, vdim, scalars, seed_lo, seed_hi, threshold, HAS_BIAS=ctx.has_bias,
                HAS_GATE=ctx.has_gate, HAS_CLAMP=ctx.score_clamp is not None,
                HAS_DROPOUT=dropout_p > 0.0, NEED_DBIAS=need_dbias, NEED_DGATE=need_dgate, BLOCK_E=block_e,
                BLOCK_D=_block(dim), BLOCK_DV=_block(vdim), ACC=acc)
        if rows.split and num_heads:
            kern.merge_sum_kernel[(num_rows, num_heads)](seg_dq, rows.ptr, dq, num_heads, dim,
                                                         BLOCK_W=_block(dim), ACC=acc)
        dk = dv = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, row_indices, edge_id = pattern.csc()
            cols = segments(pattern, "cols", piece)
            dk, dv = torch.empty_like(k), torch.empty_like(v)
            if cols.split:
                seg_dk = torch.empty((cols.count, num_heads, dim), dtype=acc_dtype, device=q.device)
                seg_dv = torch.empty((cols.count, num_heads, vdim), dtype=acc_dtype, device=q.device)
            else:
                seg_dk, seg_dv = dk, dv
            if cols.count and num_heads:
                kern.backward_keys_kernel[(cols.count, num_heads)](
                    q, dummy if gate is None else gate, row_indices, edge_id, cols.owner, cols.start, cols.end,
                    dout, dscore, dweight, seg_dk, seg_dv, num_heads, dim, vdim, scalars,
                    HAS_GATE=ctx.has_gate, BLOCK_E=block_e, BLOCK_D=_block(dim), BLOCK_DV=_block(vdim), ACC=acc)
            if cols.split and num_heads:
                num_cols = pattern.num_cols
                kern.merge_sum_kernel[(num_cols, num_heads)](seg_dk, cols.ptr, dk, num_heads, dim,
                                                             BLOCK_W=_block(dim), ACC=acc)
                kern.merge_sum_kernel[(num_cols, num_heads)](seg_dv, cols.ptr, dv, num_heads, vdim,
                                                             BLOCK_W=_block(vdim), ACC=acc)
        return (dq, dk, dv, dbias, dgate) + (None,) * 7


class TritonBackend(Backend):
    """``backend="triton"``: Triton kernels; CUDA tensors (CPU ones in Triton's interpreter only), float16,
    bfloat16, float32, float64, every option, any pattern."""

    name = "triton"
    supports = Support(devices=("cuda", "cpu"), dtypes=TRITON_DTYPES)

    def unsupported_reasons(self, inputs: AttentionInputs, *, auto: bool = False) -> list[str]:
        if not triton_installed():
            return ["needs Triton, which is not installed: pip install 'sparsegt[triton]'"]
        if inputs.device.type == "cpu" and not interpreting():
            return ["runs CPU tensors only in Triton's interpreter (TRITON_INTERPRET=1, for tests); "
                    "use backend='auto' on CPU"]
        return super().unsupported_reasons(inputs, auto=auto)

    def auto_reasons(self, inputs: AttentionInputs) -> list[str]:
        if inputs.device.type != "cuda":
            return ["auto takes Triton on CUDA only (on CPU its interpreter is far slower than the numba kernels)"]
        return []

    def autograd_call(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None):
        return _TritonAttention, (inputs.q, inputs.k, inputs.v, inputs.bias, inputs.gate, inputs.pattern,
                                  float(scale), float(inputs.dropout_p), dropout_seed, inputs.score_clamp,
                                  DEFAULT_PIECE, BLOCK_EDGES)


TRITON = TritonBackend()


def triton_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None, scale: float,
    dropout_p: float, dropout_seed: int | None, *, score_clamp: float | None = None, piece: int = DEFAULT_PIECE,
    block_edges: int = BLOCK_EDGES,
) -> tuple[Tensor, Tensor]:
    """The Triton backend called directly (shapes as `sparse_attention`): ``(out [Nq, H, Dv], lse [Nq, H])``.

    ``piece`` (edges of a row or column per program; longer ones are cut and merged) and ``block_edges``
    (edges per block inside a program, a power of two) are for tests and tuning."""
    reasons = TRITON.unsupported_reasons(AttentionInputs(q, k, v, pattern, bias, gate, dropout_p, score_clamp))
    if reasons:
        raise unsupported_error("triton", reasons)
    if piece < 1:
        raise ValueError(f"piece must be a positive number of edges, got {piece}")
    if block_edges < 1 or block_edges & (block_edges - 1):
        raise ValueError(f"block_edges must be a power of two, got {block_edges}")
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = drop.draw_seed()
    return _TritonAttention.apply(q, k, v, bias, gate, pattern, float(scale), float(dropout_p), dropout_seed,
                                  score_clamp, piece, block_edges)
