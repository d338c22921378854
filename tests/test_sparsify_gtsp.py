"""GTSP (issue #19): hard-concrete masks on edges, heads, layers and weights; pruning removes what the masks
closed and keeps the masked model's (deterministic) output; the penalty moves the gates to the target."""

from __future__ import annotations

import copy

import pytest
import torch

from sparsegt import Graph, sparse_attention
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, ModelConfig
from sparsegt.nn import SparseMultiheadAttention
from sparsegt.sparsify import GTSPModel, GTSPTargets, gtsp, prune
from sparsegt.sparsify.gtsp import GatedAttention, GatedLayer, HeadPrunedAttention, WeightGate
from sparsegt.sparsify.hard_concrete import hard_concrete, open_probability

DT = torch.float64
ATOL = 1e-12


def tiny_model(layer: str, **extra) -> GraphTransformer:
    torch.manual_seed(0)
    config = ModelConfig(layer=layer, num_layers=3, hidden=8, num_heads=2, head_layers=1, **extra)
    model = GraphTransformer(config, TaskSpec("node", "multiclass", 3, "accuracy"), FeatureSpec("continuous", dim=3),
                             FeatureSpec("continuous", dim=2) if layer == "gt" else None).to(DT)
    model.train()
    for _ in range(2):  # BatchNorm running statistics off their initial values
        model(batch_of([9, 5, 12]))
    return model.eval()


def batch_of(sizes: list[int], seed: int = 6) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        ei = torch.randint(0, n, (2, 2 * n), generator=gen)
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)
        graphs.append(Graph.from_edge_index(ei, n, torch.randn(ei.shape[1], 2, generator=gen, dtype=DT),
                                            x=torch.randn(n, 3, generator=gen, dtype=DT), remove_duplicates=True))
    return Graph.batch(graphs)


def gated_attentions(masked: GTSPModel) -> list[GatedAttention]:
    return [m for m in masked.modules() if isinstance(m, GatedAttention)]


@pytest.mark.parametrize("layer", ["gt", "gps"])
def test_open_gates_leave_the_eval_output_unchanged(layer):
    model, batch = tiny_model(layer), batch_of([7, 4])
    edges = 0.3 if layer == "gps" else None
    masked = GTSPModel(model, GTSPTargets(edges=edges, heads=0.5, layers=0.3, weights=0.5)).eval()
    assert torch.equal(masked(batch), model(batch))


@pytest.mark.parametrize("layer", ["gt", "gps"])
def test_a_head_masked_to_zero_equals_the_head_removed(layer):
    model, batch = tiny_model(layer), batch_of([7, 4, 6])
    masked = GTSPModel(model, GTSPTargets(heads=0.5)).eval()
    first, second = gated_attentions(masked)[:2]
    with torch.no_grad():
        first.head_gate.log_alpha[1] = -10.0           # closed: z = 0
        second.head_gate.log_alpha[0] = 0.3            # strictly between 0 and 1: folded into W_o
    assert 0 < float(hard_concrete(second.head_gate.log_alpha.detach(), False)[0]) < 1
    pruned = prune(masked).eval()
    assert torch.allclose(pruned(batch), masked(batch), atol=ATOL, rtol=0)
    kept = pruned.layers[0].attention
    assert isinstance(kept, HeadPrunedAttention) and kept.num_heads == 1
    assert kept.in_proj_weight.shape == (3 * 4, 8) and kept.out_proj.weight.shape == (8, 4)
    if layer == "gt":                                  # GT's edge update reads the kept head's products only
        assert pruned.layers[0].edge_out.weight.shape == (8, 4)
        assert kept.edge_proj.weight.shape == (4, 8)
    assert pruned.layers[1].attention.num_heads == 2
    assert pruned.num_parameters() < model.num_parameters()


def test_a_layer_gated_off_equals_the_model_without_it():
    model, batch = tiny_model("gps"), batch_of([7, 4, 6])
    masked = GTSPModel(model, GTSPTargets(layers=0.3)).eval()
    with torch.no_grad():
        masked.model.layers[1].gate.log_alpha.fill_(-10.0)
    without = copy.deepcopy(model)
    del without.layers[1]
    assert torch.equal(masked(batch), without(batch))
    pruned = prune(masked).eval()
    assert len(pruned.layers) == 2 and not any(isinstance(layer, GatedLayer) for layer in pruned.layers)
    assert torch.equal(pruned(batch), without(batch))


def test_a_fractional_layer_gate_stays_as_a_fixed_mix():
    model, batch = tiny_model("gt"), batch_of([7, 4])
    masked = GTSPModel(model, GTSPTargets(layers=0.3)).eval()
    with torch.no_grad():
        masked.model.layers[0].gate.log_alpha.fill_(0.0)
    pruned = prune(masked).eval()
    assert isinstance(pruned.layers[0], GatedLayer) and not list(pruned.layers[0].gate.parameters())
    assert torch.allclose(pruned(batch), masked(batch), atol=ATOL, rtol=0)


def test_closed_weight_gates_are_zeros_in_the_pruned_model():
    model, batch = tiny_model("gps"), batch_of([7, 4])
    masked = GTSPModel(model, GTSPTargets(weights=0.5)).eval()
    gates = [m for m in masked.modules() if isinstance(m, WeightGate)]
    assert gates and all(g.gate.log_alpha.dim() == 2 for g in gates)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for gate in gates:
            gate.gate.log_alpha.copy_(torch.randn(gate.gate.log_alpha.shape, generator=gen, dtype=DT) * 4)
    pruned = prune(masked).eval()
    weight = pruned.layers[0].feed_forward.lin1.weight
    closed = hard_concrete(gates_of(masked, "layers.0.feed_forward.lin1"), False) == 0
    assert closed.any() and torch.equal(weight[closed], torch.zeros_like(weight[closed]))
    assert torch.allclose(pruned(batch), masked(batch), atol=ATOL, rtol=0)
    assert not any(isinstance(m, WeightGate) for m in pruned.modules())


def gates_of(masked: GTSPModel, path: str) -> torch.Tensor:
    module = masked.model.get_submodule(path)
    return module.parametrizations.weight[0].gate.log_alpha


def test_closed_pattern_entries_are_dropped_from_the_pattern(monkeypatch):
    model, batch = tiny_model("gps"), batch_of([7, 4, 6])
    masked = GTSPModel(model, GTSPTargets(edges=0.5)).eval()
    gen = torch.Generator().manual_seed(2)
    for gated in gated_attentions(masked):
        with torch.no_grad():
            gated.edge_scorer.key_score.weight.copy_(torch.randn(1, 8, generator=gen, dtype=DT) * 3)
    expected = masked(batch)
    pruned = prune(masked).eval()
    seen = []

    def count_entries(q, k, v, pattern, **kw):
        seen.append(pattern.num_edges)
        return sparse_attention(q, k, v, pattern, **kw)

    monkeypatch.setattr(gtsp, "sparse_attention", count_entries)
    out = pruned(batch)
    full_entries = sum(n * n for n in (7, 4, 6))
    assert len(seen) == 3 and min(seen) < full_entries
    assert torch.allclose(out, expected, atol=ATOL, rtol=0)
    assert 0 < masked.densities()["edges"] < 1


def test_training_mode_samples_gates_and_gradients_reach_them():
    model, batch = tiny_model("gps"), batch_of([7, 4])
    masked = GTSPModel(model, GTSPTargets(edges=0.3, heads=0.5, layers=0.3, weights=0.5)).train()
    loss = masked(batch).square().mean() + masked.penalty()
    loss.backward()
    grads = {name: p.grad for name, p in masked.named_parameters() if "log_alpha" in name or "score" in name}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for g in grads.values())


def test_a_layer_skipped_by_its_sampled_gate_leaves_no_stale_edge_probabilities():
    """Step 1 runs every layer; step 2 samples layer 1's gate at exactly 0 (skipped, not run): the penalty of
    step 2 reads only step 2's edge probabilities (step 1's graph was freed by its backward)."""
    model, batch = tiny_model("gps"), batch_of([7, 4])
    masked = GTSPModel(model, GTSPTargets(edges=0.3, layers=0.3)).train()
    (masked(batch).square().mean() + masked.penalty()).backward()
    skipped = masked.model.layers[1]
    skipped.gate.forward = lambda: torch.zeros((), dtype=DT)   # a sample of exactly 0 (p ~ 1% a step at first)
    scorer = skipped.layer.attention.edge_scorer
    (masked(batch).square().mean() + masked.penalty()).backward()  # "backward through the graph a second time"
    assert scorer.last_open_probability is None                     # cleared, not left from step 1


def test_the_penalty_drives_the_gates_to_the_target():
    model = tiny_model("gt")
    masked = GTSPModel(model, GTSPTargets(heads=0.5, layers=1 / 3, weights=0.75), strength=1.0)
    gates = [p for name, p in masked.named_parameters() if "log_alpha" in name]
    optimizer = torch.optim.Adam(gates, lr=0.1)
    for _ in range(150):
        optimizer.zero_grad()
        masked.penalty().backward()
        optimizer.step()
    for name, target in (("heads", 0.5), ("layers", 1 / 3), ("weights", 0.75)):
        probabilities = torch.cat([open_probability(p).flatten() for n, p in masked.named_parameters()
                                   if "log_alpha" in n and _group(n) == name])
        assert abs(float(probabilities.detach().mean()) - (1 - target)) < 0.02, name
    assert float(masked.penalty().detach()) < 1e-3


def _group(name: str) -> str:
    if "parametrizations" in name:
        return "weights"
    return "heads" if "head_gate" in name else "layers"


def test_the_original_model_is_not_changed_and_errors_name_the_problem():
    model = tiny_model("gt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    GTSPModel(model, GTSPTargets(heads=0.5, weights=0.5))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.layers[0].attention, SparseMultiheadAttention)
    with pytest.raises(ValueError, match="edge features"):
        GTSPModel(model, GTSPTargets(edges=0.5))
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        GTSPModel(model, GTSPTargets(heads=1.0))
    with pytest.raises(ValueError, match="names no dimension"):
        GTSPModel(model, GTSPTargets())
    performer = GraphTransformer(ModelConfig(layer="gps", attention="performer", num_layers=2, hidden=8, num_heads=2),
                                 TaskSpec("graph", "regression", 1, "mae"), FeatureSpec("continuous", dim=3))
    with pytest.raises(ValueError, match="heads=None"):
        GTSPModel(performer, GTSPTargets(heads=0.5))
    GTSPModel(performer, GTSPTargets(layers=0.5, weights=0.5))   # layers and weights: any layer
