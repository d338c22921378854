"""`sparsegt sweep`: the space, the trials' order, resuming, the table and the plot (tiny runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsegt.cli import main
from sparsegt.train.sweep import Dimension, Sweep, parse_dimension

TINY = ["--preset", "demo-pattern", "data.name=pattern-tiny", "train.epochs=1", "train.batches_per_epoch=2",
        "model.num_layers=1", "model.hidden=8", "model.lap_pe=null", "train.chance_check_epochs=0", "-q"]


def test_dimensions_parse_choices_and_ranges_and_refuse_bad_specs():
    assert parse_dimension("train.lr=1e-3,5e-4") == Dimension("train.lr", "choice", values=(1e-3, 5e-4))
    assert parse_dimension("model.local=gine,gatedgcn").values == ("gine", "gatedgcn")
    assert parse_dimension("train.lr=loguniform:1e-4:1e-2") == Dimension("train.lr", "loguniform", low=1e-4,
                                                                          high=1e-2)
    assert parse_dimension("model.hidden=int:16:64").kind == "int"
    for bad in ("train.lr", "train.lr=", "train.lr=loguniform:0:1", "train.lr=uniform:2:1", "x=1,1",
                "x=int:1:2:3"):
        with pytest.raises(ValueError):
            parse_dimension(bad)


def test_random_draws_are_seeded_and_inside_their_ranges(tmp_path):
    from sparsegt.train.presets import get_preset

    dims = [parse_dimension("train.lr=loguniform:1e-4:1e-2"), parse_dimension("model.hidden=int:16:64"),
            parse_dimension("model.dropout=0,0.1,0.2")]
    plans = [Sweep.create(tmp_path / name, get_preset("demo-pattern"), dims, "random", 20, seed=3).planned_values()
             for name in ("a", "b")]
    assert plans[0] == plans[1] and len(plans[0]) == 20
    lrs = np.array([p["train.lr"] for p in plans[0]])
    assert (lrs >= 1e-4).all() and (lrs <= 1e-2).all() and lrs.std() > 0
    assert {p["model.hidden"] for p in plans[0]} <= set(range(16, 65))
    assert {p["model.dropout"] for p in plans[0]} <= {0, 0.1, 0.2}
    with pytest.raises(ValueError, match="a grid needs a list of values"):
        Sweep.create(tmp_path / "c", get_preset("demo-pattern"), dims, "grid")
    with pytest.raises(ValueError, match="unknown|did you mean"):
        Sweep.create(tmp_path / "d", get_preset("demo-pattern"), [parse_dimension("train.lrr=1,2")], "grid")


def test_grid_sweep_runs_every_trial_resumes_and_reports(tmp_path, capsys):
    args = ["sweep", *TINY, "data.root=" + str(tmp_path / "data"), "--out-dir", str(tmp_path), "--name", "lr",
            "--param", "train.lr=1e-3,3e-3", "--param", "model.dropout=0,0.1"]
    assert main(args) == 0
    folder = tmp_path / "sweeps" / "lr"
    record = json.loads((folder / "sweep.json").read_text())
    assert sorted(record["done"]) == [0, 1, 2, 3]
    configs = [(folder / f"trial-{i:03d}" / "config.yaml").read_text() for i in range(4)]
    assert "lr: 0.003" in configs[2] and "dropout: 0.1" in configs[3]  # grid order: the last key varies fastest
    out = capsys.readouterr().out
    assert "best validation first" in out and (folder / "sweep.png").stat().st_size > 1000
    # cut trial 2 short (its summary gone, its checkpoint kept) and run the sweep again: only trial 2 runs
    (folder / "trial-002" / "summary.json").unlink()
    before = {i: (folder / f"trial-{i:03d}" / "metrics.jsonl").stat().st_mtime_ns for i in (0, 1, 3)}
    assert main(["sweep", "--resume", str(folder), "-q"]) == 0
    assert "trial 3/4" in capsys.readouterr().out and (folder / "trial-002" / "summary.json").exists()
    assert before == {i: (folder / f"trial-{i:03d}" / "metrics.jsonl").stat().st_mtime_ns for i in (0, 1, 3)}
    assert main(["sweep", *TINY, "--out-dir", str(tmp_path), "--name", "lr", "--param", "train.lr=1"]) == 2


def test_optuna_sweep_runs_and_resumes(tmp_path):
    pytest.importorskip("optuna", reason="the sweep extra (pip install 'sparsegt[sweep]'; make installs it)")
    args = ["sweep", *TINY, "data.root=" + str(tmp_path / "data"), "--out-dir", str(tmp_path), "--name", "tpe",
            "--method", "optuna", "--trials", "2", "--param", "train.lr=loguniform:1e-4:1e-2"]
    assert main(args) == 0
    folder = tmp_path / "sweeps" / "tpe"
    assert (folder / "optuna.db").exists() and len(list(folder.glob("trial-*/summary.json"))) == 2
    assert main(["sweep", "--resume", str(folder), "-q"]) == 0  # all done: nothing more runs
    assert len(list(folder.glob("trial-*"))) == 2
