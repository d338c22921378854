"""Exphormer (Shirzad et al., "Exphormer: Sparse Transformers for Graphs", ICML 2023).

Attention runs over three kinds of pairs of a token set ``T = N + B * V`` (the N real nodes, then V
virtual tokens per graph, graph-major: the layout of `sparsegt.patterns.virtual_nodes`):

- the graph's own edges, gated by the edge features (or a learned "graph edge" embedding);
- a random ``degree``-regular expander per graph (`sparsegt.patterns.expander`);
- real node <-> its graph's virtual tokens, virtual <-> virtual of the same graph.

Each entry gets the sum of the embeddings of the kinds it belongs to; the attention is GT-style with
that embedding as a gate, ``s_ij = <q_i, k_j ⊙ E e_ij> / sqrt(D)``, on `sparse_attention`. As in the
reference code (its ``expander_edge_attr``, set once by the encoder), graph edges with features are
gated by the *encoded input* features in every layer (``attention_edge_attr``), not by the local MPNN's
evolving edge states.

Without edge features the gate takes one of at most 7 values (one per set of kinds), so it is folded
into the keys instead of being gathered onto every entry: the keys are projected once per type,
``k^(t)_j = k_j ⊙ E e_t`` ([U * T] keys, U types present), and entry (i, j) of type t reads key
``t * T + j`` (`ExphormerPattern.typed`, built once per pattern). The kernel then runs without a gate:
no [E, H, D] tensor is built, kept for the backward, or differentiated.

Virtual tokens carry a state through the layers (here: ``virtual`` [B*V, C], updated by their own
attention rows with a residual). The reference code re-reads a fixed embedding at every layer and
discards the virtual rows' outputs, so its virtual tokens cannot relay information between layers;
ours can. The layer follows the published configs ("CustomGatedGCN+Exphormer"): a local MPNN in
parallel with Exphormer attention, then an FFN, as in `GPSLayer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import sparse_attention
from ..graph import Graph
from ..patterns import expander, union, virtual_nodes
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .gatedgcn import GatedGCNConv
from .gine import GINEConv

__all__ = ["ExphormerPattern", "exphormer_pattern", "ExphormerAttention", "ExphormerLayer"]

EDGE_KINDS = ("graph", "expander", "virtual")


class ExphormerPattern:
    """The token pattern and what each entry is.

    Attributes:
        pattern: `Graph` [T, T], T = N + B * num_virtual.
        kinds: [E_T, 3] float, 1 where the entry is a graph edge / expander edge / virtual link.
        graph_edge_position: [E_graph] position of each graph edge in ``pattern`` (CSR order).
        num_nodes: N. num_virtual: V per graph.
    """

    def __init__(self, pattern: Graph, kinds: Tensor, graph_edge_position: Tensor, num_nodes: int,
                 num_virtual: int) -> None:
        self.pattern, self.kinds, self.graph_edge_position = pattern, kinds, graph_edge_position
        self.num_nodes, self.num_virtual = num_nodes, num_virtual
        self._typed: tuple[Graph, Tensor] | None = None

    def typed(self) -> tuple[Graph, Tensor]:
        """The pattern with its keys split by entry type (the set of kinds an entry belongs to).

        Returns ``(pattern [T, U * T], type_kinds [U, 3])``: entry (i, j) of type t becomes (i, t * T + j)
        (rows sorted), and row t of ``type_kinds`` flags the kinds of type t. Built on first use and kept:
        every layer of a forward shares it.
        """
        if self._typed is None:
            pattern, total = self.pattern, self.pattern.num_cols
            bits = torch.tensor([1, 2, 4], device=self.kinds.device)
            codes = (self.kinds.round().long() * bits).sum(1)                     # [E] in [0, 8)
            present = torch.bincount(codes, minlength=8).nonzero().flatten()
            if present.numel() == 0:  # no entries: one (unused) type keeps the shapes simple
                present = present.new_zeros(1)
            count = present.numel()
            type_of = torch.full((8,), -1, dtype=torch.long, device=codes.device)
            type_of[present] = torch.arange(count, device=codes.device)
            type_of = type_of[codes]
            # rows are sorted by key already: a stable sort by (row, type) keeps them sorted within a type
            order = torch.sort(pattern.row_index() * count + type_of, stable=True).indices
            columns = (type_of * total + pattern.indices)[order]
            typed = Graph(pattern.indptr, columns, count * total, validate=False)
            type_kinds = ((present[:, None] & bits) > 0).to(self.kinds.dtype)
            self._typed = (typed, type_kinds)
        return self._typed


def _pad_rows(pattern: Graph, total: int) -> Graph:
    """The same entries in a [total, total] pattern (the extra rows and columns are empty)."""
    extra = total - pattern.num_nodes
    indptr = torch.cat([pattern.indptr, pattern.indptr[-1:].expand(extra)])
    return Graph(indptr, pattern.indices, total, validate=False)


def exphormer_pattern(batch: Graph, degree: int = 6, num_virtual: int = 1, seed: int = 0) -> ExphormerPattern:
    """Graph edges + expander (``degree`` keys per node, even; 0 for none) + ``num_virtual`` virtual
    tokens per graph (0 for none), over ``T = N + B * num_virtual`` tokens."""
    n = batch.num_nodes
    total = n + batch.num_graphs * num_virtual
    graph_part = _pad_rows(batch.pattern(), total)
    parts = [graph_part]
    parts.append(_pad_rows(expander(batch, degree, seed), total) if degree > 0 else Graph.empty(total))
    parts.append(virtual_nodes(batch, num_virtual) if num_virtual > 0 else Graph.empty(total))
    pattern, sources, positions = union(*parts, return_sources=True, return_positions=True)
    kinds = torch.stack(sources, 1).to(torch.get_default_dtype())
    return ExphormerPattern(pattern, kinds, positions[0], n, num_virtual)


class ExphormerAttention(nn.Module):
    """Softmax attention over an `ExphormerPattern`, gated by edge-kind embeddings.

    Args:
        channels: C. num_heads: H. attn_dropout: on the attention weights.
    """

    def __init__(self, channels: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.kind_embedding = nn.Parameter(torch.empty(len(EDGE_KINDS), channels))
        self.attention = SparseMultiheadAttention(channels, num_heads, dropout=attn_dropout,
                                                  edge_dim=channels, edge_mode="gate")
        nn.init.normal_(self.kind_embedding, std=1.0)

    def forward(self, tokens: Tensor, structure: ExphormerPattern, edge_attr: Tensor | None = None) -> Tensor:
        """tokens [T, C]; edge_attr [E_graph, C] (graph edges, CSR order) or None -> [T, C]."""
        if edge_attr is None:
            return self._typed_keys(tokens, structure)
        attention = self.attention
        proj = attention.edge_proj
        # gate = W (sum of the entry's kind embeddings) + b = kinds @ (W kind_embedding) + b: the linear
        # map runs on the 3 embeddings, not on every entry.
        kinds = structure.kinds.to(tokens.dtype)
        if edge_attr is not None:  # graph edges carry their own features instead of the "graph" embedding
            kinds = torch.cat([kinds[:, :1] * 0, kinds[:, 1:]], dim=1)
        gate = kinds @ nn.functional.linear(self.kind_embedding, proj.weight) + proj.bias
        if edge_attr is not None:
            edge_term = nn.functional.linear(edge_attr, proj.weight)
            gate = gate.index_add(0, structure.graph_edge_position, edge_term)
        gate = gate.view(-1, attention.num_heads, attention.head_dim)
        return attention(tokens, pattern=structure.pattern, edge_gate=gate)

    def _typed_keys(self, tokens: Tensor, structure: ExphormerPattern) -> Tensor:
        """The same attention when every gate is a sum of kind embeddings: one key set per entry type."""
        attention = self.attention
        H, D = attention.num_heads, attention.head_dim
        pattern, type_kinds = structure.typed()
        proj = attention.edge_proj
        gate = type_kinds.to(tokens.dtype) @ F.linear(self.kind_embedding, proj.weight) + proj.bias  # [U, C]
        count, total = gate.shape[0], tokens.shape[0]
        q, k, v = attention.project(tokens)
        keys = (k.unsqueeze(0) * gate.view(count, 1, H, D)).reshape(count * total, H, D)
        values = v.unsqueeze(0).expand(count, total, H, D).reshape(count * total, H, D)
        out = sparse_attention(q, keys, values, pattern, dropout_p=attention.dropout if self.training else 0.0,
                               backend=attention.backend)
        return attention.out_proj(out.reshape(total, attention.embed_dim))


class ExphormerLayer(nn.Module):
    """Local MPNN (``"gatedgcn"``, ``"gine"`` or ``"none"``) in parallel with Exphormer attention, then FFN.

    Args:
        channels: C. num_heads: H. local: local MPNN. dropout, attn_dropout: as in `GPSLayer`.
        norm: ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(self, channels: int, num_heads: int, local: str = "gatedgcn", dropout: float = 0.0,
                 attn_dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        if local not in ("gatedgcn", "gine", "none"):
            raise ValueError(f"local must be 'gatedgcn', 'gine' or 'none', got {local!r}")
        self.local_kind = local
        self.local_model: nn.Module | None = None
        self.norm_local: nn.Module = nn.Identity()
        if local == "gine":
            self.local_model = GINEConv(channels)
            self.norm_local = make_norm(norm, channels)
        elif local == "gatedgcn":
            self.local_model = GatedGCNConv(channels, dropout=dropout, batch_norm=norm == "batch")
        self.attention = ExphormerAttention(channels, num_heads, attn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = make_norm(norm, channels)
        self.feed_forward = FeedForward(channels, 2, dropout)
        self.norm_out = make_norm(norm, channels)

    def forward(self, x: Tensor, graph: Graph, structure: ExphormerPattern, edge_attr: Tensor | None = None,
                virtual: Tensor | None = None, *, attention_edge_attr: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x [N, C], graph (local edges), structure from `exphormer_pattern`, edge_attr [E, C] (the local
        MPNN's edge states) or None, virtual [B*V, C] (required when V > 0) -> (x, edge_attr, virtual).

        attention_edge_attr: [E, C] features that gate the graph edges in the attention — the encoded
        input edge features, the same in every layer (as the reference code) — or None for the learned
        "graph edge" embedding."""
        n = x.shape[0]
        expected = structure.pattern.num_nodes - n
        if (virtual.shape[0] if virtual is not None else 0) != expected:
            raise ValueError(f"virtual must have B * num_virtual = {expected} rows, got "
                             f"{None if virtual is None else virtual.shape[0]}")
        tokens = x if virtual is None else torch.cat([x, virtual])
        attended = self.attention(tokens, structure, attention_edge_attr)
        branches = []
        if self.local_model is not None:
            if self.local_kind == "gatedgcn":
                h_local, edge_attr = self.local_model(x, graph, edge_attr)
            else:
                h_local = x + self.dropout(self.local_model(x, graph, edge_attr))
            branches.append(self.norm_local(h_local))
        branches.append(self.norm_attention(x + self.dropout(attended[:n])))
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        if virtual is not None:
            virtual = virtual + self.dropout(attended[n:])
        return self.norm_out(h + self.feed_forward(h)), edge_attr, virtual
