"""GRIT: graph inductive-bias transformer (Ma et al., "Graph Inductive Biases in Transformers without
Message Passing", ICML 2023).

Every pair (query i, key j) of a pattern (GRIT: all pairs of each graph, self pairs included,
``patterns.full``) carries a learned representation ``e_ij`` [C], initialised from RRWP and updated in
every layer. Attention reads and writes it. The initial pair state (`sparsegt.models.RRWPEncoder`, GRIT's
``rrwp_linear`` encoders) is ``e_ij = W_P [I, M, M^2, ..., M^(K-1)][j, i] (+ the edge's features)``,
``M = D^-1 A``: the probability of a walk *from the key j to the query i* (`rrwp_pairs`; GRIT's code puts
``P[r, c]`` on the edge ``r -> c`` of PyG's source -> target convention, and ``c`` is the query). For head
h (width D), with the layer's ``Dropout`` of rate ``dropout``::

    ê_ij  = ReLU( ρ((W_Q x_i + b_Q + W_K x_j) ⊙ (W_Ew e_ij + b_Ew)) + W_Eb e_ij + b_Eb )     ρ(u) = sign(u) sqrt|u|
    a_ij  = AttnDropout(softmax_j clamp(w_A · ê_ij, -5, 5))
    x̂_i   = sum_j a_ij (W_V x_j + W_Ev ê_ij)
    x̃_i   = θ_1 ⊙ Dropout(x̂_i) + log(1 + d_i) θ_2 ⊙ Dropout(x̂_i)          (degree scaler, d_i: graph degree)
    x'    = Norm(x + O_h x̃)                 x_out = Norm(x' + W_2 Dropout(ReLU(W_1 x')))
    e_out = Norm(e + O_e Dropout(ê))

as GRIT's ``GritTransformerLayer`` / ``MultiHeadAttentionLayerGritSparse`` (grit/layer/grit_layer.py):
W_K and W_V without bias, xavier-normal W_Q, W_K, W_V, W_E (biases: nn.Linear's default), θ xavier-normal
as GRIT's [1, C, 2] tensor (std sqrt(1 / (C + 1))), no dropout after the FFN's second linear. Remaining
differences, on purpose: ρ has ``1e-8`` inside its square roots (a finite slope at 0); the softmax
divides by the plain sum (GRIT: ``+ 1e-16``).

The values depend on the edge (``W_Ev ê_ij``), which the `sparse_attention` contract (values per key)
does not cover, so the softmax runs on the shared CSR segment primitives. ``W_Ev`` is linear, so
``sum_j a_ij W_Ev ê_ij = W_Ev (sum_j a_ij ê_ij)``: it is applied once per node, after the sum, never on
the E pairs (as in the authors' code). On the CPU, ê with its scores ``w_A · ê``, and the two sums over
each row, run in fused numba kernels (`sparsegt.nn.grit_kernels`) whose backward recomputes ``W_Ew e``
(one product), ``q_i + k_j`` and ρ's argument instead of storing them: per layer, the attention keeps
ê [E, C] (which the pair update keeps anyway) and a few [E, H] tensors for the backward. Elsewhere (GPU,
other dtypes, ``fused=False``) the same equations run as torch ops (`pair_hat_reference`,
`weighted_sums_reference`).
Shapes (the fields of the `LayerState` a layer reads): ``x`` [N, C]; ``pattern`` [N, N] with E entries;
``pair`` [E, C]; ``context``: the log degree ``log(1 + d)`` [N].
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.backend import first_runnable
from ..attention.numba_runtime import DynamicSchedule, flat, numba_cpu_reasons, numba_threads, row_chunks, thread_count
from ..encodings.relative import rrwp
from ..graph import Graph
from . import grit_kernels as kernels
from .blocks import FeedForward, make_norm
from .renamed import renamed_keywords
from .segment import gather_keys, gather_queries, segment_softmax, segment_sum
from .state import LayerState

__all__ = ["GRITAttention", "GRITLayer", "pair_hat_reference", "weighted_sums_reference", "rrwp_pairs"]

EPS = 1e-8  # inside ρ's square roots: a finite slope at 0


def signed_sqrt(u: Tensor) -> Tensor:
    """sign(u) sqrt(|u|) with a finite gradient at 0."""
    return torch.sqrt(torch.relu(u) + EPS) - torch.sqrt(torch.relu(-u) + EPS)


def rrwp_pairs(graph: Graph, pattern: Graph, steps: int) -> Tensor:
    """[E, steps] ``[I, M, ..., M^(steps-1)][j, i]`` for each entry (query i, key j) of ``pattern``, the
    orientation of GRIT's code: the probability that a walk from the key reaches the query.

    `sparsegt.encodings.rrwp` gives ``[i, j]`` (from the query); this evaluates it on the transposed
    pattern and puts each value back on its entry. Example, the path 0 - 1 - 2: entry (query 1, key 0)
    gets ``M[0, 1] = 1`` at step 1 (node 0's only neighbour is 1) and (query 0, key 1) gets ``M[1, 0] = 1/2``.
    """
    transposed = pattern.transpose()  # entry t is the pattern's entry csc()[2][t], reversed
    values = rrwp(graph, transposed, steps)
    return torch.empty_like(values).index_copy_(0, pattern.csc()[2], values)


def pair_hat_reference(q: Tensor, k: Tensor, e_weight: Tensor, e_bias: Tensor, pattern: Graph) -> Tensor:
    """ê = ReLU(ρ((q_i + k_j) ⊙ e_weight) + e_bias) [E, C] with torch ops (any device).

    q [N, H, D], k [N, H, D], e_weight and e_bias [E, C] (``W_Ew e``, ``W_Eb e``; C = H * D)."""
    u = (gather_queries(pattern, q) + gather_keys(pattern, k)).reshape(e_weight.shape) * e_weight
    return torch.relu(signed_sqrt(u) + e_bias)


def weighted_sums_reference(pattern: Graph, attn: Tensor, value: Tensor, pair_hat: Tensor
                            ) -> tuple[Tensor, Tensor]:
    """``(sum_j a_ij v_j, sum_j a_ij ê_ij)`` [N, H, D] each, with torch ops. attn [E, H]; value
    [N, H, D]; pair_hat [E, C]."""
    weight = attn[..., None]
    return (segment_sum(pattern, weight * gather_keys(pattern, value)),
            segment_sum(pattern, weight * pair_hat.view(-1, *value.shape[1:])))


class _ClampedSoftmax(torch.autograd.Function):
    """``segment_softmax(clamp(score))`` keeping only the weights and the clamp mask for the backward."""

    @staticmethod
    def forward(ctx, score, pattern, clamp):  # type: ignore[override]
        inside = None
        if clamp is not None:
            inside = (score >= -clamp) & (score <= clamp)
            score = score.clamp(-clamp, clamp)
        attn = segment_softmax(pattern, score)
        ctx.pattern, ctx.clamped = pattern, inside is not None
        ctx.save_for_backward(attn, *(() if inside is None else (inside,)))
        return attn

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        attn, *inside = ctx.saved_tensors
        pattern: Graph = ctx.pattern
        weighted = attn * grad
        grad_score = weighted - attn * gather_queries(pattern, segment_sum(pattern, weighted))
        if ctx.clamped:
            grad_score = grad_score * inside[0]
        return grad_score, None, None


# ---------------------------------------------------------------- fused CPU path
def _array(t: Tensor) -> np.ndarray:
    """[R, *F] -> C-contiguous numpy [R, prod(F)] (a view when it can)."""
    return flat(t).numpy()


def _plan(pattern: Graph, work: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(indptr, indices, row chunk bounds) as numpy, and the threads the kernel runs on (`numba_threads`); the
    bounds cached on the pattern per thread count.

    With several threads, 4 chunks per thread handed out one at a time (a slow or shared core does not
    hold the others up), as long as the per-chunk key buffers stay under half an [E, C] tensor."""
    threads = thread_count(work, kernels.PARALLEL_MIN_WORK)
    chunks = threads
    if threads > 1:
        chunks = max(threads, min(4 * threads, pattern.num_edges // (2 * max(pattern.num_cols, 1))))
    bounds = pattern.plan("row_chunks", lambda: row_chunks(pattern.indptr.contiguous().numpy(), chunks), key=chunks)
    return pattern.indptr.contiguous().numpy(), pattern.indices.contiguous().numpy(), bounds, threads


class _PairHat(torch.autograd.Function):
    """(ê [E, C], score [E, H]) from q, k [N, H, D], pair [E, C] with W_Ew [C, C] and its bias [C] (``W_Ew e``
    is made here, and made again in the backward instead of being kept), e_bias [E, C] and w_A [H, D]."""

    @staticmethod
    def forward(ctx, q, k, pair, weight_ew, bias_ew, e_bias, score_weight, pattern):  # type: ignore[override]
        e_weight = F.linear(pair, weight_ew, bias_ew)
        indptr, indices, bounds, threads = _plan(pattern, e_weight.numel())
        out = torch.empty(e_weight.shape, dtype=q.dtype)
        score = torch.empty(e_weight.shape[0], q.shape[1], dtype=q.dtype)
        eps = np.dtype(out.numpy().dtype).type(EPS)
        with numba_threads(threads), DynamicSchedule():
            kernels.pair_hat_forward(indptr, indices, bounds, _array(q), _array(k), _array(e_weight),
                                     _array(e_bias), score_weight.detach().contiguous().view(-1).numpy(),
                                     out.numpy(), score.numpy(), eps, np.sqrt(eps), q.shape[2])
        ctx.pattern = pattern
        ctx.save_for_backward(q, k, pair, weight_ew, bias_ew, score_weight, out)
        return out, score

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_score):  # type: ignore[override]
        q, k, pair, weight_ew, bias_ew, score_weight, out = ctx.saved_tensors
        pattern: Graph = ctx.pattern
        e_weight = F.linear(pair, weight_ew, bias_ew)
        indptr, indices, bounds, threads = _plan(pattern, e_weight.numel())
        hidden = q.shape[1] * q.shape[2]
        chunks = len(bounds) - 1
        grad = torch.zeros_like(out) if grad is None else grad
        grad_score = out.new_zeros(out.shape[0], q.shape[1]) if grad_score is None else grad_score
        grad_weight = torch.empty(e_weight.shape, dtype=q.dtype)
        grad_bias = torch.empty(e_weight.shape, dtype=q.dtype)
        grad_q = torch.empty(q.shape[0], hidden, dtype=q.dtype)
        grad_k = torch.zeros(chunks, k.shape[0], hidden, dtype=q.dtype)
        grad_score_weight = torch.zeros(chunks, hidden, dtype=q.dtype)
        eps = np.dtype(grad_q.numpy().dtype).type(EPS)
        with numba_threads(threads), DynamicSchedule():
            kernels.pair_hat_backward(indptr, indices, bounds, _array(q), _array(k), _array(e_weight),
                                      score_weight.detach().contiguous().view(-1).numpy(), _array(out),
                                      _array(grad), _array(grad_score), _array(grad_weight), _array(grad_bias),
                                      grad_q.numpy(), grad_k.numpy(), grad_score_weight.numpy(), eps, q.shape[2])
        return (grad_q.view_as(q), grad_k.sum(0).view_as(k), grad_weight @ weight_ew, grad_weight.T @ pair,
                grad_weight.sum(0), grad_bias, grad_score_weight.sum(0).view_as(score_weight), None)


class _WeightedSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, value, pair_hat, pattern):  # type: ignore[override]
        head_dim = value.shape[2]
        indptr, indices, bounds, threads = _plan(pattern, pair_hat.numel())
        out_value = torch.empty(pattern.num_nodes, *value.shape[1:], dtype=value.dtype)
        out_pair = torch.empty_like(out_value)
        with numba_threads(threads), DynamicSchedule():
            kernels.weighted_sums_forward(indptr, indices, bounds, _array(attn), _array(value), _array(pair_hat),
                                          _array(out_value), _array(out_pair), head_dim)
        ctx.pattern = pattern
        ctx.save_for_backward(attn, value, pair_hat)
        return out_value, out_pair

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value_out, grad_pair_out):  # type: ignore[override]
        attn, value, pair_hat = ctx.saved_tensors
        pattern: Graph = ctx.pattern
        indptr, indices, bounds, threads = _plan(pattern, pair_hat.numel())
        shape = (pattern.num_nodes, *value.shape[1:])
        grad_value_out = value.new_zeros(shape) if grad_value_out is None else grad_value_out
        grad_pair_out = value.new_zeros(shape) if grad_pair_out is None else grad_pair_out
        grad_attn = torch.empty(attn.shape, dtype=attn.dtype)
        grad_pair = torch.empty(pair_hat.shape, dtype=attn.dtype)
        grad_value = value.new_zeros(len(bounds) - 1, value.shape[0], value.shape[1] * value.shape[2])
        with numba_threads(threads), DynamicSchedule():
            kernels.weighted_sums_backward(indptr, indices, bounds, _array(attn), _array(value), _array(pair_hat),
                                           _array(grad_value_out), _array(grad_pair_out), _array(grad_attn),
                                           _array(grad_pair), grad_value.numpy(), value.shape[2])
        return grad_attn, grad_value.sum(0).view_as(value), grad_pair, None


# ---------------------------------------------------------------- the two paths, tried in this order
class _TorchPath:
    """The equations as torch ops (any device and dtype; the GPU route): `pair_hat_reference`,
    `weighted_sums_reference`. Memory: W_Ew e, the gathered q_i + k_j and the signed square root before ê are
    [E, C] tensors that autograd keeps for the backward (about three [E, C] beyond ê, which the numba path
    alone keeps), plus the [E, H, C/H] products of the weighted sums."""

    name = "torch"

    def unsupported_reasons(self, q: Tensor, pair: Tensor) -> list[str]:
        return []

    def pair_hat(self, q, k, pair, weight_ew, bias_ew, e_bias, score_weight, pattern) -> tuple[Tensor, Tensor]:
        """(ê [E, C], score [E, H])."""
        pair_hat = pair_hat_reference(q, k, F.linear(pair, weight_ew, bias_ew), e_bias, pattern)  # [E, C]
        # w_A · ê_ij per head as one [E, C] x [C, H] product (block-diagonal w_A)
        return pair_hat, pair_hat @ torch.block_diag(*score_weight[:, :, None])

    def weighted_sums(self, attn, value, pair_hat, pattern) -> tuple[Tensor, Tensor]:
        return weighted_sums_reference(pattern, attn, value, pair_hat)


class _NumbaPath:
    """The fused numba kernels (`grit_kernels`): CPU tensors of one dtype, float32 or float64. W_Ew e, ê and
    w_A · ê in one function that keeps only ê of its [E, C] tensors."""

    name = "numba"

    def unsupported_reasons(self, q: Tensor, pair: Tensor) -> list[str]:
        return numba_cpu_reasons(q=q, pair=pair)

    def pair_hat(self, q, k, pair, weight_ew, bias_ew, e_bias, score_weight, pattern) -> tuple[Tensor, Tensor]:
        return _PairHat.apply(q, k, pair, weight_ew, bias_ew, e_bias, score_weight, pattern)

    def weighted_sums(self, attn, value, pair_hat, pattern) -> tuple[Tensor, Tensor]:
        return _WeightedSums.apply(attn, value, pair_hat, pattern)


TORCH_PATH = _TorchPath()
PATHS = (_NumbaPath(), TORCH_PATH)  # GRITAttention takes the first that runs (fused=False: torch ops)


# ---------------------------------------------------------------- modules
class GRITAttention(nn.Module):
    """GRIT's attention over a pattern with pair representations. Returns ``(x̂ [N, C], ê [E, C])``.

    Args:
        hidden: C. num_heads: H. attn_dropout: on the attention weights. score_clamp: the scores are
            clamped to [-c, c] before the softmax (GRIT: 5), or None.
        fused: use the fused CPU kernels when the inputs allow (float32/64 on the CPU); False forces
            the torch-ops path (the same equations).
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, attn_dropout: float = 0.0,
                 score_clamp: float | None = 5.0, fused: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or hidden % num_heads:  # num_heads 0 was a ZeroDivisionError
            raise ValueError(f"hidden ({hidden}) must be a positive multiple of num_heads ({num_heads})")
        self.hidden, self.num_heads, self.head_dim = hidden, num_heads, hidden // num_heads
        self.score_clamp, self.fused = score_clamp, fused
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden, bias=False)    # GRIT: use_bias = False for K and V
        self.value = nn.Linear(hidden, hidden, bias=False)
        self.edge_lin = nn.Linear(hidden, 2 * hidden)  # W_Ew (first C outputs) and W_Eb
        self.score = nn.Parameter(torch.empty(num_heads, self.head_dim))                       # w_A
        self.edge_value = nn.Parameter(torch.empty(num_heads, self.head_dim, self.head_dim))  # W_Ev
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.reset_parameters()

    @property
    def channels(self) -> int:
        """Deprecated: the old name of ``hidden``."""
        warnings.warn(f"{type(self).__name__}.channels is deprecated and will be removed in the next release; "
                      "use .hidden", DeprecationWarning, stacklevel=2)
        return self.hidden

    def reset_parameters(self) -> None:
        for linear in (self.query, self.key, self.value, self.edge_lin):
            linear.reset_parameters()  # the biases keep nn.Linear's default, as in GRIT
            nn.init.xavier_normal_(linear.weight)
        nn.init.xavier_normal_(self.score)
        nn.init.xavier_normal_(self.edge_value)

    def forward(self, x: Tensor, pattern: Graph, pair: Tensor) -> tuple[Tensor, Tensor]:
        H, D, C = self.num_heads, self.head_dim, self.hidden
        q, k, v = (linear(x).view(-1, H, D) for linear in (self.query, self.key, self.value))
        # W_Ew e and W_Eb e as two products, not one [E, 2C] output: neither is kept for the backward.
        weight, bias = self.edge_lin.weight, self.edge_lin.bias
        e_bias = F.linear(pair, weight[C:], bias[C:])                                # [E, C]
        path = first_runnable(PATHS, q, pair) if self.fused else TORCH_PATH
        pair_hat, score = path.pair_hat(q, k, pair, weight[:C], bias[:C], e_bias, self.score, pattern)  # [E, C], [E, H]
        attn = self.attn_dropout(_ClampedSoftmax.apply(score, pattern, self.score_clamp))  # [E, H]
        value_sum, pair_sum = path.weighted_sums(attn, v, pair_hat, pattern)
        out = value_sum + torch.einsum("nhd,hdc->nhc", pair_sum, self.edge_value)  # [N, H, D]
        return out.reshape(-1, C), pair_hat


class GRITLayer(nn.Module):
    """One GRIT transformer layer (attention, degree scaler, node FFN; pair states updated).

    Args:
        hidden: C. num_heads: H. dropout: residual-branch dropout. attn_dropout: on the weights.
        norm: ``"batch"`` (GRIT default) or ``"layer"``. degree_scaler: apply the log-degree scaler.
        score_clamp: score clamp (GRIT: 5), None for none.
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0, attn_dropout: float = 0.0,
                 norm: str = "batch", degree_scaler: bool = True, score_clamp: float | None = 5.0) -> None:
        super().__init__()
        self.attention = GRITAttention(hidden, num_heads, attn_dropout, score_clamp)
        self.degree_scaler = nn.Parameter(torch.empty(2, hidden)) if degree_scaler else None
        self.node_out = nn.Linear(hidden, hidden)
        self.pair_out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm_node = make_norm(norm, hidden)
        self.norm_pair = make_norm(norm, hidden)
        self.feed_forward = FeedForward(hidden, 2, dropout, output_dropout=False)
        self.norm_out = make_norm(norm, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.attention, self.node_out, self.pair_out, self.norm_node, self.norm_pair,
                       self.feed_forward, self.norm_out):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if self.degree_scaler is not None:
            # GRIT's deg_coef [1, C, 2] under xavier_normal_: fan_in 2C, fan_out 2
            nn.init.normal_(self.degree_scaler, std=(1.0 / (self.degree_scaler.shape[1] + 1)) ** 0.5)

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C], ``state.pattern`` [N, N] (E entries), ``state.pair`` [E, C],
        ``state.context`` [N] = log(1 + graph degree) -> the state with new ``x`` and ``pair``."""
        x, pattern, pair, log_degree = state.x, state.pattern, state.pair, state.context
        if pair.shape[0] != pattern.num_edges:
            raise ValueError(f"pair has {pair.shape[0]} rows but the pattern has {pattern.num_edges} entries")
        h, pair_hat = self.attention(x, pattern, pair)
        h = self.dropout(h)
        if self.degree_scaler is not None:
            if log_degree is None:
                raise ValueError("GRITLayer(degree_scaler=True) needs state.context = log(1 + degree) [N]")
            h = h * self.degree_scaler[0] + h * log_degree.to(h.dtype)[:, None] * self.degree_scaler[1]
        h = self.norm_node(x + self.node_out(h))
        pair = self.norm_pair(pair + self.pair_out(self.dropout(pair_hat)))
        return replace(state, x=self.norm_out(h + self.feed_forward(h)), pair=pair)
