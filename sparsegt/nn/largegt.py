"""LargeGT (Dwivedi, Liu, Luu, Bresson, Shah & Zhao, "Graph Transformers for Large Graphs", 2023): a seed node
attends to the tokens of its sampled 2-hop neighbourhood (local) and to a codebook of the whole graph (global).

For a mini-batch of seed nodes, each with its sampled 2-hop neighbourhood ``N₂(i)`` (itself included), and
hop aggregates ``Â X, Â² X`` precomputed on the whole graph (`sparsegt.data.hop_features`)::

    tokens of node v:   τ_v = [h_v, E(Â X)_v, E(Â² X)_v]            (E: the model's node encoder; 3 per node)
    local:   l_i = MHA(LN h_i ; LN τ_v for v in N₂(i))               pattern [S, 3 n]: queries = seeds
    global:  z_i = W_z h_i,   g_i = W_o softmax_k(<W_q z_i, W_k c_k>/sqrt(D) + log n_k) W_v c_k
                                                                      pattern [S, K_live]: keys = centroids
    h_i' = Norm(h_i + Dropout(W_c [l_i ; g_i])),   h_i'' = Norm(h_i' + FFN(h_i'))

The tokens of a 2-hop neighbour carry ``Â² X``, so a seed reads features up to 4 hops away while the sampler
expands only 2 (the paper's "4-hop receptive field through 2-hop operations"). The codebook (`EMACodebook`)
holds K centroids of the embeddings ``z`` of all seeds seen in training, updated by EMA k-means after each
training forward; ``log n_k`` weighs a centroid by the number of nodes it stands for. Both attentions are one
`sparse_attention` call on a rectangular pattern. Rows that are not seeds pass through unchanged (their
tokens feed the seeds; the loss covers seeds only).

Differences from the authors' code (snap-research/LargeGT), chosen here:

- Queries are the seeds only (the pattern rows), attending over their neighbourhood's tokens; the authors run
  a full 1-layer Transformer among each seed's 3 x 100 tokens and read out the seed token plus an attention-
  pooled sum of the others. Both give each seed one attention over its tokens; ours costs S x 3n, not S x 9n².
- The neighbourhood is the k-hop sampler's (fan-outs per hop, GraphSAGE style), not a uniform draw of 99 nodes
  from the union of the 1- and 2-hop sets; ``data.fanouts=[10, 9]`` gives at most 100 nodes as their 100.
- The codebook clusters ``z = W_z h`` (``codebook_dim`` wide); the authors concatenate a node2vec embedding of
  the node (not available offline here) and BatchNorm-normalise before k-means. Their count bias is the number
  of nodes assigned (a [N] buffer); here the EMA count, equal up to a factor that cancels in the softmax.
- The combination is a residual + norm + FFN block in this library's vocabulary (the authors: an MLP over
  [local; global] without residual); ``num_layers`` > 1 stacks it (the authors use 1 layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..attention import sparse_attention
from ..graph import Graph
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .codebook import EMACodebook
from .state import LayerState

__all__ = ["LargeGTInputs", "LargeGTLocalAttention", "LargeGTGlobalAttention", "LargeGTLayer",
           "token_pattern"]


@dataclass
class LargeGTInputs:
    """What `LargeGTLayer` reads besides ``x`` (``LayerState.context``), built once per batch.

    Attributes:
        seeds: [S] the rows whose states the layers update (a sampled batch's seeds: its target rows).
        hop_tokens: [n, T, C] the encoded hop aggregates ``E(Â^t X)`` of every node, t = 1..T (fixed over layers).
    """

    seeds: Tensor
    hop_tokens: Tensor


def token_pattern(neighbourhood: Graph, tokens_per_node: int) -> Graph:
    """[S, n * T] from [S, n]: key j becomes the T tokens ``j * T + t`` (t = 0..T-1), rows stay sorted."""
    if tokens_per_node < 1:
        raise ValueError(f"tokens_per_node must be >= 1, got {tokens_per_node}")
    t = tokens_per_node
    offsets = torch.arange(t, device=neighbourhood.device)
    indices = (neighbourhood.indices.unsqueeze(1) * t + offsets).reshape(-1)
    edge_data = {name: v.repeat_interleave(t, 0) for name, v in neighbourhood.edge_data.items()}
    return Graph(neighbourhood.indptr * t, indices, neighbourhood.num_cols * t, edge_data=edge_data, validate=False)


class LargeGTLocalAttention(nn.Module):
    """Seeds attend over the tokens of their neighbourhood: ``MHA(LN query, LN tokens, pattern)``.

    ``forward(query [S, C], tokens [Nt, C], pattern [S, Nt]) -> [S, C]``; one LayerNorm for queries and tokens
    (the seed's query is its own first token, as in the authors' pre-norm encoder)."""

    def __init__(self, hidden: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=attn_dropout)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.attention.reset_parameters()

    def forward(self, query: Tensor, tokens: Tensor, pattern: Graph) -> Tensor:
        if pattern.num_nodes != query.shape[0] or pattern.num_cols != tokens.shape[0]:
            raise ValueError(f"local pattern is [{pattern.num_nodes}, {pattern.num_cols}] but there are "
                             f"{query.shape[0]} queries and {tokens.shape[0]} tokens")
        return self.attention(self.norm(query), self.norm(tokens), pattern=pattern)


class LargeGTGlobalAttention(nn.Module):
    """Seeds attend to the live centroids of an `EMACodebook` of their embeddings ``z = W_z h``.

    ``forward(x [S, C], update)`` -> [S, C]: scores ``<W_q z_i, W_k c_k> / sqrt(D) + log n_k`` over the live
    centroids (a dead centroid is not a key; with none live the output is 0), values ``W_v c_k``, output
    projection ``W_o``. ``update=True`` (training) then moves the codebook toward this batch's ``z`` (detached).

    Args:
        hidden: C. num_heads: H. num_centroids: K (paper 4096). codebook_dim: d of ``z`` (paper 64).
        decay: the codebook's EMA decay γ (paper 0.99). attn_dropout: on the attention weights.
    """

    def __init__(self, hidden: int, num_heads: int, num_centroids: int, codebook_dim: int, decay: float = 0.99,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.attn_dropout = num_heads, hidden // num_heads, attn_dropout
        self.to_codebook = nn.Linear(hidden, codebook_dim)
        self.query = nn.Linear(codebook_dim, hidden)
        self.key = nn.Linear(codebook_dim, hidden)
        self.value = nn.Linear(codebook_dim, hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.codebook = EMACodebook(num_centroids, codebook_dim, decay)

    def reset_parameters(self) -> None:
        for layer in (self.to_codebook, self.query, self.key, self.value, self.out_proj, self.codebook):
            layer.reset_parameters()

    def forward(self, x: Tensor, update: bool = False) -> Tensor:
        z = self.to_codebook(x)
        live = torch.nonzero(self.codebook.live).reshape(-1)
        num_queries, num_keys, H, D = x.shape[0], live.numel(), self.num_heads, self.head_dim
        centroids = self.codebook.centroids[live].to(z.dtype)
        # every seed to every live centroid: a full rectangular pattern [S, K_live]
        indptr = torch.arange(num_queries + 1, device=x.device) * num_keys
        indices = torch.arange(num_keys, device=x.device).repeat(num_queries)
        pattern = Graph(indptr, indices, num_keys, validate=False)
        log_count = self.codebook.counts[live].log().to(z.dtype)
        bias = log_count.unsqueeze(1).expand(num_keys, H).repeat(num_queries, 1)
        out = sparse_attention(self.query(z).view(-1, H, D), self.key(centroids).view(-1, H, D),
                               self.value(centroids).view(-1, H, D), pattern, bias=bias,
                               scale=1.0 / math.sqrt(D), dropout_p=self.attn_dropout if self.training else 0.0)
        if update:
            self.codebook.update(z)
        return self.out_proj(out.reshape(num_queries, H * D))


class LargeGTLayer(nn.Module):
    """One LargeGT block over a sampled batch (see the module docstring); ``layer(state) -> state``.

    Reads ``state.pattern`` (the [S, n (1 + T)] seed -> token pattern, `token_pattern` of
    `sparsegt.patterns.seed_neighbourhood`) and ``state.context`` (`LargeGTInputs`); updates the seed rows of
    ``state.x``.

    Args:
        hidden: C. num_heads: H. num_centroids: K of the global codebook; 0 leaves the global module out
            (the paper's local-only ablation). codebook_dim, codebook_decay: see `LargeGTGlobalAttention`.
        dropout: residual-branch / FFN dropout. attn_dropout: attention-weight dropout. norm: batch | layer | none.
    """

    def __init__(self, hidden: int, num_heads: int, num_centroids: int = 4096, codebook_dim: int = 64,
                 codebook_decay: float = 0.99, dropout: float = 0.0, attn_dropout: float = 0.0,
                 norm: str = "batch") -> None:
        super().__init__()
        self.local = LargeGTLocalAttention(hidden, num_heads, attn_dropout)
        self.global_attention = None
        if num_centroids:
            self.global_attention = LargeGTGlobalAttention(hidden, num_heads, num_centroids, codebook_dim,
                                                           codebook_decay, attn_dropout)
        parts = 2 if self.global_attention is not None else 1
        self.combine = nn.Linear(parts * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = make_norm(norm, hidden)
        self.feed_forward = FeedForward(hidden, 2, dropout)
        self.norm_out = make_norm(norm, hidden)

    def reset_parameters(self) -> None:
        for module in (self.local, self.global_attention, self.combine, self.norm_attention, self.feed_forward,
                       self.norm_out):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        inputs = state.context
        if not isinstance(inputs, LargeGTInputs) or not isinstance(state.pattern, Graph):
            raise ValueError("LargeGTLayer needs state.context = LargeGTInputs and state.pattern = the seed -> "
                             "token pattern (built by sparsegt.models.families.LargeGTFamily.prepare)")
        x, seeds = state.x, inputs.seeds
        h = x.index_select(0, seeds)
        tokens = torch.cat([x.unsqueeze(1), inputs.hop_tokens.to(x.dtype)], dim=1).reshape(-1, x.shape[1])
        parts = [self.local(h, tokens, state.pattern)]
        if self.global_attention is not None:
            parts.append(self.global_attention(h, update=self.training))
        h = self.norm_attention(h + self.dropout(self.combine(torch.cat(parts, dim=1))))
        h = self.norm_out(h + self.feed_forward(h))
        return replace(state, x=x.index_copy(0, seeds, h))
