"""`GPSLayer` called PyG's way, in place of PyG's ``GPSConv``: the example's comparison at a tiny size, every
matched option against ``GPSConv`` in float64, and the options that cannot be matched named in the error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsegt import Graph
from sparsegt.nn import GINEConv, GPSLayer, LayerState
from sparsegt.nn.gps import state_dict_from_gpsconv
from sparsegt.nn.local import EdgeIndexConv
from sparsegt.patterns import full

pyg_nn = pytest.importorskip("torch_geometric.nn")
DT = torch.float64
C, H = 8, 2


def load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "pyg_gpsconv.py"
    spec = importlib.util.spec_from_file_location("pyg_gpsconv_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_gives_equal_outputs_and_gradients_in_float64():
    example = load_example()
    assert example.compare(num_graphs=5, min_nodes=1, max_nodes=7, hidden=8, heads=2, layers=2) < 1e-10


def pyg_inputs(seed: int = 0, sizes=(6, 1, 9, 4)):
    """x [N, C], edge_index [2, E] (unsorted, a graph without edges), edge_attr [E, C], batch [N]."""
    generator = torch.Generator().manual_seed(seed)
    edges, start = [], 0
    for n in sizes:
        if n > 1:
            edges.append(torch.randint(0, n, (2, 2 * n), generator=generator) + start)
        start += n
    edge_index = torch.cat(edges, 1)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=generator)]
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return (torch.randn(start, C, generator=generator, dtype=DT), edge_index,
            torch.randn(edge_index.shape[1], C, generator=generator, dtype=DT), batch)


def gine_mlp() -> nn.Module:
    return pyg_nn.GINEConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C)))


@pytest.mark.parametrize("conv, options", [
    ("gine", {}),
    ("gine", {"norm": "layer_norm", "norm_kwargs": {"mode": "node", "eps": 1e-3}}),
    ("gine", {"norm": None, "attn_kwargs": {"bias": False}}),
    ("gine", {"norm": "batch_norm", "norm_kwargs": {"eps": 1e-4, "momentum": 0.3}}),
    ("gin", {"heads": 4}),
    (None, {}),
])
@pytest.mark.parametrize("training", [True, False])
def test_from_gpsconv_computes_what_gpsconv_computes(conv, options, training):
    torch.manual_seed(0)
    local = {"gine": gine_mlp, "gin": lambda: pyg_nn.GINConv(nn.Sequential(nn.Linear(C, C), nn.ReLU())),
             None: lambda: None}[conv]()
    reference = pyg_nn.GPSConv(C, local, **{"heads": H, **options}).to(DT)
    for module in reference.modules():  # non-trivial norm statistics and affine parameters
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
        if isinstance(module, nn.BatchNorm1d | pyg_nn.LayerNorm) and module.weight is not None:
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    reference.train(training)
    ours = GPSLayer.from_gpsconv(reference)
    assert ours.training == training
    x, edge_index, edge_attr, batch = pyg_inputs()
    kwargs = {"edge_attr": edge_attr} if conv == "gine" else {}
    torch.testing.assert_close(ours(x, edge_index, batch, **kwargs), reference(x, edge_index, batch, **kwargs),
                               rtol=1e-10, atol=1e-10)
    # the running statistics moved the same way (and every weight is still the same)
    expected = state_dict_from_gpsconv(reference.state_dict(), has_local=conv is not None)
    assert sorted(expected) == sorted(ours.state_dict())
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-12, atol=1e-12, msg=name)
    built = GPSLayer.gpsconv(C, local, **{"heads": H, **options})
    assert sorted(built.state_dict()) == sorted(ours.state_dict())


def test_one_graph_without_batch_and_a_shared_pattern():
    torch.manual_seed(1)
    reference = pyg_nn.GPSConv(C, gine_mlp(), heads=H).to(DT).eval()
    ours = GPSLayer.from_gpsconv(reference)
    x, edge_index, edge_attr, batch = pyg_inputs(sizes=(7,))
    torch.testing.assert_close(ours(x, edge_index, edge_attr=edge_attr), reference(x, edge_index, edge_attr=edge_attr))
    x, edge_index, edge_attr, batch = pyg_inputs(seed=2)
    pattern = full(batch)  # built once, shared by the layers of a model
    torch.testing.assert_close(ours(x, edge_index, batch, pattern=pattern, edge_attr=edge_attr),
                               reference(x, edge_index, batch, edge_attr=edge_attr))


def test_pyg_call_equals_layer_state_call():
    x, edge_index, edge_attr, batch = pyg_inputs(seed=3)
    graph = Graph.from_edge_index(edge_index, x.shape[0], edge_attr, ptr=full(batch).ptr)
    for local in ("gine", EdgeIndexConv(gine_mlp()), "none"):
        torch.manual_seed(4)
        layer = GPSLayer(C, H, local, "full").to(DT).eval()
        edge_kwargs = {} if local == "none" else {"edge_attr": edge_attr}
        state = layer(LayerState(x, graph, None if local == "none" else graph.edge_attr))
        torch.testing.assert_close(layer(x, edge_index, batch, **edge_kwargs), state.x, rtol=1e-12, atol=1e-12)


def test_options_that_cannot_be_matched_are_named():
    local = gine_mlp()
    for options, message in (
        ({"act": "gelu"}, "feed-forward uses ReLU; act='gelu'"),
        ({"norm": "layer_norm"}, "LayerNorm with mode='graph'"),
        ({"norm": "graph_norm"}, "norm='graph_norm' cannot be matched"),
        ({"norm_kwargs": {"affine": False}}, r"norm_kwargs \['affine'\] cannot be matched"),
        ({"attn_type": "performer"}, "attn_type='performer' cannot be matched"),
        ({"attn_kwargs": {"add_bias_kv": True}}, r"attn_kwargs \['add_bias_kv'\] cannot be matched"),
    ):
        with pytest.raises(ValueError, match=message):
            GPSLayer.gpsconv(C, local, H, **options)
    graph_norm = pyg_nn.GPSConv(C, local, heads=H, norm="graph_norm")
    with pytest.raises(ValueError, match="norm GraphNorm cannot be matched"):
        GPSLayer.from_gpsconv(graph_norm)


def test_wrong_calls_are_named():
    x, edge_index, edge_attr, batch = pyg_inputs()
    gatedgcn = GPSLayer(C, H, "gatedgcn", "full").to(DT)
    with pytest.raises(ValueError, match="updates the edge states"):
        gatedgcn(x, edge_index, batch, edge_attr=edge_attr)
    layer = GPSLayer(C, H, GINEConv(C), "full").to(DT)
    with pytest.raises(ValueError, match=r"takes edge_attr only, got \['edge_weight'\]"):
        layer(x, edge_index, batch, edge_attr=edge_attr, edge_weight=edge_attr[:, 0])
    with pytest.raises(ValueError, match="batch must be sorted"):
        layer(x, edge_index, batch.flip(0), edge_attr=edge_attr)
    graph = Graph.from_edge_index(edge_index, x.shape[0], edge_attr)
    with pytest.raises(ValueError, match="takes nothing else"):
        layer(LayerState(x, graph, graph.edge_attr), batch=batch)
