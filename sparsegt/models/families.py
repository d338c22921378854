"""The layer families a `GraphTransformer` can stack, as one explicit table: ``FAMILIES[config.layer]``.

A family says three things, each in one place:

- ``make_layer(config, edge_features)``: one layer (every layer is ``layer(state) -> state``, `LayerState`);
- ``make_shared(config)``: the parameters its layers share, owned by the model under the names given
  (GRIT's RRWP encoder, the virtual node's embedding, Exphormer's token and edge-type vectors);
- ``prepare(model, state)``: what its layers need, built **once per batch** from the encoded batch (the
  attention pattern, the initial virtual tokens and pair states, per-batch constants).

A new family is a layer file plus one line in ``FAMILIES`` (a class here or anywhere: the table holds the
class itself, there is no registry behind it). ``ModelConfig.layer`` accepts the table's names.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..data.hop_features import HOP_FEATURES
from ..data.spec import TARGET_MASK
from ..nn import (
    ExphormerEmbeddings,
    ExphormerInputs,
    ExphormerLayer,
    GPSLayer,
    GRITLayer,
    GTLayer,
    LargeGTInputs,
    LargeGTLayer,
    LayerState,
    MPNNLayer,
    MPNNVirtualNodeLayer,
    TopKAttentionLayer,
    exphormer_pattern,
    pe_distance,
    rrwp_pairs,
    token_pattern,
)
from ..nn.segment import edge_positions
from ..patterns import block_regions, combiner_pattern, expander, full, seed_neighbourhood, union
from .encoders import RRWPEncoder

if TYPE_CHECKING:
    from .config import ModelConfig
    from .graph_transformer import GraphTransformer

__all__ = ["Family", "FAMILIES", "GPSFamily", "GTFamily", "GRITFamily", "ExphormerFamily",
           "MPNNVirtualNodeFamily", "TopKFamily", "MPNNFamily", "LargeGTFamily"]


class Family:
    """The defaults: no shared parameters, nothing to prepare (the layers read ``state.graph``)."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def make_shared(config: ModelConfig) -> dict[str, nn.Module | nn.Parameter]:
        return {}

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        return state


class GPSFamily(Family):
    """`GPSLayer`; the attention pattern (``full``, graph edges + an expander, or Combiner's regions) built once
    per batch."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        attention = {"expander": "pattern"}.get(c.attention, c.attention)
        return GPSLayer(c.hidden, c.num_heads, c.local, attention, attn_dropout=c.attn_dropout, topk=c.topk,
                        performer_features=c.performer_features, combiner_block=c.combiner_block,
                        topk_rule=c.topk_rule, dropout=c.dropout, norm=c.norm)

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        c, batch = model.config, state.graph
        pattern = None
        if c.attention in ("full", "topk", "gin_attention", "pna_attention"):
            pattern = full(batch)
        elif c.attention == "expander":
            pattern = union(batch.pattern(), expander(batch, c.expander_degree, c.seed))
        elif c.attention == "combiner":
            pattern = combiner_pattern(batch, block_regions(batch, c.combiner_block))
        return replace(state, pattern=pattern)


class GTFamily(Family):
    """`GTLayer` over the graph's own edges (with edge states when the data has edge features)."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        return GTLayer(c.hidden, c.num_heads, edge_features=edge_features, attn_dropout=c.attn_dropout,
                       dropout=c.dropout, norm=c.norm)


class GRITFamily(Family):
    """`GRITLayer` on all pairs of each graph: RRWP pair states and the log degree, once per batch."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        return GRITLayer(c.hidden, c.num_heads, attn_dropout=c.attn_dropout, dropout=c.dropout, norm=c.norm)

    @staticmethod
    def make_shared(config: ModelConfig) -> dict[str, nn.Module | nn.Parameter]:
        return {"rrwp_encoder": RRWPEncoder(config.rrwp_steps, config.hidden)}

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        batch, edge_attr = state.graph, state.edge_attr
        pattern = full(batch)
        with torch.no_grad():
            probabilities = rrwp_pairs(batch, pattern, model.config.rrwp_steps)  # P^k[key, query], as GRIT's code
        position = edge_positions(pattern, batch.pattern()) if edge_attr is not None else None
        x, pair = model.rrwp_encoder(state.x, pattern, probabilities, edge_attr, position)
        log_degree = torch.log1p(batch.degree().to(x.dtype))
        return replace(state, x=x, pattern=pattern, pair=pair, context=log_degree)


class ExphormerFamily(Family):
    """`ExphormerLayer`: the typed token pattern, the initial virtual tokens and the edge gates, once per batch."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        pe_gate = c.lap_pe is not None and c.lap_pe.combine == "gate"
        return ExphormerLayer(c.hidden, c.num_heads, c.local, attn_dropout=c.attn_dropout, pe_gate=pe_gate,
                              dropout=c.dropout, norm=c.norm)

    @staticmethod
    def make_shared(config: ModelConfig) -> dict[str, nn.Module | nn.Parameter]:
        # initial virtual tokens and the edge-type gate vectors, shared by all layers
        return {"exphormer_embeddings": ExphormerEmbeddings(config.hidden, config.num_virtual)}

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        c, batch, edge_attr = model.config, state.graph, state.edge_attr
        structure = exphormer_pattern(batch, c.expander_degree, c.num_virtual, c.seed)
        embeddings = model.exphormer_embeddings
        virtual = embeddings.virtual_states(batch.num_graphs)
        # the encoded input features gate the attention's graph edges in every layer; the DummyEdge
        # vector is one gate for all of them (the typed-keys path of ExphormerAttention)
        gate_features, graph_edge = edge_attr, None
        if edge_attr is not None and not model.has_edge_features:
            gate_features, graph_edge = None, model.edge_encoder.constant
        distance = pe_distance(state.pe, batch) if state.pe is not None else None  # the same in every layer
        inputs = ExphormerInputs(embeddings.edge_types(graph_edge), gate_features, distance)
        return replace(state, pattern=structure, virtual=virtual, context=inputs)


class MPNNVirtualNodeFamily(Family):
    """`MPNNVirtualNodeLayer`: one learned virtual token per graph, the same initial vector for all."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        local = c.local if c.local != "none" else "gine"
        return MPNNVirtualNodeLayer(c.hidden, local, dropout=c.dropout, norm=c.norm)

    @staticmethod
    def make_shared(config: ModelConfig) -> dict[str, nn.Module | nn.Parameter]:
        return {"virtual_embedding": nn.Parameter(torch.zeros(1, config.hidden))}

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        return replace(state, virtual=model.virtual_embedding.expand(state.graph.num_graphs, -1))


class TopKFamily(Family):
    """`TopKAttentionLayer`; its candidates (all nodes of each graph) built once per batch."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        return TopKAttentionLayer(c.hidden, c.num_heads, c.topk, attn_dropout=c.attn_dropout, dropout=c.dropout,
                                  norm=c.norm)

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        return replace(state, pattern=full(state.graph))


class MPNNFamily(Family):
    """A plain `MPNNLayer` stack; the kind is the family's name (``"gine"``, ``"gatedgcn"``, ``"gcn"``)."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        return MPNNLayer(config.layer, config.hidden, dropout=config.dropout, norm=config.norm)


class LargeGTFamily(Family):
    """`LargeGTLayer`: per batch, the seeds (target rows), their 2-hop token pattern and the encoded hop tokens.

    The batch must carry ``node_data["hop_x"]`` [n, T, F] (`sparsegt.data.hop_features`, precomputed on the
    whole graph; ``required_encodings`` asks the run for it). The hop aggregates go through the model's own
    node encoder, as the authors pass X, ÂX and Â²X through one input MLP."""

    @staticmethod
    def make_layer(config: ModelConfig, edge_features: bool) -> nn.Module:
        c = config
        return LargeGTLayer(c.hidden, c.num_heads, num_centroids=c.num_centroids, codebook_dim=c.codebook_dim,
                            codebook_decay=c.codebook_decay, dropout=c.dropout, attn_dropout=c.attn_dropout,
                            norm=c.norm)

    @staticmethod
    def prepare(model: GraphTransformer, state: LayerState) -> LayerState:
        batch = state.graph
        hop_x = batch.node_data.get(HOP_FEATURES)
        if hop_x is None:
            raise ValueError(f"layer 'largegt' reads node_data[{HOP_FEATURES!r}] (Â X, Â² X of the whole graph): "
                             "add it with sparsegt.data.hop_features.add_hop_features(dataset) "
                             "(sparsegt train does it for model.layer=largegt)")
        mask = batch.node_data.get(TARGET_MASK)
        seeds = (torch.arange(batch.num_nodes, device=batch.device) if mask is None
                 else torch.nonzero(mask).reshape(-1))
        n, hops, width = hop_x.shape
        tokens = model.node_encoder(hop_x.reshape(n * hops, width), n * hops).view(n, hops, -1)
        neighbourhood = seed_neighbourhood(batch.pattern(), seeds, model.config.local_hops)
        pattern = token_pattern(neighbourhood, 1 + hops)
        return replace(state, pattern=pattern, context=LargeGTInputs(seeds, tokens))


FAMILIES: dict[str, type[Family]] = {
    "gps": GPSFamily,
    "gt": GTFamily,
    "grit": GRITFamily,
    "exphormer": ExphormerFamily,
    "mpnn_vn": MPNNVirtualNodeFamily,
    "topk": TopKFamily,
    "gine": MPNNFamily,
    "gatedgcn": MPNNFamily,
    "gcn": MPNNFamily,
    "largegt": LargeGTFamily,
}
