"""The layer contract (issue #15): every model's numbers and checkpoint keys are pinned by fixtures.

``tests/fixtures/layer_contract.pt`` was written by the code *before* the layer refactor
(``python tests/test_layer_contract.py --regenerate``; do not regenerate it to make a test pass). For every
preset of `sparsegt.models.PRESETS` (with ``num_layers=2``, everything else as published) and for every layer
family at a tiny width, on a fixed batch with the encodings the model needs, in float64, it holds:

- ``keys``: the ``state_dict`` keys (and shapes), in order, and ``parameters``: the ``named_parameters``
  order. A checkpoint of a running training job must load (strict) and its optimizer state (indexed by
  parameter order) must still fit;
- ``init``: a SHA-256 of every tensor of the freshly built model under ``torch.manual_seed(0)``: a seeded
  model starts from the same weights as before;
- ``eval`` / ``train``: the outputs of the model loaded with a synthetic state dict (`synthetic_state`, made
  from the stored keys and shapes only) in eval mode, then in train mode under ``torch.manual_seed(1)``
  (dropout, random sign flips and batch statistics included). The loaded weights are not the initial ones,
  so a swapped norm or projection shows.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsegt import Graph
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.encodings import add_encodings
from sparsegt.models import PRESETS, GraphTransformer, ModelConfig, required_encodings
from sparsegt.models.families import FAMILIES, Family
from sparsegt.nn import LayerState

FIXTURE = Path(__file__).parent / "fixtures" / "layer_contract.pt"
DT = torch.float64
NODE_SPEC = FeatureSpec("categorical", (3, 2))
EDGE_SPEC = FeatureSpec("categorical", (4,))
TASKS = {
    "node": TaskSpec("node", "multiclass", 2, "weighted_accuracy"),
    "graph": TaskSpec("graph", "regression", 2, "mae", higher_is_better=False),
    "edge": TaskSpec("edge", "binary", 1, "roc_auc"),
}
TINY = dict(num_layers=2, hidden=8, num_heads=2, dropout=0.1, attn_dropout=0.1, head_layers=2)
# name -> (config overrides on TINY, task level, edge features)
FAMILY_CASES = {
    "gps-gine-full": (dict(layer="gps", local="gine", attention="full"), "node", True),
    "gps-gatedgcn-full": (dict(layer="gps", local="gatedgcn", attention="full"), "graph", True),
    "gps-gatedgcn-performer": (dict(layer="gps", local="gatedgcn", attention="performer"), "node", False),
    "gps-gine-expander": (dict(layer="gps", local="gine", attention="expander", expander_degree=2), "edge", True),
    "gps-none-topk": (dict(layer="gps", local="none", attention="topk", topk=3), "node", True),
    "gps-gine-none": (dict(layer="gps", local="gine", attention="none", norm="layer"), "graph", False),
    "gt-edges": (dict(layer="gt"), "node", True),
    "gt-layernorm": (dict(layer="gt", norm="layer"), "graph", False),
    "grit-edges": (dict(layer="grit", rrwp_steps=4), "node", True),
    "exphormer-gatedgcn": (dict(layer="exphormer", local="gatedgcn", expander_degree=2, num_virtual=2,
                                pooling="virtual"), "graph", True),
    "exphormer-gine": (dict(layer="exphormer", local="gine", expander_degree=0, num_virtual=1), "node", True),
    "exphormer-none": (dict(layer="exphormer", local="none", expander_degree=2, num_virtual=0), "node", False),
    "mpnn_vn-gine": (dict(layer="mpnn_vn", local="gine", pooling="virtual"), "graph", True),
    "mpnn_vn-gatedgcn": (dict(layer="mpnn_vn", local="gatedgcn"), "node", True),
    "topk": (dict(layer="topk", topk=3), "node", True),
    "gine": (dict(layer="gine", pooling="sum"), "graph", True),
    "gatedgcn": (dict(layer="gatedgcn"), "edge", True),
    "gcn": (dict(layer="gcn"), "node", False),
}


def cases() -> dict[str, tuple[ModelConfig, str, bool]]:
    """Every pinned model: the presets (2 layers, as the SBM data: no edge features) and the families."""
    out = {}
    for name, config in PRESETS.items():
        if config.layer == "largegt":  # a one-graph model (hop features of continuous x): tests/test_nn_largegt.py
            continue
        data = config.to_dict()
        data["num_layers"] = 2
        out[name] = (ModelConfig.from_dict(data), "node", False)
    for name, (overrides, level, edge_features) in FAMILY_CASES.items():
        out[name] = (ModelConfig(**{**TINY, **overrides}), level, edge_features)
    return out


def make_batch(config: ModelConfig, edge_features: bool) -> Graph:
    """A fixed batch of four small graphs (one of a single node) with the encodings the model needs."""
    g = torch.Generator().manual_seed(7)
    graphs = []
    for n, m in ((7, 10), (1, 0), (5, 6), (9, 14)):
        ei = torch.randint(0, n, (2, m), generator=g)
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)
        x = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)], 1)
        attr = torch.randint(0, 4, (ei.shape[1], 1), generator=g) if edge_features else None
        graphs.append(Graph.from_edge_index(ei, n, attr, x=x, remove_duplicates=True))
    needed = required_encodings(config)
    if needed:
        graphs = add_encodings(graphs, **needed)
    return Graph.batch(graphs)


def build(config: ModelConfig, level: str, edge_features: bool) -> GraphTransformer:
    torch.manual_seed(0)
    edge_spec = EDGE_SPEC if edge_features else FeatureSpec()
    return GraphTransformer(config, TASKS[level], NODE_SPEC, edge_spec).to(DT)


def synthetic_state(keys: list[tuple[str, tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """Weights made from the key names and shapes only (seeded), so old keys load into a new model."""
    g = torch.Generator().manual_seed(11)
    state = {}
    for key, shape, dtype in keys:
        if dtype == "torch.int64":
            state[key] = torch.full(shape, 3, dtype=torch.long)
            continue
        noise = torch.randn(shape, generator=g, dtype=DT)
        if key.endswith("running_var"):
            value = 0.5 + noise.abs()
        elif key.endswith("running_mean"):
            value = 0.1 * noise
        elif len(shape) >= 2:
            value = noise / shape[-1] ** 0.5
        elif "norm" in key and key.endswith("weight"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        state[key] = value
    return state


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def record(config: ModelConfig, level: str, edge_features: bool) -> dict:
    """What the fixture holds for one model (see the module docstring)."""
    model = build(config, level, edge_features)
    state = model.state_dict()
    keys = [(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()]
    result = {"keys": keys, "parameters": [name for name, _ in model.named_parameters()],
              "init": {k: digest(v) for k, v in state.items()}}
    model.load_state_dict(synthetic_state(keys), strict=True)
    batch = make_batch(config, edge_features)
    with torch.no_grad():
        result["eval"] = model.eval()(batch)
        torch.manual_seed(1)
        result["train"] = model.train()(batch)
    return result


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def test_the_fixture_covers_every_preset_and_family(fixture):
    assert set(fixture) == set(cases())


@pytest.mark.parametrize("name", list(cases()))
def test_state_dict_keys_initial_weights_and_outputs_are_unchanged(name, fixture):
    expected = fixture[name]
    config, level, edge_features = cases()[name]
    model = build(config, level, edge_features)
    state = model.state_dict()
    # a checkpoint written before the refactor loads, and its optimizer state fits the parameter order
    assert [(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()] == [tuple(k) for k in expected["keys"]]
    assert [n for n, _ in model.named_parameters()] == expected["parameters"]
    assert {k: digest(v) for k, v in state.items()} == expected["init"], "a seeded model starts elsewhere"
    got = record(config, level, edge_features)
    torch.testing.assert_close(got["eval"], expected["eval"], rtol=0, atol=1e-12)
    torch.testing.assert_close(got["train"], expected["train"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- a new family: one line in the table
class ToyLayer(nn.Module):
    """``x' = x + tanh(W x) * s``, ``s``: a scale shared by all layers (read from ``state.context``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lin = nn.Linear(hidden, hidden)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, state: LayerState) -> LayerState:
        return replace(state, x=state.x + torch.tanh(self.lin(state.x)) * state.context)


class ToyFamily(Family):
    @staticmethod
    def make_layer(config, edge_features):
        return ToyLayer(config.hidden)

    @staticmethod
    def make_shared(config):
        return {"toy_scale": nn.Parameter(torch.full((1,), 0.5))}

    @staticmethod
    def prepare(model, state):
        return replace(state, context=model.toy_scale)


def test_a_new_family_is_a_layer_and_one_line_in_the_table(monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", ToyFamily)  # the one line
    config = ModelConfig(layer="toy", num_layers=3, hidden=8, num_heads=2, head_layers=1)
    model = build(config, "node", True).eval()
    assert all(isinstance(layer, ToyLayer) for layer in model.layers) and len(model.layers) == 3
    assert "toy_scale" in model.state_dict()
    batch = make_batch(config, True)
    with torch.no_grad():
        out = model(batch)
        x = model.encode(batch).x
        for layer in model.layers:
            x = x + torch.tanh(layer.lin(x)) * model.toy_scale
        torch.testing.assert_close(out, model.head(x))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="model.layer must be one of"):
        ModelConfig(layer="toy")


@pytest.mark.parametrize("name", ["gps-gine-full", "gt-edges", "grit-edges", "exphormer-gatedgcn", "mpnn_vn-gine",
                                  "topk", "gcn", "gps-gatedgcn-performer"])
def test_every_layer_resets_its_parameters(name):
    config, level, edge_features = cases()[name]
    model = build(config, level, edge_features)
    for layer in model.layers:
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        torch.manual_seed(5)
        layer.reset_parameters()
        changed = [k for k, v in layer.state_dict().items() if v.dtype.is_floating_point and v.numel() > 1
                   and not torch.equal(v, before[k]) and k.endswith("weight") and v.dim() >= 2]
        assert changed, f"{type(layer).__name__}.reset_parameters() drew no new weight"


def regenerate() -> None:
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save({name: record(*case) for name, case in cases().items()}, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KiB)")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    regenerate()
