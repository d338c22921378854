"""The demo (`sparsegt train` with no arguments): CSL, one model with its parts taken out, an honest verdict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from rich.console import Console

from sparsegt.train.config import config_to_dict
from sparsegt.train.demo import DEMO_VARIANTS, GPS, NO_ATTENTION, run_demo, verdict
from sparsegt.train.presets import DEFAULT_PRESET, demo_config, get_preset


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


def test_the_demo_trains_every_variant_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    out = io.StringIO()
    summary = run_demo(quiet=True, console=Console(file=out, width=160), out_dir=str(tmp_path / "runs"),
                       folds=(0,), epochs=1, processes=1)
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
    [parent] = (tmp_path / "runs").iterdir()
    assert json.loads((parent / "summary.json").read_text())["models"].keys() == summary["models"].keys()
    assert (Path(summary["models"][GPS]["run_dirs"][0]) / "log.txt").exists()
