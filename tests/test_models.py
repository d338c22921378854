"""GraphTransformer: every layer family end to end, invariances, batch independence, configs, presets."""

from __future__ import annotations

import pytest
import torch
import yaml

from sparsegt import Graph
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import (
    PRESETS,
    TRAINING,
    GraphTransformer,
    ModelConfig,
    RWSEConfig,
    preset,
    required_encodings,
)

DT = torch.float64
NODE_SPEC = FeatureSpec("categorical", (3, 2))
EDGE_SPEC = FeatureSpec("categorical", (4,))
TASKS = {
    "node": TaskSpec("node", "multiclass", 3, "weighted_accuracy"),
    "graph": TaskSpec("graph", "regression", 2, "mae", higher_is_better=False),
    "edge": TaskSpec("edge", "binary", 1, "roc_auc"),
}


def make_graph(n: int, m: int, g: torch.Generator, edge_features: bool) -> Graph:
    ei = torch.randint(0, max(n, 1), (2, m), generator=g) if n and m else torch.zeros(2, 0, dtype=torch.long)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.cat([ei, ei.flip(0)], 1)
    x = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)], 1)
    edge_attr = torch.randint(0, 4, (ei.shape[1], 1), generator=g) if edge_features else None
    return Graph.from_edge_index(ei, n, edge_attr, x=x, remove_duplicates=True)


def awkward_graphs(seed: int, edge_features: bool) -> list[Graph]:
    g = torch.Generator().manual_seed(seed)
    return [make_graph(n, m, g, edge_features) for n, m in ((7, 10), (0, 0), (1, 0), (5, 6), (9, 12))]


def permute_graph(graph: Graph, perm: torch.Tensor) -> Graph:
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return Graph.from_edge_index(inverse[graph.to_edge_index()], graph.num_nodes, graph.edge_attr,
                                 x=graph.x[perm])


TINY = dict(num_layers=2, hidden=8, num_heads=2, dropout=0.1, attn_dropout=0.1, head_layers=2)
FAMILIES = {
    "gps-gine-full": dict(layer="gps", local="gine", attention="full"),
    "gps-gatedgcn-performer": dict(layer="gps", local="gatedgcn", attention="performer"),
    "gps-gine-expander": dict(layer="gps", local="gine", attention="expander", expander_degree=2),
    "gps-none-topk": dict(layer="gps", local="none", attention="topk", topk=3),
    "gps-gine-topk-statistical": dict(layer="gps", local="gine", attention="topk", topk=3, topk_rule="statistical"),
    "gps-gine-combiner": dict(layer="gps", local="gine", attention="combiner", combiner_block=3),
    "gps-gine-gin": dict(layer="gps", local="gine", attention="gin_attention"),
    "gps-none-pna": dict(layer="gps", local="none", attention="pna_attention"),
    "gt": dict(layer="gt"),
    "grit": dict(layer="grit", rrwp_steps=4),
    "exphormer": dict(layer="exphormer", local="gatedgcn", expander_degree=2, num_virtual=2,
                      pooling="virtual"),
    "exphormer-noexp": dict(layer="exphormer", local="gine", expander_degree=0, num_virtual=1),
    "mpnn_vn": dict(layer="mpnn_vn", local="gine", pooling="virtual"),
    "topk": dict(layer="topk", topk=3),
    "gine": dict(layer="gine", pooling="sum"),
    "gatedgcn": dict(layer="gatedgcn"),
    "gcn": dict(layer="gcn"),
}
# Random expanders and Combiner's blocks of node ids are keyed by node position: those models are not
# permutation-invariant.
EQUIVARIANT = [name for name, kw in FAMILIES.items()
               if kw.get("expander_degree", 0) == 0 and kw.get("attention") != "combiner"]


def build(name: str, level: str, edge_features: bool) -> GraphTransformer:
    torch.manual_seed(0)
    config = ModelConfig(**TINY, **FAMILIES[name])
    edge_spec = EDGE_SPEC if edge_features else FeatureSpec()
    return GraphTransformer(config, TASKS[level], NODE_SPEC, edge_spec).to(DT)


# Each family once, the task levels and both kinds of edge input spread over them.
LEVEL_CASES = [(name, ("node", "graph", "edge")[i % 3]) for i, name in enumerate(FAMILIES)]


@pytest.mark.parametrize(("name", "level"), LEVEL_CASES)
def test_every_family_trains_on_empty_and_single_node_graphs(name, level):
    edge_features = level != "edge"
    model = build(name, level, edge_features).train()
    batch = Graph.batch(awkward_graphs(0, edge_features))
    out = model(batch)
    rows = {"node": batch.num_nodes, "graph": batch.num_graphs, "edge": batch.num_edges}[level]
    assert out.shape == (rows, TASKS[level].num_outputs)
    assert out.dtype == DT and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_node_outputs_equivariant_graph_outputs_invariant(name):
    graphs = awkward_graphs(1, True)
    g = torch.Generator().manual_seed(3)
    perms = [torch.randperm(gr.num_nodes, generator=g) for gr in graphs]
    batch = Graph.batch(graphs)
    permuted = Graph.batch([permute_graph(gr, p) for gr, p in zip(graphs, perms, strict=True)])
    global_perm = torch.cat([p + o for p, o in zip(perms, batch.ptr[:-1].tolist(), strict=True)])
    with torch.no_grad():
        node_model = build(name, "node", True).eval()
        torch.testing.assert_close(node_model(permuted), node_model(batch)[global_perm])
        graph_model = build(name, "graph", True).eval()
        torch.testing.assert_close(graph_model(permuted), graph_model(batch))


@pytest.mark.parametrize("name", FAMILIES)
def test_outputs_do_not_depend_on_batch_composition(name):
    graphs = awkward_graphs(2, True)
    batch = Graph.batch(graphs)
    levels = ("node", "graph") if FAMILIES[name].get("pooling") == "virtual" else ("node",)
    with torch.no_grad():
        for level in levels:
            model = build(name, level, True).eval()
            together = model(batch)
            for i, graph in enumerate(graphs):
                alone = model(Graph.batch([graph]))
                if level == "node":
                    part = together[int(batch.ptr[i]):int(batch.ptr[i + 1])]
                else:
                    part = together[i:i + 1]
                torch.testing.assert_close(part, alone, atol=1e-5, rtol=1e-5)


def test_config_round_trips_through_yaml_and_rejects_unknown_keys():
    config = ModelConfig(layer="gps", local="gatedgcn", num_layers=3, lap_pe={"k": 4, "dim": 8})
    text = yaml.safe_dump(config.to_dict())
    again = ModelConfig.from_dict(yaml.safe_load(text))
    assert again == config and again.lap_pe.k == 4
    with pytest.raises(ValueError, match="did you mean 'num_heads'"):
        ModelConfig.from_dict({"num_head": 4})
    with pytest.raises(ValueError, match="did you mean 'dim'"):
        ModelConfig.from_dict({"lap_pe": {"k": 4, "dims": 8}})
    with pytest.raises(ValueError, match="did you mean 'gatedgcn'"):
        ModelConfig(local="gatedgnc")
    with pytest.raises(ValueError, match="multiple of"):
        ModelConfig(hidden=10, num_heads=4)
    with pytest.raises(ValueError, match="pooling='virtual'"):
        ModelConfig(layer="gps", pooling="virtual")


def test_required_encodings_lists_what_the_config_uses():
    assert required_encodings(ModelConfig()) == {}
    config = ModelConfig(lap_pe={"k": 6, "dim": 8}, rwse={"steps": 12, "dim": 8})
    assert required_encodings(config) == {"lap_pe": 6, "rwse": 12}
    assert required_encodings(preset("gps-pattern")) == {"lap_pe": 16, "lap_normalization": "none"}
    gt_style = ModelConfig(lap_pe={"k": 2, "dim": 8, "kind": "linear", "skip_trivial": True})
    assert required_encodings(gt_style) == {"lap_pe": 2, "lap_skip_trivial": True}


def test_presets_follow_the_published_shapes():
    assert set(PRESETS) == set(TRAINING)
    gps = preset("gps-pattern")
    shape = (gps.num_layers, gps.hidden, gps.num_heads, gps.local, gps.attn_dropout)
    assert shape == (6, 64, 4, "gatedgcn", 0.5)
    grit = preset("grit-pattern")
    assert (grit.num_layers, grit.hidden, grit.rrwp_steps) == (10, 64, 21)
    assert preset("gt-pattern").lap_pe.k == 2 and preset("gt-cluster").lap_pe.k == 10
    with pytest.raises(ValueError, match="available"):
        preset("gps-zinc")


def test_grit_preset_has_a_500k_budget_and_runs():
    task = TaskSpec("node", "multiclass", 2, "weighted_accuracy")
    model = GraphTransformer(preset("grit-pattern"), task, FeatureSpec("categorical", (3,)))
    # the published configs target ~500k parameters
    assert 300_000 < model.num_parameters() < 700_000
    g = torch.Generator().manual_seed(4)
    graphs = [make_graph(n, 3 * n, g, False) for n in (12, 1, 9)]
    batch = Graph.batch([Graph(gr.indptr, gr.indices, node_data={"x": gr.x[:, :1] % 3}) for gr in graphs])
    out = model.eval()(batch)
    assert out.shape == (batch.num_nodes, 2) and torch.isfinite(out).all()
    # an unbatched Graph is a batch of one
    single = Graph(batch.indptr[:13], batch.indices[:int(batch.indptr[12])], node_data={"x": batch.x[:12]})
    torch.testing.assert_close(model(single), out[:12], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gps-pattern", "gt-pattern", "exphormer-pattern"])
def test_presets_with_positional_encodings_run_and_are_batch_independent(name):
    from sparsegt.encodings import add_encodings

    config = preset(name)
    config.num_layers, config.rwse = 2, RWSEConfig(steps=4, dim=4)
    assert required_encodings(config) == {**required_encodings(preset(name)), "rwse": 4}
    torch.manual_seed(0)
    model = GraphTransformer(config, TASKS["node"], NODE_SPEC, FeatureSpec()).to(DT)
    graphs = awkward_graphs(5, False)
    encoded = add_encodings([g for g in graphs if g.num_nodes], **required_encodings(config))
    template = encoded[0].node_data
    graphs = [encoded.pop(0) if g.num_nodes else  # the empty graph gets empty encodings
              g.with_data(node_data={k: t[:0] for k, t in template.items() if k not in g.node_data})
              for g in graphs]
    batch = Graph.batch(graphs)
    model.train()(batch).square().mean().backward()
    model.eval()
    with torch.no_grad():
        together = model(batch)
        for i, graph in enumerate(graphs):
            part = together[int(batch.ptr[i]):int(batch.ptr[i + 1])]
            torch.testing.assert_close(part, model(Graph.batch([graph])), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="add_encodings"):
        model(Graph.batch(awkward_graphs(5, False)))


def test_exphormer_attention_is_gated_by_the_encoded_input_edge_features_in_every_layer():
    """As the reference code (``expander_edge_attr`` set once by the encoder): not by GatedGCN's edge states."""
    model = build("exphormer", "node", True).eval()
    batch = Graph.batch(awkward_graphs(6, True))
    seen = []
    for layer in model.layers:
        layer.attention.register_forward_pre_hook(lambda module, args: seen.append(args[3]))
    with torch.no_grad():
        model(batch)
        encoded = model.edge_encoder(batch.edge_attr, batch.num_edges)
    assert len(seen) == len(model.layers)
    for features in seen:
        torch.testing.assert_close(features, encoded)


def test_exphormer_dummy_edge_is_the_graph_edge_gate_and_the_gatedgcn_input():
    """As GraphGPS's DummyEdge feeds the reference's attention (E(dummy) on every graph edge) and GatedGCN."""
    config = ModelConfig(**{**TINY, **FAMILIES["exphormer"], "dummy_edge": True})
    torch.manual_seed(0)
    model = GraphTransformer(config, TASKS["node"], NODE_SPEC, FeatureSpec()).to(DT).eval()
    batch = Graph.batch(awkward_graphs(6, False))
    calls = []
    model.layers[0].attention.register_forward_pre_hook(lambda module, args: calls.append(args))
    model.layers[0].local_model.register_forward_pre_hook(lambda module, args: calls.append(args))
    with torch.no_grad():
        model(batch)
    (_, _, edge_types, *gate_features), (_, _, local_edges, *_) = calls
    assert gate_features in ([], [None])  # one vector for all graph edges: the typed-keys path
    constant = model.edge_encoder.constant
    torch.testing.assert_close(edge_types[0], constant)
    torch.testing.assert_close(local_edges, constant.expand(batch.num_edges, -1))


def test_published_exphormer_and_grit_presets_follow_the_reference_code():
    for name in ("exphormer-pattern", "exphormer-cluster"):
        config = preset(name)
        assert config.attn_dropout == 0.0  # the yamls' attn_dropout is never passed to ExphormerAttention
        assert (config.dummy_edge, config.head_l2norm, config.head_shrink) == (True, True, False)
        pe = config.lap_pe
        assert (pe.k, pe.dim, pe.kind, pe.combine, pe.normalization, pe.sign_flip, pe.skip_trivial) == \
            (10, config.hidden, "linear", "gate", "none", "none", False)
        assert required_encodings(config) == {"lap_pe": 10, "lap_normalization": "none"}
    for name in ("grit-pattern", "grit-cluster"):
        config = preset(name)
        assert (config.dummy_edge, config.head_l2norm, config.head_shrink, config.lap_pe) == (True, True, False, None)
    for name, loss in (("exphormer-pattern", "weighted_cross_entropy_node_mean"),
                       ("exphormer-cluster", "weighted_cross_entropy"),
                       ("grit-pattern", "weighted_cross_entropy_node_mean"),
                       ("grit-cluster", "weighted_cross_entropy")):
        assert TRAINING[name]["loss"] == loss and TRAINING[name]["lr_update"] == "epoch"
    from sparsegt.train.presets import get_preset

    for name in ("grit-pattern", "grit-cluster", "exphormer-pattern", "exphormer-cluster"):
        assert get_preset(name).model == preset(name)
    with pytest.raises(ValueError, match="combine='gate'"):
        ModelConfig(layer="gps", local="gatedgcn", lap_pe={"combine": "gate", "dim": 8})


def test_exphormer_pattern_preset_parameters_match_the_reference_count():
    """Counted on the reference's modules for PATTERN (3 node-feature inputs, 40 wide, 4 layers, 4 virtual
    nodes, 10 eigenvectors, one output logit): LinearNode 3*40+40, DummyEdge 40, EquivStableLapPE 10*40+40,
    ExpanderEdgeFixer (1 + 3*4)*40, per layer GatedGCN 5*(40*40+40) + 2*2*40 + mlp_r_ij (40+40+40+1),
    norm1_local / norm1_attn / norm2 3*2*40, ExphormerAttention 4*40*40, FFN 40*80+80+80*40+40; head
    2*(40*40+40) + 40+1. Ours has 2 output logits (GraphGym: 1: +41), its own graph-edge vector (unused with
    DummyEdge: +40) and an Embedding(3, 40) for the one-hot node features (the reference's Linear has a bias
    that is redundant on one-hot inputs: -40)."""
    layer = (5 * (40 * 40 + 40) + 4 * 40 + (40 + 40 + 40 + 1) + 3 * 2 * 40 + 4 * 40 * 40
             + (40 * 80 + 80 + 80 * 40 + 40))
    reference = (3 * 40 + 40) + 40 + (10 * 40 + 40) + 13 * 40 + 4 * layer + 2 * (40 * 40 + 40) + 41
    task = TaskSpec("node", "multiclass", 2, "weighted_accuracy")
    model = GraphTransformer(preset("exphormer-pattern"), task, FeatureSpec("categorical", (3,)))
    assert model.num_parameters() == reference + 41 + 40 - 40


def test_grit_pattern_preset_parameters_match_the_reference_count():
    """Counted on GRIT's modules for PATTERN (64 wide, 8 heads, 10 layers, RRWP 21, one output logit):
    LinearNode 3*64+64, DummyEdge 64, RRWP node and edge Linear 2*21*64 (no bias); per layer Q 64*64+64,
    K and V 2*64*64, E 64*128+128, Aw 64, VeRow 8*8*8, O_h and O_e 2*(64*64+64), deg_coef 128, three
    BatchNorms 3*128, FFN 64*128+128+128*64+64; head 2*(64*64+64)+65. Ours: 2 logits (+65), Embedding for the
    one-hot node features (-64)."""
    layer = (64 * 64 + 64) + 2 * 64 * 64 + (64 * 128 + 128) + 64 + 512 + 2 * (64 * 64 + 64) + 128 + 3 * 128 \
        + (64 * 128 + 128 + 128 * 64 + 64)
    reference = (3 * 64 + 64) + 64 + 2 * 21 * 64 + 10 * layer + 2 * (64 * 64 + 64) + 65
    task = TaskSpec("node", "multiclass", 2, "weighted_accuracy")
    model = GraphTransformer(preset("grit-pattern"), task, FeatureSpec("categorical", (3,)))
    assert model.num_parameters() == reference + 65 - 64


def test_wrong_features_raise_value_errors():
    model = build("gine", "node", True)
    batch = Graph.batch(awkward_graphs(0, True))
    with pytest.raises(ValueError, match="cardinality"):
        model(batch.with_data(node_data={"x": batch.x + 5}))
    with pytest.raises(ValueError, match="no edge features"):
        model(Graph(batch.indptr, batch.indices, node_data={"x": batch.x}, ptr=batch.ptr))


@pytest.mark.parametrize("name", ["gps-pattern", "gt-pattern", "exphormer-pattern", "grit-pattern"])
def test_preset_models_run_under_bf16_autocast(name):
    """train.precision=bf16: each PATTERN preset (2 layers) runs forward and backward under CPU bfloat16
    autocast (sparse products and attention in float32 inside), finite and close to float32."""
    from .test_layer_contract import build, cases, make_batch

    config, level, edge_features = cases()[name]
    model = build(config, level, edge_features).float().eval()
    batch = make_batch(config, edge_features)
    with torch.no_grad():
        reference = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.float().square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    scale = reference.abs().max().item()
    torch.testing.assert_close(out.float(), reference, atol=0.05 * scale, rtol=0.05)
