"""`sparsegt sparsify` on a tiny trained run: Zero-TPrune's before/after table and the FFN activation densities."""

from __future__ import annotations

import pytest

from sparsegt.cli import main
from sparsegt.train.presets import get_preset
from sparsegt.train.run import train_run
from sparsegt.train.sparsify_run import activation_density_run, zero_tprune_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    """GPS (3 layers, 16 wide, full attention, LapPE 4) on pattern-tiny, 2 epochs of 3 batches."""
    root = tmp_path_factory.mktemp("pattern")
    config = get_preset("gps-pattern")
    config.data.name, config.data.root = "pattern-tiny", str(root / "data")
    config.model.num_layers, config.model.hidden, config.model.lap_pe.k, config.model.lap_pe.dim = 3, 16, 4, 4
    config.train.epochs, config.train.warmup_epochs, config.train.bn_recalibration = 2, 0, 2
    config.train.batches_per_epoch, config.train.loggers, config.train.chance_check_epochs = 3, [], 0
    return train_run(config, run_dir=root / "run", quiet=True).run_dir


def test_zero_tprune_command_prints_the_before_after_table(pattern_run, capsys):
    code = main(["sparsify", str(pattern_run), "--method", "zero-tprune", "--ratio", "0.3", "--device", "cpu",
                 "--limit", "6"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Zero-TPrune" in out and "before" in out and "after" in out
    assert "nodes kept" in out and "ms per graph" in out and "weighted_accuracy" in out


def test_zero_tprune_prunes_the_nodes_it_says(pattern_run):
    report = zero_tprune_run(pattern_run, 0.3, device="cpu", limit=6)
    assert report.prune_after == {0: 0.3, 1: 0.3} and report.graphs == 6
    assert 0 < report.nodes_after < report.nodes_before
    one_layer = zero_tprune_run(pattern_run, 0.3, layers=[1], device="cpu", limit=6)
    assert report.nodes_after < one_layer.nodes_after < one_layer.nodes_before == report.nodes_before


def test_ratio_zero_keeps_every_node_and_the_metric(pattern_run, capsys):
    report = zero_tprune_run(pattern_run, 0.0, device="cpu", limit=6)
    assert report.nodes_after == report.nodes_before
    assert report.metric_after == report.metric_before
    assert main(["sparsify", str(pattern_run), "--method", "zero-tprune", "--ratio", "0", "--device", "cpu",
                 "--limit", "6"]) == 0
    assert "100.0%" in capsys.readouterr().out


def test_activation_density_command_prints_one_row_per_ffn(pattern_run, capsys):
    density = activation_density_run(pattern_run, device="cpu", limit=6)
    assert list(density) == [f"layers.{i}.feed_forward" for i in range(3)]
    assert all(0.0 < fraction < 1.0 for fraction in density.values())
    assert main(["sparsify", str(pattern_run), "--method", "activation-density", "--device", "cpu",
                 "--limit", "6"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in density)


@pytest.mark.parametrize("argv, message", [
    (["--method", "zero-tprune"], "needs --ratio"),
    (["--method", "zero-tprune", "--ratio", "1.0"], "must be in [0, 1)"),
    (["--method", "zero-tprune", "--ratio", "0.3", "--layers", "2"], "layer index 2"),
    (["--method", "activation-density", "--ratio", "0.3"], "options of --method zero-tprune"),
])
def test_wrong_options_are_explained(pattern_run, capsys, argv, message):
    assert main(["sparsify", str(pattern_run), *argv, "--device", "cpu", "--limit", "2"]) == 2
    assert message in capsys.readouterr().err.replace("\n", "")
