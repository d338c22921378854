"""Pretrained checkpoints: export a run, score it again from its regenerated test split, and the shipped ones load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsegt.cli import main
from sparsegt.train.presets import get_preset
from sparsegt.train.pretrained import evaluate_pretrained, export_pretrained, list_pretrained, pretrained_root
from sparsegt.train.run import train_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny_gps_run(tmp_path, moving: bool = False):
    config = get_preset("gps-pattern")
    config.train.val_with_moving_stats = moving
    config.data.name, config.data.root = "pattern-tiny", str(tmp_path / "data")
    config.model.num_layers, config.model.hidden, config.model.lap_pe.k = 2, 32, 4
    config.train.epochs, config.train.warmup_epochs, config.train.bn_recalibration = 2, 0, 2
    return train_run(config, run_dir=tmp_path / "run", quiet=True)


@pytest.mark.parametrize("checkpoint", ["best.pt", "best_moving.pt"])
def test_export_then_evaluate_reproduces_the_recorded_test_metric(tmp_path, capsys, checkpoint):
    """best.pt: our selection (recalibrated BatchNorm statistics); best_moving.pt: GraphGPS's (moving averages)."""
    result = _tiny_gps_run(tmp_path, moving=checkpoint == "best_moving.pt")
    folder = export_pretrained(result.run_dir, "tiny-gps", published=0.5, source="none: a test",
                               root=tmp_path / "pretrained", checkpoint=checkpoint)
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "config.yaml", "model.pt", "model_inputs.json"]
    card = json.loads((folder / "card.json").read_text())
    selected = result.summary["moving_stats"] if checkpoint == "best_moving.pt" else result.summary
    assert card["test_metric"] == pytest.approx(selected["test_metric"])
    assert card["val_metric"] == pytest.approx(selected["val_metric"])
    # weights only: a plain state_dict that loads with weights_only=True
    assert all(isinstance(v, torch.Tensor) for v in torch.load(folder / "model.pt", weights_only=True).values())
    scored = evaluate_pretrained("tiny-gps", root=tmp_path / "pretrained")
    # the same weights (with the BatchNorm statistics of the selected epoch) on the same regenerated split
    assert scored["measured"]["metric"] == pytest.approx(card["test_metric"], abs=1e-6)
    assert scored["measured"]["metric_per_batch"] == pytest.approx(card["test_metric_per_batch"], abs=1e-6)
    assert list(list_pretrained(tmp_path / "pretrained")) == ["tiny-gps"]
    with pytest.raises(ValueError, match="available: tiny-gps"):
        evaluate_pretrained("nope", root=tmp_path / "pretrained")


def test_shipped_pretrained_models_load_and_score_a_slice(monkeypatch, capsys):
    shipped = list_pretrained()
    assert shipped, f"no pretrained models under {pretrained_root()}"
    for name, card in shipped.items():
        assert card["published"] is not None and card["published_source"]
        scored = evaluate_pretrained(name, limit=4)
        assert scored["measured"]["graphs"] == 4
        assert 0.0 <= scored["measured"]["metric"] <= 1.0 and math.isfinite(scored["measured"]["loss"])
    name = next(iter(shipped))
    assert main(["eval", "--pretrained", name, "--limit", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "measured now" in out and "published" in out
    assert main(["eval", "--pretrained", "list"]) == 0
    assert name in capsys.readouterr().out
