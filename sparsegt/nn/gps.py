"""GPS layer: a local MPNN and a global attention in parallel, then a feed-forward block
(Rampasek et al., "Recipe for a General, Powerful, Scalable Graph Transformer", NeurIPS 2022).

    h_L = Norm(x + Dropout(MPNN(x, e)))          (GatedGCN: Norm(GatedGCN(x, e)), its residual,
                                                 BN, ReLU and dropout inside; as GraphGPS's norm1_local)
    h_A = Norm(x + Dropout(Attn(x)))
    h   = h_L + h_A
    out = Norm(h + FFN(h))                      FFN: C -> 2C -> C, ReLU, dropout

``local``: a local MPNN module (`sparsegt.nn.local`: returns ``(x, e)``, ``residual`` says whether it adds
its input itself), or its name ``"gine"``, ``"gatedgcn"`` or ``"none"``. ``attention``:

- ``"full"``: every node over every node of its own graph, through `sparse_attention` on
  ``patterns.full(batch)`` (no padding across graphs); pass the pattern in to build it once per batch;
- ``"pattern"``: softmax attention over any precomputed pattern passed as ``state.pattern``
  (an expander, ``khop``, a union...);
- ``"topk"``: each node keeps its ``topk`` best-scoring candidates (candidates: ``state.pattern``,
  default the full pattern);
- ``"performer"``: FAVOR+ linear attention per graph (`PerformerAttention`);
- ``"none"``: MPNN only.

Reads and returns a `LayerState`: ``x`` [N, C], ``edge_attr`` [E, C] (graph CSR order) or None,
``pattern``; ``x`` and ``edge_attr`` are replaced (``edge_attr`` changes only with GatedGCN).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..patterns import full
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .local import LOCAL_MODELS, local_update, make_local
from .performer import PerformerAttention
from .state import LayerState

__all__ = ["GPSLayer", "LOCAL_MODELS", "GLOBAL_ATTENTIONS"]

GLOBAL_ATTENTIONS = ("full", "pattern", "topk", "performer", "none")


class GPSLayer(nn.Module):
    """One GraphGPS layer.

    Args:
        channels: C. num_heads: H. local: local MPNN module or name (module docstring). attention: global
        attention kind.
        dropout: after each branch and in the FFN. attn_dropout: on the attention weights.
        norm: ``"batch"`` (GraphGPS default), ``"layer"`` or ``"none"``.
        topk: keys kept per node for ``attention="topk"``. performer_features: random features m.
    """

    def __init__(self, channels: int, num_heads: int, local: str | nn.Module | None = "gine",
                 attention: str = "full", dropout: float = 0.0, attn_dropout: float = 0.0, norm: str = "batch",
                 topk: int = 16, performer_features: int = 64) -> None:
        super().__init__()
        if attention not in GLOBAL_ATTENTIONS:
            raise ValueError(f"attention must be one of {GLOBAL_ATTENTIONS}, got {attention!r}")
        self.local_model = make_local(local, channels, dropout, norm, LOCAL_MODELS)
        if self.local_model is None and attention == "none":
            raise ValueError("a GPS layer needs a local model or a global attention (both are 'none')")
        self.attention_kind, self.topk = attention, int(topk)
        if self.local_model is not None:
            self.norm_local = make_norm(norm, channels)
        self.attention: nn.Module | None = None
        if attention == "performer":
            self.attention = PerformerAttention(channels, num_heads, performer_features)
        elif attention != "none":
            self.attention = SparseMultiheadAttention(channels, num_heads, dropout=attn_dropout)
        if self.attention is not None:
            self.norm_attention = make_norm(norm, channels)
        self.dropout = nn.Dropout(dropout)
        self.feed_forward = FeedForward(channels, 2, dropout)
        self.norm_out = make_norm(norm, channels)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        """``state.x`` [N, C]; ``state.graph``: the batch (local edges); ``state.edge_attr`` [E, C] or None;
        ``state.pattern``: [N, N] pattern for ``"full"`` (default ``full(graph)``), ``"pattern"``
        (required) and ``"topk"`` (the candidates; default ``full(graph)``). Returns the state with new
        ``x`` and ``edge_attr``."""
        x, graph, edge_attr = state.x, state.graph, state.edge_attr
        branches = []
        if self.local_model is not None:
            h_local, edge_attr = local_update(self.local_model, x, graph, edge_attr, self.dropout)
            branches.append(self.norm_local(h_local))
        if self.attention is not None:
            if self.attention_kind == "performer":
                h_attn = self.attention(x, graph)
            else:
                attention_pattern = state.pattern
                if attention_pattern is None:
                    if self.attention_kind == "pattern":
                        raise ValueError("GPSLayer(attention='pattern') needs state.pattern")
                    attention_pattern = full(graph)
                keep_top = self.topk if self.attention_kind == "topk" else None
                h_attn = self.attention(x, pattern=attention_pattern, keep_top=keep_top)
            branches.append(self.norm_attention(x + self.dropout(h_attn)))
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        return replace(state, x=self.norm_out(h + self.feed_forward(h)), edge_attr=edge_attr)
