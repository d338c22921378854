"""GPS layer: a local MPNN and a global attention in parallel, then a feed-forward block
(Rampasek et al., "Recipe for a General, Powerful, Scalable Graph Transformer", NeurIPS 2022).

    h_L = Norm(x + Dropout(MPNN(x, e)))          (GatedGCN: Norm(GatedGCN(x, e)), its residual,
                                                 BN, ReLU and dropout inside; as GraphGPS's norm1_local)
    h_A = Norm(x + Dropout(Attn(x)))
    h   = h_L + h_A
    out = Norm(h + FFN(h))                      FFN: C -> 2C -> C, ReLU, dropout

``local``: ``"gine"``, ``"gatedgcn"`` or ``"none"``. ``attention``:

- ``"full"``: every node over every node of its own graph, through `sparse_attention` on
  ``patterns.full(batch)`` (no padding across graphs); pass the pattern in to build it once per batch;
- ``"pattern"``: softmax attention over any precomputed pattern passed as ``attention_pattern``
  (an expander, ``khop``, a union...);
- ``"topk"``: each node keeps its ``topk`` best-scoring candidates (candidates: ``attention_pattern``,
  default the full pattern);
- ``"performer"``: FAVOR+ linear attention per graph (`PerformerAttention`);
- ``"none"``: MPNN only.

Shapes: ``x`` [N, C], ``edge_attr`` [E, C] (graph CSR order) or None. Returns ``(x, edge_attr)``;
``edge_attr`` changes only with GatedGCN.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..graph import Graph
from ..patterns import full
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .gatedgcn import GatedGCNConv
from .gine import GINEConv
from .performer import PerformerAttention

__all__ = ["GPSLayer", "LOCAL_MODELS", "GLOBAL_ATTENTIONS"]

LOCAL_MODELS = ("gine", "gatedgcn", "none")
GLOBAL_ATTENTIONS = ("full", "pattern", "topk", "performer", "none")


class GPSLayer(nn.Module):
    """One GraphGPS layer.

    Args:
        channels: C. num_heads: H. local: local MPNN kind. attention: global attention kind.
        dropout: after each branch and in the FFN. attn_dropout: on the attention weights.
        norm: ``"batch"`` (GraphGPS default), ``"layer"`` or ``"none"``.
        topk: keys kept per node for ``attention="topk"``. performer_features: random features m.
    """

    def __init__(self, channels: int, num_heads: int, local: str = "gine", attention: str = "full",
                 dropout: float = 0.0, attn_dropout: float = 0.0, norm: str = "batch", topk: int = 16,
                 performer_features: int = 64) -> None:
        super().__init__()
        if local not in LOCAL_MODELS:
            raise ValueError(f"local must be one of {LOCAL_MODELS}, got {local!r}")
        if attention not in GLOBAL_ATTENTIONS:
            raise ValueError(f"attention must be one of {GLOBAL_ATTENTIONS}, got {attention!r}")
        if local == "none" and attention == "none":
            raise ValueError("a GPS layer needs a local model or a global attention (both are 'none')")
        self.local_kind, self.attention_kind, self.topk = local, attention, int(topk)
        self.local_model: nn.Module | None = None
        if local == "gine":
            self.local_model = GINEConv(channels)
            self.norm_local = make_norm(norm, channels)
        elif local == "gatedgcn":
            self.local_model = GatedGCNConv(channels, dropout=dropout, batch_norm=norm == "batch")
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

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None,
                attention_pattern: Graph | None = None) -> tuple[Tensor, Tensor | None]:
        """x [N, C]; graph: the batch (local edges); edge_attr [E, C] or None;
        attention_pattern: [N, N] pattern for ``"full"`` (default ``full(graph)``), ``"pattern"``
        (required) and ``"topk"`` (the candidates; default ``full(graph)``)."""
        branches = []
        if self.local_model is not None:
            if self.local_kind == "gatedgcn":
                h_local, edge_attr = self.local_model(x, graph, edge_attr)
            else:
                h_local = x + self.dropout(self.local_model(x, graph, edge_attr))
            branches.append(self.norm_local(h_local))
        if self.attention is not None:
            if self.attention_kind == "performer":
                h_attn = self.attention(x, graph)
            else:
                if attention_pattern is None:
                    if self.attention_kind == "pattern":
                        raise ValueError("GPSLayer(attention='pattern') needs attention_pattern")
                    attention_pattern = full(graph)
                keep_top = self.topk if self.attention_kind == "topk" else None
                h_attn = self.attention(x, pattern=attention_pattern, keep_top=keep_top)
            branches.append(self.norm_attention(x + self.dropout(h_attn)))
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        return self.norm_out(h + self.feed_forward(h)), edge_attr
