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
  default the full pattern), exactly (``topk_rule="exact"``, a sort) or about ``topk`` of them by Spark's
  statistical top-k (``"statistical"``: a Gaussian-quantile threshold, no sort; `patterns.threshold_topk`);
- ``"performer"``: FAVOR+ linear attention per graph (`PerformerAttention`);
- ``"combiner"``: Combiner's full attention through region summaries (`CombinerAttention`): each node
  attends to the nodes of its own region directly and to the other regions of its graph through one
  summary each; the regions are ``state.pattern`` when it is a `CombinerPattern`, else contiguous blocks of
  ``combiner_block`` node ids of each graph (`patterns.block_regions`);
- ``"gin_attention"`` / ``"pna_attention"``: Graph-Aware Isomorphic Attention (`GINAttention`): a GIN (PNA)
  update per head over the softmax weights of the full pattern (or ``state.pattern``) read as a graph;
- ``"none"``: MPNN only.

Reads and returns a `LayerState`: ``x`` [N, C], ``edge_attr`` [E, C] (graph CSR order) or None,
``pattern``; ``x`` and ``edge_attr`` are replaced (``edge_attr`` changes only with GatedGCN).

Called PyG's way, ``layer(x, edge_index, batch=None, **kwargs) -> x`` (the call of PyG's ``GPSConv``),
a layer takes PyG's tensors directly: ``kwargs`` go to the local module (``edge_attr=``...) and the
attention builds ``full(batch)`` (or takes ``pattern=``). `GPSLayer.gpsconv` builds a layer from
``GPSConv``'s constructor arguments and `GPSLayer.from_gpsconv` from a built ``GPSConv``, weights
included; both compute what ``GPSConv`` computes (its ``to_dense_batch`` + ``key_padding_mask``
attention is ``full(batch)`` here, without padding). Options that cannot be matched (another
activation, PyG's graph-mode LayerNorm, GraphNorm, PyG's Performer, ``add_bias_kv``...) are a
`ValueError` naming the option.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from ..graph import Graph, ptr_from_batch
from ..patterns import CombinerPattern, block_regions, combiner_pattern, full
from .attention import SparseMultiheadAttention
from .blocks import FeedForward, make_norm
from .combiner import CombinerAttention
from .gin_attention import GINAttention
from .local import LOCAL_MODELS, EdgeIndexConv, local_update, make_local
from .performer import PerformerAttention
from .renamed import renamed_keywords
from .sparse_activation import TOPK_RULES
from .state import LayerState

__all__ = ["GPSLayer", "LOCAL_MODELS", "GLOBAL_ATTENTIONS", "state_dict_from_gpsconv"]

GLOBAL_ATTENTIONS = ("full", "pattern", "topk", "performer", "combiner", "gin_attention", "pna_attention", "none")


class GPSLayer(nn.Module):
    """One GraphGPS layer.

    Args:
        hidden: C. num_heads: H. local: local MPNN module or name (module docstring). attention: global
        attention kind.
        dropout: after each branch and in the FFN. attn_dropout: on the attention weights.
        norm: ``"batch"`` (GraphGPS default), ``"layer"`` or ``"none"``.
        topk: keys kept per node for ``attention="topk"``. performer_features: random features m.
        topk_rule: ``"exact"`` or ``"statistical"`` selection for ``attention="topk"``.
        combiner_block: nodes per region for ``attention="combiner"`` when the state brings no regions.
    """

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, num_heads: int, local: str | nn.Module | None = "gine",
                 attention: str = "full", dropout: float = 0.0, attn_dropout: float = 0.0, norm: str = "batch",
                 topk: int = 16, performer_features: int = 64, combiner_block: int = 16,
                 topk_rule: str = "exact") -> None:
        super().__init__()
        if attention not in GLOBAL_ATTENTIONS:
            raise ValueError(f"attention must be one of {GLOBAL_ATTENTIONS}, got {attention!r}")
        self.local_model = make_local(local, hidden, dropout, norm, LOCAL_MODELS)
        if self.local_model is None and attention == "none":
            raise ValueError("a GPS layer needs a local model or a global attention (both are 'none')")
        self.attention_kind, self.topk, self.combiner_block = attention, int(topk), int(combiner_block)
        if topk_rule not in TOPK_RULES:
            raise ValueError(f"topk_rule must be one of {TOPK_RULES}, got {topk_rule!r}")
        self.topk_rule = topk_rule
        if attention == "combiner" and self.combiner_block < 1:
            raise ValueError(f"combiner_block must be >= 1 nodes per region, got {combiner_block}")
        if self.local_model is not None:
            self.norm_local = make_norm(norm, hidden)
        self.attention: nn.Module | None = None
        if attention == "performer":
            self.attention = PerformerAttention(hidden, num_heads, performer_features)
        elif attention == "combiner":
            self.attention = CombinerAttention(hidden, num_heads, dropout=attn_dropout)
        elif attention in ("gin_attention", "pna_attention"):
            self.attention = GINAttention(hidden, num_heads, attention.removesuffix("_attention"),
                                          attn_dropout=attn_dropout)
        elif attention != "none":
            self.attention = SparseMultiheadAttention(hidden, num_heads, dropout=attn_dropout)
        if self.attention is not None:
            self.norm_attention = make_norm(norm, hidden)
        self.dropout = nn.Dropout(dropout)
        self.feed_forward = FeedForward(hidden, 2, dropout)
        self.norm_out = make_norm(norm, hidden)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, state: LayerState | Tensor, edge_index: Tensor | None = None, batch: Tensor | None = None,
                *, pattern: Graph | None = None, **kwargs: Any) -> LayerState | Tensor:
        """``layer(state) -> state`` (below), or PyG's way ``layer(x, edge_index, batch=None, **kwargs) -> x``.

        LayerState call: ``state.x`` [N, C]; ``state.graph``: the batch (local edges); ``state.edge_attr``
        [E, C] or None; ``state.pattern``: [N, N] pattern for ``"full"`` (default ``full(graph)``),
        ``"pattern"`` (required) and ``"topk"`` (the candidates; default ``full(graph)``). Returns the state
        with new ``x`` and ``edge_attr``.

        PyG call (as ``GPSConv``): ``x`` [N, C]; ``edge_index`` [2, E] (row 0 sources, row 1 targets);
        ``batch`` [N] the graph of every node, sorted (None: one graph); ``kwargs`` go to the local module
        (``edge_attr`` [E, F] in ``edge_index`` order...); ``pattern``: the attention pattern, to build
        once per batch and share between layers (default ``full(batch)``). Returns x [N, C].
        """
        if isinstance(state, LayerState):
            if edge_index is not None or batch is not None or pattern is not None or kwargs:
                raise ValueError("GPSLayer called with a LayerState takes nothing else (edge_index, batch, pattern "
                                 "and edge_attr are fields of the state)")
            return self._forward_state(state)
        if not isinstance(state, Tensor) or not isinstance(edge_index, Tensor):
            raise ValueError("GPSLayer is called as layer(state: LayerState) or PyG's way, layer(x [N, C], "
                             f"edge_index [2, E], batch [N]); got {type(state).__name__}, "
                             f"{type(edge_index).__name__}")
        return self._forward_pyg(state, edge_index, batch, pattern, kwargs)

    def _forward_state(self, state: LayerState) -> LayerState:
        x, graph, edge_attr = state.x, state.graph, state.edge_attr
        h_local = None
        if self.local_model is not None:
            h_local, edge_attr = local_update(self.local_model, x, graph, edge_attr, self.dropout)
        h_attn = self._attend(x, graph, state.pattern) if self.attention is not None else None
        return replace(state, x=self._combine(x, h_local, h_attn), edge_attr=edge_attr)

    def _forward_pyg(self, x: Tensor, edge_index: Tensor, batch: Tensor | None, pattern: Graph | None,
                     kwargs: dict[str, Any]) -> Tensor:
        num_nodes = x.shape[0]
        nodes = Graph.empty(num_nodes) if batch is None else Graph.empty(
            num_nodes, ptr=ptr_from_batch(batch.to(x.device), num_nodes=num_nodes))
        h_local = None
        if isinstance(self.local_model, EdgeIndexConv):  # GPSConv: h = x + Dropout(conv(x, edge_index, **kwargs))
            h_local = x + self.dropout(self.local_model.conv(x, edge_index, **kwargs))
        elif self.local_model is not None:  # a module of this package's contract needs the CSR graph
            edge_attr = kwargs.pop("edge_attr", None)
            if kwargs:
                raise ValueError(f"GPSLayer: the local model {type(self.local_model).__name__} takes edge_attr only, "
                                 f"got {sorted(kwargs)}")
            graph = Graph.from_edge_index(edge_index, num_nodes, edge_attr, ptr=nodes.ptr)
            h_local, edge_out = local_update(self.local_model, x, graph, graph.edge_attr, self.dropout)
            if edge_out is not graph.edge_attr:
                raise ValueError(f"GPSLayer: the local model {type(self.local_model).__name__} updates the edge "
                                 "states, which the PyG call layer(x, edge_index, batch) -> x cannot return; call "
                                 "the layer with a LayerState instead")
        h_attn = self._attend(x, nodes, pattern) if self.attention is not None else None
        return self._combine(x, h_local, h_attn)

    def _attend(self, x: Tensor, graph: Graph, pattern: Graph | CombinerPattern | None) -> Tensor:
        """[N, C] the global attention's output before its dropout and residual."""
        if self.attention_kind == "performer":
            return self.attention(x, graph)
        if self.attention_kind == "combiner":
            if not isinstance(pattern, CombinerPattern):
                pattern = combiner_pattern(graph, block_regions(graph, self.combiner_block))
            return self.attention(x, pattern)
        if pattern is None:
            if self.attention_kind == "pattern":
                raise ValueError("GPSLayer(attention='pattern') needs state.pattern")
            pattern = full(graph)
        if isinstance(self.attention, GINAttention):
            return self.attention(x, pattern)
        if self.attention_kind == "topk":
            return self.attention(x, pattern=pattern, keep_top=self.topk, keep_top_rule=self.topk_rule)
        return self.attention(x, pattern=pattern)

    def _combine(self, x: Tensor, h_local: Tensor | None, h_attn: Tensor | None) -> Tensor:
        """``Norm(h + FFN(h))`` with ``h = Norm(h_local) + Norm(x + Dropout(h_attn))``: [N, C]."""
        branches = []
        if h_local is not None:
            branches.append(self.norm_local(h_local))
        if h_attn is not None:
            branches.append(self.norm_attention(x + self.dropout(h_attn)))
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        return self.norm_out(h + self.feed_forward(h))

    # ------------------------------------------------------------------ PyG's GPSConv
    @classmethod
    def gpsconv(cls, channels: int, conv: nn.Module | None, heads: int = 1, dropout: float = 0.0,
                act: Any = "relu", act_kwargs: Mapping[str, Any] | None = None, norm: str | None = "batch_norm",
                norm_kwargs: Mapping[str, Any] | None = None, attn_type: str = "multihead",
                attn_kwargs: Mapping[str, Any] | None = None) -> GPSLayer:
        """A layer built from PyG ``GPSConv``'s arguments that computes what ``GPSConv`` computes.

        ``conv`` is called PyG's way, ``conv(x, edge_index, **kwargs)`` (wrapped in `EdgeIndexConv`).
        Matched: ``act="relu"``; ``norm`` ``"batch_norm"`` (``norm_kwargs`` eps, momentum), ``"layer_norm"``
        with ``norm_kwargs={"mode": "node"}`` (eps), or None; ``attn_type="multihead"`` with ``attn_kwargs``
        dropout, bias. Anything else is a ValueError that names it.
        """
        norm_kind, norm_settings = _gpsconv_norm(norm, norm_kwargs)
        if not _is_relu(act) or act_kwargs:
            raise ValueError(f"GPSLayer's feed-forward uses ReLU; act={act!r} act_kwargs={act_kwargs!r} cannot be "
                             "matched (GPSConv's act='relu')")
        if attn_type != "multihead":
            raise ValueError(f"attn_type={attn_type!r} cannot be matched: only GPSConv's 'multihead' attention is "
                             "(PyG's PerformerAttention is not sparsegt's PerformerAttention)")
        attn_kwargs = dict(attn_kwargs or {})
        unmatched = sorted(set(attn_kwargs) - {"dropout", "bias"})
        if unmatched:
            raise ValueError(f"attn_kwargs {unmatched} cannot be matched: GPSLayer's attention takes dropout and bias")
        local = None if conv is None else conv if isinstance(conv, EdgeIndexConv) else EdgeIndexConv(conv)
        layer = cls(channels, heads, local, "full", dropout=dropout, norm=norm_kind)
        attn_dropout = float(attn_kwargs.get("dropout", 0.0))
        layer.attention = SparseMultiheadAttention(channels, heads, dropout=attn_dropout,
                                                   bias=bool(attn_kwargs.get("bias", True)))
        norms = [layer.norm_attention, layer.norm_out] + ([layer.norm_local] if local is not None else [])
        for module in norms:
            for name, value in norm_settings.items():
                setattr(module, name, value)
        return layer

    @classmethod
    def from_gpsconv(cls, gps: nn.Module) -> GPSLayer:
        """A layer computing what the built PyG ``GPSConv`` ``gps`` computes, with a copy of its weights
        (and of its ``conv``): ``gps(x, edge_index, batch, **kw)`` equals ``layer(x, edge_index, batch, **kw)``."""
        attn = gps.attn
        if not isinstance(attn, nn.MultiheadAttention):
            raise ValueError(f"GPSConv's attention {type(attn).__name__} cannot be matched: only 'multihead' is")
        if attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim:
            raise ValueError("GPSConv's MultiheadAttention uses add_bias_kv, add_zero_attn or kdim/vdim, which "
                             "GPSLayer's attention does not have")
        norm, norm_kwargs = _gpsconv_norm_of(gps.norm1)
        layer = cls.gpsconv(gps.channels, copy.deepcopy(gps.conv), gps.heads, gps.dropout,
                            "relu" if isinstance(gps.mlp[1], nn.ReLU) else gps.mlp[1], None, norm, norm_kwargs,
                            gps.attn_type, {"dropout": attn.dropout, "bias": attn.in_proj_bias is not None})
        weight = attn.in_proj_weight
        layer.to(device=weight.device, dtype=weight.dtype)  # before loading: load_state_dict keeps our dtype
        layer.load_state_dict(state_dict_from_gpsconv(gps.state_dict(), has_local=gps.conv is not None))
        return layer.train(gps.training)


def state_dict_from_gpsconv(state: Mapping[str, Tensor], has_local: bool = True) -> dict[str, Tensor]:
    """A PyG ``GPSConv`` state dict with `GPSLayer`'s names (for a layer from `GPSLayer.gpsconv`).

    ``conv.*`` -> ``local_model.conv.*``, ``attn.*`` -> ``attention.*`` (the same tensors as
    ``torch.nn.MultiheadAttention``), ``mlp.0`` / ``mlp.3`` -> ``feed_forward.lin1`` / ``lin2``, ``norm1/2/3``
    -> ``norm_local`` / ``norm_attention`` / ``norm_out`` (PyG's BatchNorm wrapper's ``module.`` dropped);
    ``norm1`` is dropped without a local model (GPSConv builds it unused).
    """
    prefixes = {"conv.": "local_model.conv.", "attn.": "attention.", "mlp.0.": "feed_forward.lin1.",
                "mlp.3.": "feed_forward.lin2.", "norm1.module.": "norm_local.", "norm1.": "norm_local.",
                "norm2.module.": "norm_attention.", "norm2.": "norm_attention.", "norm3.module.": "norm_out.",
                "norm3.": "norm_out."}
    out = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"GPSConv state key {key!r} has no GPSLayer counterpart")
        if prefix.startswith("norm1") and not has_local:
            continue
        out[prefixes[prefix] + key[len(prefix):]] = value
    return out


def _is_relu(act: Any) -> bool:
    return (isinstance(act, str) and act.lower() == "relu") or isinstance(act, nn.ReLU)


def _gpsconv_norm(norm: str | None, norm_kwargs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """GPSConv's ``norm`` / ``norm_kwargs`` -> (`make_norm` kind, attributes to set on the norm modules)."""
    settings = dict(norm_kwargs or {})
    if norm is None:
        if settings:
            raise ValueError(f"norm=None takes no norm_kwargs, got {sorted(settings)}")
        return "none", {}
    name = norm.lower().replace("_", "") if isinstance(norm, str) else repr(norm)
    if name in ("batchnorm", "batch"):
        allowed, kind = {"eps", "momentum"}, "batch"
    elif name in ("layernorm", "layer"):
        mode = settings.pop("mode", "graph")
        if mode != "node":
            raise ValueError(f"norm={norm!r} is PyG's LayerNorm with mode={mode!r}: it normalises over all nodes of "
                             "a graph, which GPSLayer does not implement; use norm_kwargs={'mode': 'node'} (LayerNorm "
                             "per node) or norm='batch_norm'")
        allowed, kind = {"eps"}, "layer"
    else:
        raise ValueError(f"norm={norm!r} cannot be matched: GPSLayer takes 'batch_norm', 'layer_norm' with "
                         "norm_kwargs={'mode': 'node'}, or None")
    unmatched = sorted(set(settings) - allowed)
    if unmatched:
        raise ValueError(f"norm_kwargs {unmatched} cannot be matched for norm={norm!r} "
                         f"(GPSLayer takes {sorted(allowed)})")
    return kind, settings


def _gpsconv_norm_of(module: nn.Module | None) -> tuple[str | None, dict[str, Any]]:
    """The ``norm`` / ``norm_kwargs`` of a built GPSConv's norm module (PyG's BatchNorm or LayerNorm)."""
    if module is None:
        return None, {}
    kind = type(module).__name__
    if kind == "BatchNorm" and isinstance(getattr(module, "module", None), nn.BatchNorm1d):
        inner = module.module
        if not inner.affine or not inner.track_running_stats:
            raise ValueError("GPSConv's BatchNorm without affine or running statistics cannot be matched")
        return "batch_norm", {"eps": inner.eps, "momentum": inner.momentum}
    if kind == "LayerNorm" and hasattr(module, "mode"):
        if not module.affine:
            raise ValueError("GPSConv's LayerNorm without affine parameters cannot be matched")
        return "layer_norm", {"mode": module.mode, "eps": module.eps}
    raise ValueError(f"GPSConv's norm {kind} cannot be matched: GPSLayer takes BatchNorm, LayerNorm(mode='node') "
                     "or none")
