"""`GraphTransformer`: encoders -> a stack of layers -> a task head, for every layer family.

    model = GraphTransformer(config, task, node_features, edge_features)
    out = model(batch)      # [N, num_outputs] node-level, [B, num_outputs] graph-level, [E, ...] edge-level

Read top to bottom: `forward` embeds the features (`FeatureEncoder`, plus Laplacian / random-walk
encodings when configured) into a `LayerState`, lets the layer family prepare what its layers need
**once per batch** (`Family.prepare`: `full`, expander, Exphormer's token pattern, GRIT's RRWP pairs),
runs ``state = layer(state)`` for every layer, and reads out. The families are one explicit table,
`sparsegt.models.families.FAMILIES`.
Nothing depends on which graphs share a batch: patterns never cross graphs, pooling runs per graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..data.spec import FeatureSpec, TaskSpec
from ..graph import Graph
from ..nn import LayerState, sparsify_feed_forward
from .config import ModelConfig
from .encoders import FeatureEncoder
from .families import FAMILIES, Family
from .heads import EdgeHead, MLPHead, graph_pool

__all__ = ["GraphTransformer", "required_encodings"]


def required_encodings(config: ModelConfig) -> dict[str, Any]:
    """What `sparsegt.encodings.add_encodings` must precompute for this model: ``{"lap_pe": k, "rwse": K}``
    and the Laplacian's options when they are not the defaults (only the encodings the config uses);
    ``{"hop_features": T}`` for LargeGT (`sparsegt.data.hop_features.add_hop_features`, not add_encodings).
    GRIT's RRWP is computed per batch inside the model: it has
    n^2 * K values per graph (all pairs): 11 GiB for PATTERN's training split at K = 21, too much to keep,
    while the batched dense powers cost a few milliseconds per graph."""
    needed: dict[str, Any] = {}
    if config.lap_pe is not None:
        needed["lap_pe"] = config.lap_pe.k
        if config.lap_pe.normalization != "sym":
            needed["lap_normalization"] = config.lap_pe.normalization
        if config.lap_pe.skip_trivial:
            needed["lap_skip_trivial"] = True
    if config.rwse is not None:
        needed["rwse"] = config.rwse.steps
    if config.layer == "largegt":
        needed["hop_features"] = config.feature_hops  # Â X .. Â^T X of the whole graph (data.hop_features)
    return needed


class GraphTransformer(nn.Module):
    """Encoders, ``config.num_layers`` layers of ``config.layer``, and a head for ``task``.

    Args:
        config: the architecture. task: what to predict (level, kind, num_outputs).
        node_features, edge_features: the form of ``batch.x`` and ``batch.edge_attr``.
    """

    def __init__(self, config: ModelConfig, task: TaskSpec, node_features: FeatureSpec,
                 edge_features: FeatureSpec | None = None) -> None:
        super().__init__()
        edge_features = edge_features or FeatureSpec()
        self.config, self.task = config, task
        self.node_features, self.edge_features = node_features, edge_features
        self.has_edge_features = edge_features.kind != "none"
        C = config.hidden
        pe_configs = {"lap_pe": config.lap_pe, "rwse": config.rwse}
        concat = sum(pe.dim for pe in pe_configs.values() if pe is not None and pe.combine == "concat")
        self.node_encoder = FeatureEncoder(node_features, C - concat, "node")
        self.pe_encoders = nn.ModuleDict()
        for name, pe in pe_configs.items():
            if pe is not None:
                width = C if pe.combine == "add" else pe.dim
                self.pe_encoders[name] = _positional_encoder(name, pe, width)
        self.edge_encoder = None
        if self.has_edge_features or config.dummy_edge:
            self.edge_encoder = FeatureEncoder(edge_features, C, "edge")
            if not self.has_edge_features:  # DummyEdge, initialised as GraphGPS's nn.Embedding(1, C)
                nn.init.normal_(self.edge_encoder.constant)
        self.family: type[Family] = FAMILIES[config.layer]
        # what the family's layers share (GRIT's rrwp_encoder, mpnn_vn's virtual_embedding, Exphormer's
        # exphormer_embeddings), owned by the model under those names (checkpoint keys)
        for name, shared in self.family.make_shared(config).items():
            setattr(self, name, shared)
        self.layers = nn.ModuleList(self.family.make_layer(config, self.has_edge_features)
                                    for _ in range(config.num_layers))
        if config.ffn_topk is not None:
            _sparsify_ffns(self.layers, config)
        head = EdgeHead if task.level == "edge" else MLPHead
        self.head: nn.Module = head(C, task.num_outputs, config.head_layers, config.head_shrink, config.head_l2norm)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Graph) -> Tensor:
        """batch: a `Graph` (a `Graph.batch` of graphs, or one graph) -> task outputs."""
        state = self.family.prepare(self, self.encode(batch))
        for layer in self.layers:
            state = layer(state)
        return self.read_out(state.x, batch, state.virtual)

    def encode(self, batch: Graph) -> LayerState:
        """The first `LayerState`: encoded nodes, edges, and the encodings the layers read (``pe``)."""
        x = self.encode_nodes(batch)
        edge_attr = None
        if self.edge_encoder is not None:
            edge_attr = self.edge_encoder(batch.edge_attr, batch.num_edges)
        pe = None
        if self.config.lap_pe is not None and self.config.lap_pe.combine == "gate":
            pe = _encode_positions("lap_pe", self.pe_encoders["lap_pe"], batch)
        return LayerState(x, batch, edge_attr, pe=pe)

    def encode_nodes(self, batch: Graph) -> Tensor:
        x = self.node_encoder(batch.x, batch.num_nodes)
        parts, added = [x], None
        for name, encoder in self.pe_encoders.items():
            pe = getattr(self.config, name)
            if pe.combine == "gate":  # EquivStableLapPE: kept apart, read by the layers (LayerState.pe)
                continue
            h = _encode_positions(name, encoder, batch)
            if pe.combine == "concat":
                parts.append(h.to(x.dtype))
            else:
                added = h if added is None else added + h
        x = torch.cat(parts, dim=-1) if len(parts) > 1 else x
        return x if added is None else x + added.to(x.dtype)

    def read_out(self, x: Tensor, batch: Graph, virtual: Tensor | None) -> Tensor:
        level = self.task.level
        if level == "node":
            return self.head(x)
        if level == "edge":
            return self.head(x, batch)
        if self.config.pooling == "virtual":
            pooled = virtual.reshape(batch.num_graphs, -1, x.shape[1]).mean(1)
        else:
            pooled = graph_pool(x, batch, self.config.pooling)
        return self.head(pooled)


def _sparsify_ffns(layers: nn.ModuleList, config: ModelConfig) -> None:
    """``model.ffn_topk``: a top-k activation in every `FeedForward` of the layers (`sparsify_feed_forward`)."""
    try:
        sparsify_feed_forward(layers, keep=float(config.ffn_topk), rule=config.ffn_topk_rule)
    except ValueError:
        raise ValueError(f"model.ffn_topk={config.ffn_topk}: {config.layer!r} layers have no feed-forward block "
                         "to sparsify; use a layer family with an FFN (gps, gt, grit, exphormer, topk, largegt) or set "
                         "model.ffn_topk=null") from None


def _positional_encoder(name: str, pe, width: int) -> nn.Module:
    """The `sparsegt.encodings` module that embeds a precomputed encoding (``node_data``) to ``width``."""
    from ..encodings import LapPEEncoder, RWSEEncoder

    if name == "lap_pe":
        return LapPEEncoder(pe.k, width, pe.kind, sign_flip=pe.sign_flip)
    return RWSEEncoder(pe.steps, width)


_ENCODING_FIELDS = {"lap_pe": ("lap_vec", "lap_val", "lap_mask"), "rwse": ("rwse",)}


def _encode_positions(name: str, encoder: nn.Module, batch: Graph) -> Tensor:
    """Run a PE/SE encoder on the batch's precomputed ``node_data`` (from `add_encodings`)."""
    fields = _ENCODING_FIELDS[name]
    missing = [f for f in fields if f not in batch.node_data]
    if missing:
        raise ValueError(f"the model uses {name} but the batch has no node_data {missing}: precompute it "
                         "with sparsegt.encodings.add_encodings(graphs, **required_encodings(config))")
    dtype = next(encoder.parameters()).dtype  # precomputed encodings are float32; the model may not be
    data = {f: batch.node_data[f] for f in fields}
    data = {f: t.to(dtype) if t.is_floating_point() else t for f, t in data.items()}
    if name == "lap_pe":
        return encoder(data["lap_vec"], data["lap_val"], data["lap_mask"], batch.batch_index)
    return encoder(data["rwse"])
