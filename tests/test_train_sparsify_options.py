"""The sparsification train options of issue #19: ``data.trim_edges`` (TEDDY edge trimming),
``train.weight_sparsity`` (TEDDY l0-ball projection), ``model.ffn_topk`` (activation top-k) and ``train.gtsp`` (GTSP's
masked training, then pruning), each in a tiny run."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from sparsegt.graph import Graph
from sparsegt.nn import activation_density
from sparsegt.patterns import kept_edge_counts
from sparsegt.train.checkpoint import load_checkpoint
from sparsegt.train.config import apply_overrides
from sparsegt.train.l0_projection import weight_matrices
from sparsegt.train.presets import get_preset
from sparsegt.train.run import build_dataset, build_model, train_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_config(root, *overrides):
    """GPS (2 layers, 16 wide, LapPE 4) on pattern-tiny, 1 epoch of 3 batches; ``overrides`` as on the CLI."""
    config = get_preset("gps-pattern")
    config.data.name, config.data.root = "pattern-tiny", str(root / "data")
    config.model.num_layers, config.model.hidden, config.model.lap_pe.k, config.model.lap_pe.dim = 2, 16, 4, 4
    config.train.epochs, config.train.warmup_epochs, config.train.bn_recalibration = 1, 0, 2
    config.train.batches_per_epoch, config.train.loggers, config.train.chance_check_epochs = 3, [], 0
    return apply_overrides(config, list(overrides))


def test_trim_edges_keeps_the_fraction_of_every_graph_and_trains(tmp_path):
    dense = build_dataset(tiny_config(tmp_path))
    config = tiny_config(tmp_path, "data.trim_edges=0.6")
    with warnings.catch_warnings(record=True) as caught:   # its own encoding cache, not the dense graphs' file
        warnings.simplefilter("always")
        trimmed = build_dataset(config)
    assert not [w for w in caught if "written for different graphs" in str(w.message)]
    for split in ("train", "val", "test"):
        before, after = getattr(dense, split), getattr(trimmed, split)
        assert len(before) == len(after)
        for g, t in zip(before, after, strict=True):
            assert t.num_edges == int(kept_edge_counts(g, 0.6)) < g.num_edges
            assert t.num_nodes == g.num_nodes and torch.equal(t.node_data["y"], g.node_data["y"])
    # the encodings are those of the trimmed graphs, not the dense graphs' cached ones
    fresh = build_dataset(tiny_config(tmp_path / "fresh", "data.trim_edges=0.6"), splits=("val",))
    assert any(not torch.equal(g.node_data[k], t.node_data[k]) for g, t in zip(dense.val, trimmed.val, strict=True)
               for k in g.node_data if k != "y")
    for f, t in zip(fresh.val, trimmed.val, strict=True):
        assert f.node_data.keys() == t.node_data.keys()
        assert all(torch.equal(f.node_data[k], t.node_data[k]) for k in f.node_data)
    result = train_run(config, run_dir=tmp_path / "run", quiet=True)
    assert result.summary["status"] == "completed"


def test_weight_sparsity_holds_exactly_in_the_saved_weights(tmp_path):
    config = tiny_config(tmp_path, "train.weight_sparsity=0.8")
    result = train_run(config, run_dir=tmp_path / "run", quiet=True)
    assert result.summary["status"] == "completed"
    dataset = build_dataset(config, splits=())
    model = build_model(config, dataset)
    model.load_state_dict(load_checkpoint(result.run_dir / "last.pt")["model"])
    weights = [(name, p) for name, p in model.named_parameters() if weight_matrices(name, p)]
    assert weights
    for name, p in weights:
        assert int(torch.count_nonzero(p)) == math.floor(0.2 * p.numel() + 0.5 + 1e-9), name
    norm_scales = [p for name, p in model.named_parameters() if p.dim() == 1 and name.endswith(".weight")]
    assert norm_scales and all(bool((p != 0).all()) for p in norm_scales)   # left dense


def _density(config, dataset, state=None):
    torch.manual_seed(0)
    model = build_model(config, dataset)
    if state is not None:
        model.load_state_dict(state)
    batches = [Graph.batch(dataset.val[i:i + 8]) for i in range(0, len(dataset.val), 8)]
    return activation_density(model, batches)


@pytest.mark.parametrize("rule", ["exact", "statistical"])
def test_ffn_topk_trains_and_lowers_the_activation_density_to_the_target(tmp_path, rule):
    config = tiny_config(tmp_path, "model.ffn_topk=0.25", f"model.ffn_topk_rule={rule}")
    result = train_run(config, run_dir=tmp_path / "run", quiet=True)
    assert result.summary["status"] == "completed"
    dataset = build_dataset(config, splits=("val",))
    state = load_checkpoint(result.run_dir / "last.pt")["model"]   # the activation has no parameters
    dense = _density(tiny_config(tmp_path), dataset, state)
    sparse = _density(config, dataset, state)
    assert dense.keys() == sparse.keys() and len(sparse) == config.model.num_layers
    for name, fraction in sparse.items():
        assert fraction < dense[name]
        if rule == "exact":  # at most k = round(0.25 * width) nonzeros per row
            assert fraction <= 0.25


@pytest.mark.parametrize("override, field", [("data.trim_edges=0", "data.trim_edges"),
                                             ("data.trim_edges=1.5", "data.trim_edges"),
                                             ("train.weight_sparsity=1", "train.weight_sparsity"),
                                             ("model.ffn_topk=0", "model.ffn_topk"),
                                             ("model.ffn_topk_rule=sorted", "model.ffn_topk_rule"),
                                             ("train.gtsp={heads: 1.0}", "train.gtsp.heads"),
                                             ("train.gtsp={heads: 0.5, strength: 0}", "train.gtsp.strength"),
                                             ("train.gtsp={headz: 0.5}", "train.gtsp.headz")])
def test_out_of_range_values_name_the_field(tmp_path, override, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(tmp_path, override)


def test_ffn_topk_on_a_family_without_ffn_says_so(tmp_path):
    config = tiny_config(tmp_path, "model.layer=gcn", "model.ffn_topk=0.5", "model.lap_pe=null")
    with pytest.raises(ValueError, match="no feed-forward block"):
        build_model(config, build_dataset(config, splits=()))


def test_gtsp_trains_behind_gates_and_reports_the_pruned_model(tmp_path):
    """``train.gtsp``: the model trains behind GTSP's gates (their own rate, gate_lr_scale x the run's; the
    penalty pulls every gate down from open), resumes bit-exactly, and the summary scores the best epoch behind
    its gates and pruned: the same function, so the same metric (what pruning removes: tests/test_sparsify_gtsp)."""
    from sparsegt.sparsify import GTSPModel
    from sparsegt.train.resume import open_run
    from sparsegt.train.run import evaluate_run

    overrides = ["train.gtsp={heads: 0.5, layers: 0.5, weights: 0.5, strength: 10, gate_lr_scale: 400}",
                 "train.epochs=2", "train.lr=1e-3", "train.scheduler=constant"]
    config = tiny_config(tmp_path, *overrides)
    assert isinstance(build_model(config, build_dataset(config, splits=())), GTSPModel)
    summary = train_run(config, run_dir=tmp_path / "run", quiet=True).summary
    gtsp = summary["gtsp"]
    assert gtsp["metric_pruned"] == pytest.approx(gtsp["metric_masked"], abs=1e-6)
    assert gtsp["nonzero_parameters_pruned"] <= gtsp["parameters_pruned"] <= gtsp["parameters_dense"]
    assert gtsp["layers"] <= 2 and set(gtsp["gates_open"]) == {"heads", "layers", "weights"}
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    gates = [v for k, v in last["model"].items() if k.endswith("log_alpha")]
    assert gates and all(float(g.max()) < 3.0 for g in gates)      # all moved down from the open 3.0
    groups = last["optimizer"]["param_groups"]
    assert groups[1]["lr"] == pytest.approx(400 * groups[0]["lr"]) and groups[1]["weight_decay"] == 0.0
    # the run folder evaluates like any other (the model is rebuilt behind its gates from config.yaml)
    scored = evaluate_run(tmp_path / "run", splits=("test",), device="cpu")
    assert gtsp["split"] == "test" and scored["test"]["metric"] == pytest.approx(gtsp["metric_masked"], abs=1e-6)

    cut = tiny_config(tmp_path, *overrides, "train.epochs=1")     # one epoch, then resumed for the second
    train_run(cut, run_dir=tmp_path / "cut", quiet=True)
    resumed = train_run(resume=open_run(tmp_path / "cut", ["train.epochs=2"]), quiet=True)
    a, b = load_checkpoint(tmp_path / "run" / "last.pt")["model"], load_checkpoint(resumed.run_dir / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gin_adapter_fine_tunes_only_the_adapters_of_a_trained_run(tmp_path):
    """``train.init_from`` + ``train.gin_adapter``: the run starts from the other run's best weights with zero
    adapters (its first output is the trained model's), and only the adapters' L (2Cr + r + C + 1) parameters
    change (BatchNorm's running statistics follow the data, as in any training); a resumed run does not need the
    source any more."""
    import shutil

    base = train_run(tiny_config(tmp_path), run_dir=tmp_path / "base", quiet=True)
    overrides = [f"train.init_from={base.run_dir}", "train.gin_adapter=4", "train.lr=1e-2"]
    config = tiny_config(tmp_path, *overrides)
    dataset = build_dataset(config)
    model = build_model(config, dataset, initial_weights=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    C, r, L = config.model.hidden, 4, config.model.num_layers
    assert sum(p.numel() for p in trainable) == L * (2 * C * r + r + C + 1)
    tuned = train_run(config, run_dir=tmp_path / "tuned", quiet=True)
    start = load_checkpoint(base.run_dir / "best.pt")["model"]
    end = load_checkpoint(tuned.run_dir / "last.pt")["model"]
    source = {k: k.replace("attention.attention.", "attention.") for k in end}   # the adapter wraps the attention
    statistics = ("running_mean", "running_var", "num_batches_tracked")     # BatchNorm's buffers follow the data
    changed = {k for k in end if not k.endswith(statistics)
               and (source[k] not in start or not torch.equal(end[k], start[source[k]]))}
    assert changed and all(".mlp." in k or k.endswith(".eps") for k in changed)
    # zero adapters: the fine-tuning run's model before its first step is the trained one
    fresh = build_model(config, dataset, initial_weights=True).eval()
    with torch.no_grad():
        base_model = build_model(tiny_config(tmp_path), dataset)
        base_model.load_state_dict(start)
        batch = Graph.batch(dataset.val[:4])
        torch.testing.assert_close(fresh(batch), base_model.eval()(batch))
    with pytest.raises(ValueError, match="gin_adapter"):
        tiny_config(tmp_path, "train.gin_adapter=0")
    shutil.rmtree(base.run_dir)   # continuing the fine-tuning run reads its own last.pt, not the source
    build_model(config, dataset)
