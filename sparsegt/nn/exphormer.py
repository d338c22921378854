"""Exphormer (Shirzad et al., "Exphormer: Sparse Transformers for Graphs", ICML 2023), as its code computes it.

Tokens: ``T = N + B * V``, the N real nodes, then V virtual tokens per graph (graph-major: token
``N + b * V + v`` is virtual token v of graph b). The attention pattern has one entry per (source, pair),
each a term of its row's softmax, with an entry type ``t`` that picks its gate vector ``g``:

- graph edge (i <- j): type 0, ``g = e_ij``, the *encoded input* edge features, the same in every layer
  (the reference's ``expander_edge_attr``, set once by its encoder; GraphGPS's DummyEdge vector when the
  data has none), not the local MPNN's evolving edge states;
- expander edge (i <- j): type 1, one learned vector;
- virtual token (b, v) <- every real node of graph b: type ``2 + v`` (the reference's ``virt_edge_in_emb[v]``);
- real node i <- every virtual token (b, v) of its graph: type ``2 + V + v`` (``virt_edge_out_emb[v]``).

No virtual <-> virtual and no virtual self entries. A pair that is both a graph edge and an expander edge
is two entries (two softmax terms with their own gates), as the reference concatenates its edge lists.
The type vectors and the initial virtual states are shared by all layers (`ExphormerEmbeddings`, the
reference's ``ExpanderEdgeFixer``), all N(0, 1) like its ``nn.Embedding`` s.

Attention (reference ``ExphormerAttention``), per head h of width D, with no biases and no output projection::

    q = W_Q t,  k = W_K t,  v = W_V t,  g'_ij = W_E g_ij                (nn.Linear(bias=False), default init)
    s_ij  = clamp(<q_i ⊙ k_j, g'_ij> / sqrt(D), -5, 5)
    out_i = sum_j softmax_j(s_ij) v_j                                     (no attention dropout)

Layer (reference ``MultiLayer`` with ``CustomGatedGCN+Exphormer``)::

    h_L = BN(GatedGCN(x, e))            (the GatedGCN's residual, BN, ReLU and dropout inside; norm1_local)
    h_A = BN(x + Dropout(out[:N]))
    x'  = BN(h + FFN(h)),  h = h_L + h_A     FFN: C -> 2C -> C, ReLU, dropout after each linear
    virtual' = out[N:]                  (the raw attention output of the virtual rows: no residual,
                                         dropout or norm; the next layer's virtual tokens)

EquivStableLapPE (Wang et al., ICLR 2022; reference ``GatedGCNLayer(equivstable_pe=True)``): with ``pe``
[N, P] (one shared linear map of the Laplacian eigenvectors) each layer scales GatedGCN's gates by
``r_ij = sigmoid(W_2 ReLU(W_1 ||pe_i - pe_j||^2 + b_1) + b_2)`` ([E, 1], widths 1 -> C -> 1) in both sums.

Without per-edge gate features (graph edges gated by one vector) every gate is one of ``U = 2 + 2V``
vectors, so it is folded into the keys instead of being gathered onto every entry: the keys are projected
once per type, ``k^(t)_j = k_j ⊙ g'_t`` ([U * T] keys), and an entry (i, j) of type t reads key
``t * T + j`` (`ExphormerPattern.typed`). The kernel then runs without a gate: no [E, H, D] tensor is
built, kept for the backward, or differentiated.

Remaining differences from the reference, on purpose: the softmax subtracts the row maximum and divides
by the plain sum (the reference: ``exp(s) / (sum exp(s) + 1e-6)``, safe there because of the clamp); the
expander comes from `sparsegt.patterns.expander` (drawn per batch as a function of the graph's size, not
per dataset graph; no spectral-gap rejection; its self-loops and repeated pairs removed, which the
reference keeps); ``norm="layer"`` is LayerNorm (the reference: GraphNorm).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..attention import sparse_attention
from ..graph import Graph
from ..patterns import expander
from .blocks import FeedForward, make_norm
from .distance_gate import DistanceGate
from .local import local_update, make_local
from .renamed import renamed_keywords
from .state import LayerState

__all__ = ["ExphormerPattern", "exphormer_pattern", "ExphormerEmbeddings", "ExphormerAttention",
           "ExphormerInputs", "ExphormerLayer", "pe_distance", "GRAPH_EDGE", "EXPANDER_EDGE"]

GRAPH_EDGE, EXPANDER_EDGE = 0, 1  # entry types; 2 + v: virtual v <- real, 2 + V + v: real <- virtual v


class ExphormerPattern:
    """The token pattern and the type of each entry.

    Attributes:
        pattern: `Graph` [T, T], T = N + B * num_virtual; rows sorted by (type, key); a pair that is a
            graph edge and an expander edge appears twice.
        entry_type: [E_T] int64 in ``[0, num_types)`` (module docstring).
        graph_edge_position: [E_graph] position of each graph edge (the batch's CSR order) in ``pattern``.
        num_nodes: N. num_virtual: V per graph. num_types: U = 2 + 2V.
    """

    def __init__(self, pattern: Graph, entry_type: Tensor, graph_edge_position: Tensor, num_nodes: int,
                 num_virtual: int) -> None:
        self.pattern, self.entry_type, self.graph_edge_position = pattern, entry_type, graph_edge_position
        self.num_nodes, self.num_virtual = num_nodes, num_virtual
        self.num_types = 2 + 2 * num_virtual
        self._typed: Graph | None = None

    def typed(self) -> Graph:
        """The pattern with its keys split by entry type: [T, U * T], entry (i, j) of type t becomes
        (i, t * T + j), in the same entry order (rows are sorted by type, then key). Built once, kept."""
        if self._typed is None:
            pattern = self.pattern
            columns = self.entry_type * pattern.num_cols + pattern.indices
            self._typed = Graph(pattern.indptr, columns, self.num_types * pattern.num_cols, validate=False)
        return self._typed


def exphormer_pattern(batch: Graph, degree: int = 6, num_virtual: int = 1, seed: int = 0) -> ExphormerPattern:
    """Graph edges + expander (``degree`` keys per node, even; 0 for none) + ``num_virtual`` virtual tokens
    per graph (0 for none) over ``T = N + B * num_virtual`` tokens, each entry typed (module docstring).

    Args:
        batch: square `Graph` (a batch or one graph). degree: Exphormer's ``2 * exp_deg``. seed: expander seed.
    """
    n, num_graphs, nv = batch.num_nodes, batch.num_graphs, num_virtual
    total, num_types, device = n + num_graphs * nv, 2 + 2 * nv, batch.device
    graph = batch.pattern()
    rows, cols = [graph.row_index()], [graph.indices]
    types = [torch.full_like(graph.indices, GRAPH_EDGE)]
    if degree > 0:
        links = expander(batch, degree, seed)
        rows.append(links.row_index())
        cols.append(links.indices)
        types.append(torch.full_like(links.indices, EXPANDER_EDGE))
    if nv > 0:
        real = torch.arange(n, device=device).repeat_interleave(nv)                       # [N * V]
        index = torch.arange(nv, device=device).repeat(n)                                 # v of each pair
        token = n + batch.batch_index.repeat_interleave(nv) * nv + index                  # its virtual token
        rows += [real, token]
        cols += [token, real]
        types += [2 + nv + index, 2 + index]
    row, col, kind = torch.cat(rows), torch.cat(cols), torch.cat(types)
    order = torch.argsort((row * num_types + kind) * max(total, 1) + col, stable=True)
    indptr = torch.zeros(total + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=total), 0)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=device)
    pattern = Graph(indptr, col[order].contiguous(), total, validate=False)
    return ExphormerPattern(pattern, kind[order].contiguous(), position[:graph.num_edges], n, nv)


class ExphormerEmbeddings(nn.Module):
    """The learned vectors all layers share (the reference's ``ExpanderEdgeFixer``), N(0, 1) each.

    ``virtual`` [V, C]: initial virtual-token states; ``graph_edge`` [1, C]: gate of graph edges when they
    have no features (the model passes the DummyEdge vector instead when it has one); ``expander_edge``
    [1, C]; ``virtual_in`` [V, C] (virtual v <- real) and ``virtual_out`` [V, C] (real <- virtual v).
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_virtual: int) -> None:
        super().__init__()
        self.num_virtual = num_virtual
        self.virtual = nn.Parameter(torch.empty(num_virtual, hidden))
        self.graph_edge = nn.Parameter(torch.empty(1, hidden))
        self.expander_edge = nn.Parameter(torch.empty(1, hidden))
        self.virtual_in = nn.Parameter(torch.empty(num_virtual, hidden))
        self.virtual_out = nn.Parameter(torch.empty(num_virtual, hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for parameter in self.parameters():
            nn.init.normal_(parameter)

    def edge_types(self, graph_edge: Tensor | None = None) -> Tensor:
        """[U, C] one gate vector per entry type; ``graph_edge`` [1, C] replaces the own graph-edge vector."""
        first = self.graph_edge if graph_edge is None else graph_edge.reshape(1, -1)
        return torch.cat([first, self.expander_edge, self.virtual_in, self.virtual_out])

    def virtual_states(self, num_graphs: int) -> Tensor | None:
        """[B * V, C] initial virtual tokens (graph-major), None when V = 0."""
        return self.virtual.repeat(num_graphs, 1) if self.num_virtual else None


class ExphormerAttention(nn.Module):
    """Softmax attention over an `ExphormerPattern`, gated by each entry's type vector or edge features.

    Args:
        hidden: C. num_heads: H. score_clamp: the clamp of the scaled scores (reference: 5).
        attn_dropout: on the attention weights (the reference has none; kept as an option).
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, score_clamp: float | None = 5.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if num_heads < 1 or hidden % num_heads:  # num_heads 0 was a ZeroDivisionError
            raise ValueError(f"hidden ({hidden}) must be a positive multiple of num_heads ({num_heads})")
        self.hidden, self.num_heads, self.head_dim = hidden, num_heads, hidden // num_heads
        self.score_clamp, self.attn_dropout = score_clamp, float(attn_dropout)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.value = nn.Linear(hidden, hidden, bias=False)
        self.edge = nn.Linear(hidden, hidden, bias=False)

    @property
    def channels(self) -> int:
        """Deprecated: the old name of ``hidden``."""
        warnings.warn(f"{type(self).__name__}.channels is deprecated and will be removed in the next release; "
                      "use .hidden", DeprecationWarning, stacklevel=2)
        return self.hidden

    def reset_parameters(self) -> None:
        for linear in (self.query, self.key, self.value, self.edge):
            linear.reset_parameters()

    def forward(self, tokens: Tensor, pattern: ExphormerPattern, edge_types: Tensor,
                edge_attr: Tensor | None = None) -> Tensor:
        """tokens [T, C]; edge_types [U, C] (`ExphormerEmbeddings.edge_types`); edge_attr [E_graph, C] gate
        features of the graph edges (batch CSR order), or None (graph edges use ``edge_types[0]``) -> [T, C]."""
        H, D, total = self.num_heads, self.head_dim, tokens.shape[0]
        if edge_types.shape[0] != pattern.num_types:
            raise ValueError(f"edge_types has {edge_types.shape[0]} rows but the pattern has "
                             f"{pattern.num_types} entry types (2 + 2 * num_virtual)")
        q, k, v = (lin(tokens).view(-1, H, D) for lin in (self.query, self.key, self.value))
        gates = self.edge(edge_types.to(tokens.dtype))                                       # [U, C]
        dropout = self.attn_dropout if self.training else 0.0
        if edge_attr is None:
            count = gates.shape[0]
            keys = (k.unsqueeze(0) * gates.view(count, 1, H, D)).reshape(count * total, H, D)
            values = v.unsqueeze(0).expand(count, total, H, D).reshape(count * total, H, D)
            out = sparse_attention(q, keys, values, pattern.typed(), dropout_p=dropout,
                                   score_clamp=self.score_clamp)
        else:
            gate = gates[pattern.entry_type].index_copy(0, pattern.graph_edge_position,
                                                         self.edge(edge_attr.to(tokens.dtype)))
            out = sparse_attention(q, k, v, pattern.pattern, gate=gate.view(-1, H, D), dropout_p=dropout,
                                   score_clamp=self.score_clamp)
        return out.reshape(total, self.hidden)


@dataclass
class ExphormerInputs:
    """What every Exphormer layer of a batch reads and none changes (``LayerState.context``).

    Attributes:
        edge_types: [U, C] gate vectors of the entry types (`ExphormerEmbeddings.edge_types`).
        attention_edge_attr: [E, C] features that gate the graph edges in the attention (the encoded input
            features, the same in every layer), or None for ``edge_types[0]``.
        pe_distance: [E, 1] `pe_distance` of the batch's graph edges (EquivStableLapPE), computed once for all
            layers, or None (a layer with ``pe_gate`` computes it from ``state.pe``).
    """

    edge_types: Tensor
    attention_edge_attr: Tensor | None = None
    pe_distance: Tensor | None = None


def pe_distance(pe: Tensor, graph: Graph) -> Tensor:
    """``||p_i - p_j||^2`` [E, 1] for every edge (i <- j) of ``graph``; ``pe`` [N, P]."""
    return (pe[graph.row_index()] - pe[graph.indices]).square().sum(-1, keepdim=True)


class ExphormerLayer(nn.Module):
    """Local MPNN (a module, or ``"gatedgcn"``, ``"gine"``, ``"none"``) in parallel with Exphormer attention,
    then FFN.

    Args:
        hidden: C. num_heads: H. local: local MPNN module or name (`sparsegt.nn.local`). dropout: in the
        GatedGCN, after the attention and in the FFN. attn_dropout: on the attention weights (reference:
        none). norm: ``"batch"``, ``"layer"`` or ``"none"``. score_clamp: attention score clamp (reference: 5).
        pe_gate: EquivStableLapPE's gate of the GatedGCN messages (needs ``local="gatedgcn"`` and
        ``state.pe``).
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, local: str | nn.Module | None = "gatedgcn",
                 dropout: float = 0.0, attn_dropout: float = 0.0, norm: str = "batch", score_clamp: float | None = 5.0,
                 pe_gate: bool = False) -> None:
        super().__init__()
        local_model = make_local(local, hidden, dropout, norm, ("gatedgcn", "gine", "none"))
        if pe_gate and not getattr(local_model, "accepts_edge_scale", False):
            raise ValueError(f"pe_gate (EquivStableLapPE) gates GatedGCN messages: it needs local='gatedgcn', "
                             f"got {local!r}")
        self.norm_local: nn.Module = nn.Identity()  # registered before local_model: the checkpoints' key order
        self.local_model: nn.Module | None = local_model
        if self.local_model is not None:
            self.norm_local = make_norm(norm, hidden)
        self.pe_gate = DistanceGate(hidden) if pe_gate else None
        self.attention = ExphormerAttention(hidden, num_heads, score_clamp, attn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = make_norm(norm, hidden)
        self.feed_forward = FeedForward(hidden, 2, dropout)
        self.norm_out = make_norm(norm, hidden)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """One layer.

        Reads from ``state``: ``x`` [N, C]; ``graph``: the batch (local edges); ``pattern``: the
        `ExphormerPattern` (`exphormer_pattern`); ``edge_attr`` [E, C]: the local MPNN's edge states, or None;
        ``virtual`` [B * V, C] (required when V > 0); ``context``: `ExphormerInputs`; ``pe`` [N, P]:
        EquivStableLapPE encodings (with ``pe_gate``).
        Returns the state with new ``x`` [N, C], ``edge_attr`` and ``virtual`` [B * V, C] (or None).
        """
        x, graph, pattern, virtual, inputs, pe = (state.x, state.graph, state.pattern, state.virtual,
                                                  state.context, state.pe)
        n = x.shape[0]
        expected = pattern.pattern.num_nodes - n
        if (virtual.shape[0] if virtual is not None else 0) != expected:
            raise ValueError(f"virtual must have B * num_virtual = {expected} rows, got "
                             f"{None if virtual is None else virtual.shape[0]}")
        if (self.pe_gate is not None) != (pe is not None):
            raise ValueError("pe (EquivStableLapPE) must be given exactly when the layer has pe_gate=True")
        tokens = x if virtual is None else torch.cat([x, virtual])
        attended = self.attention(tokens, pattern, inputs.edge_types, inputs.attention_edge_attr)
        branches, edge_attr = [], state.edge_attr
        if self.local_model is not None:
            scale = {}
            if self.pe_gate is not None:
                distance = inputs.pe_distance if inputs.pe_distance is not None else pe_distance(pe, graph)
                scale["edge_scale"] = self.pe_gate(distance.to(x.dtype))                   # [E, 1]
            h_local, edge_attr = local_update(self.local_model, x, graph, edge_attr, self.dropout, **scale)
            branches.append(self.norm_local(h_local))
        branches.append(self.norm_attention(x + self.dropout(attended[:n])))
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        virtual = attended[n:] if virtual is not None else None
        return replace(state, x=self.norm_out(h + self.feed_forward(h)), edge_attr=edge_attr, virtual=virtual)
