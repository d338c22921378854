"""The demo (`sparsegt train` with no arguments): CSL and marker readout, one model with its parts taken out,
an honest verdict under each table."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sparsegt.train.config import config_to_dict
from sparsegt.train.demo import (
    DEMO_VARIANTS,
    GPS,
    MARKER_VARIANTS,
    NO_ATTENTION,
    NO_MPNN,
    long_range_verdict,
    run_demo,
    verdict,
)
from sparsegt.train.presets import DEFAULT_PRESET, demo_config, get_preset, marker_demo_config


def test_the_default_run_is_gps_with_lappe_on_csl():
    config = get_preset(DEFAULT_PRESET)
    assert config == demo_config()
    assert (config.data.name, config.data.options) == ("csl", {"fold": 0})
    model = config.model
    assert (model.layer, model.local, model.attention, model.lap_pe.k) == ("gps", "gatedgcn", "full", 16)


def test_the_variants_differ_only_in_the_part_they_take_out():
    def flat(config) -> dict:
        d = config_to_dict(config)
        return {f"{section}.{key}": value for section, fields in d.items() if isinstance(fields, dict)
                for key, value in fields.items()}

    full = flat(DEMO_VARIANTS[0].config(fold=3))
    assert full["data.options"] == {"fold": 3}
    names = set()
    for variant in DEMO_VARIANTS:
        config = variant.config(fold=3)
        names.add(config.name)
        differ = {key for key, value in flat(config).items() if value != full[key]}
        assert differ <= {"model.attention", "model.local", "model.lap_pe"}, variant.label
        assert (config.model.attention != "none", config.model.local != "none", config.model.lap_pe is not None) \
            == (variant.attention, variant.mpnn, variant.lap_pe)
    assert len(names) == len(DEMO_VARIANTS), "every variant has its own run folder name"
    assert {v.label for v in DEMO_VARIANTS[:2]} == {GPS, NO_ATTENTION}


def test_the_marker_runs_are_the_same_model_on_the_long_range_task():
    def flat(config) -> dict:
        d = config_to_dict(config)
        return {f"{section}.{key}": value for section, fields in d.items() if isinstance(fields, dict)
                for key, value in fields.items()}

    assert get_preset("demo-marker") == marker_demo_config()
    assert {v.label for v in MARKER_VARIANTS} == {GPS, NO_ATTENTION, NO_MPNN}
    names = set()
    for variant in MARKER_VARIANTS:
        config = variant.marker_config(seed=2)
        names.add(config.name)
        assert (config.data.name, config.data.options, config.train.seed) == ("marker", {"num_train": 500}, 2)
        same_parts = flat(variant.config(fold=0))
        differ = {key for key, value in flat(config).items() if value != same_parts[key]}
        assert differ <= {"data.name", "data.options", "data.batch_size", "train.epochs", "train.seed",
                          "train.time_limit_min"}, variant.label
    assert len(names) == len(MARKER_VARIANTS) and not names & {v.config(0).name for v in DEMO_VARIANTS}


def test_the_pattern_demo_stays_a_preset():
    config = get_preset("demo-pattern")
    assert (config.data.name, config.train.epochs, config.model.lap_pe.k) == ("pattern-small", 4, 8)


def _rows(**means: float) -> dict:
    labels = {"gps": GPS, "base": NO_ATTENTION}
    rows = {v.label: {"test_mean": 100.0 if v.lap_pe else 10.0, "train_time_s": 10.0} for v in DEMO_VARIANTS}
    for key, mean in means.items():
        rows[labels[key]]["test_mean"] = mean
    rows[GPS]["train_time_s"] = 20.0
    return rows


def test_the_verdict_says_what_the_numbers_say():
    text = verdict(_rows())
    assert "score 10.0 % (chance: 10 %)" in text and "with LapPE 100.0 %" in text
    assert "adds nothing (100.0 vs 100.0 %) at 2.0x the training time" in text
    assert "the positional encoding, not attention, is what separates the classes" in text
    assert "costs 10.0 points" in verdict(_rows(gps=90.0))
    wins = verdict(_rows(gps=100.0, base=40.0))
    assert "adds 60.0 points" in wins and "not attention" not in wins


def _marker_rows(gps: float, base: float, attention: float) -> dict:
    rows = {GPS: {"test_mean": gps, "train_time_s": 30.0}, NO_ATTENTION: {"test_mean": base, "train_time_s": 20.0},
            NO_MPNN: {"test_mean": attention, "train_time_s": 20.0}}
    return rows


REACH = {"hops": 3, "share": 10.0, "chance": 25.0, "ceiling": 32.5}


def test_the_long_range_verdict_says_what_the_numbers_say():
    text = long_range_verdict(_marker_rows(100.0, 31.6, 99.0), REACH)
    assert "adds 68.4 points (100.0 vs 31.6 %) at 1.5x the training time" in text
    assert "from the 10.0 % of test nodes within 3 hops of it, which allows 32.5 % (chance 25 % elsewhere)" in text
    assert "attention's reach is what lifts the same model (same PE) past that ceiling" in text
    assert "attention without the MPNN scores 99.0 %" in text
    flat = long_range_verdict(_marker_rows(32.0, 31.6, 30.0), REACH)
    assert "adds 0.4 points" in flat and "past that ceiling" not in flat
    beyond = long_range_verdict(_marker_rows(100.0, 60.0, 99.0), REACH)  # the MPNN above its reach: no claim
    assert "adds 40.0 points" in beyond and "past that ceiling" not in beyond


def test_the_demo_trains_every_variant_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    out = io.StringIO()
    summary = run_demo(quiet=True, console=Console(file=out, width=160), out_dir=str(tmp_path / "runs"),
                       folds=(0,), marker_seeds=(0,), epochs=1, processes=1)
    assert torch.get_num_threads() == threads, "the in-process path gives the caller its thread count back"
    text = out.getvalue()
    for variant in DEMO_VARIANTS:
        assert variant.label in text
    assert summary["verdict"] in " ".join(text.split())
    assert set(summary["models"]) == {v.label for v in DEMO_VARIANTS}
    for variant in DEMO_VARIANTS:
        row = summary["models"][variant.label]
        assert row["epochs_run"] == [1] and len(row["test_per_fold"]) == 1
        if not variant.lap_pe:
            assert row["test_mean"] == 10.0, "CSL without PE: every node looks alike, so chance"
    long_range = summary["long_range"]
    assert "Marker readout" in text and long_range["verdict"] in " ".join(text.split())
    assert set(long_range["models"]) == {v.label for v in MARKER_VARIANTS}
    for row in long_range["models"].values():
        assert row["epochs_run"] == [1] and len(row["test_per_seed"]) == 1
    reach = long_range["reach"]
    assert 0 < reach["share"] < 30 and reach["chance"] == 25.0, "most nodes are more than 3 hops from the marker"
    assert reach["ceiling"] == pytest.approx(reach["share"] + (100 - reach["share"]) / 4)
    [parent] = (tmp_path / "runs").iterdir()
    assert json.loads((parent / "summary.json").read_text())["models"].keys() == summary["models"].keys()
    assert (Path(summary["models"][GPS]["run_dirs"][0]) / "log.txt").exists()
