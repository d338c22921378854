"""`TrainingState`: the trainer's state in one value, its round trip through a checkpoint, and the checkpoints
written before it existed (issue #15).

``fixtures/trainer_last_format1.pt`` is a ``last.pt`` written mid-epoch by the trainer as it was before
`TrainingState` (commit c4eee98), by `test_train.py`'s crash run::

    config = tiny_config(epochs=3, checkpoint_every_batches=2); config.model.crash_after = 8
    fit_tiny(run_dir, config)   # raises "simulated crash" in epoch 2, batch 4; last.pt is after batch 2

Never regenerate it: it stands for the checkpoints of runs started with older code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sparsegt.train import checkpoint as ckpt
from sparsegt.train.config import dump_config
from sparsegt.train.state import BestEvaluation, EpochTotals, PlateauState, TrainingState
from sparsegt.train.trainer import Trainer

from .test_train import TinyNodeModel, fit_tiny, tiny_config, tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

OLD_CHECKPOINT = Path(__file__).parent / "fixtures" / "trainer_last_format1.pt"


def _busy_state() -> TrainingState:
    totals = EpochTotals()
    totals.add(0.5, torch.tensor([[0.1, 0.9], [0.3, 0.7]]), torch.tensor([1, 0]), num_graphs=1)
    totals.add(0.25, torch.tensor([[0.6, 0.4]]), torch.tensor([0]), num_graphs=1)
    return TrainingState(
        epoch=4, next_batch=3,
        history=[{"epoch": e, "train_loss": 1.0 / (e + 1), "elapsed_s": 2.0 * e} for e in range(4)],
        best=BestEvaluation(epoch=2, val_metric=0.8, test_metric=0.75, test_metric_per_batch=0.7, val_loss=0.4),
        best_moving=BestEvaluation(epoch=3, val_metric=0.85, test_metric=0.8, test_metric_per_batch=0.78, val_loss=0.5),
        bad_evals=1, plateau=PlateauState(scale=0.5, best_loss=0.4, bad=2), elapsed_s=9.5, status="running",
        warnings=["a warning"], final_test={"metric": 0.7, "metric_per_batch": 0.65}, totals=totals,
    )


def _assert_same(a: TrainingState, b: TrainingState) -> None:
    assert a.state_dict() == b.state_dict()
    ta, tb = a.totals.state_dict(), b.totals.state_dict()
    for key in ("loss", "items", "graphs"):
        assert ta[key] == tb[key], key
    for key in ("predictions", "targets"):
        assert (ta[key] is None) == (tb[key] is None) and (ta[key] is None or torch.equal(ta[key], tb[key])), key


def test_state_round_trips_through_its_dict_and_a_checkpoint_file(tmp_path):
    state = _busy_state()
    saved = {**state.state_dict(), "acc": state.totals.state_dict()}
    ckpt.save_checkpoint(saved, tmp_path / "state.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "state.pt")
    again = TrainingState.from_dict(loaded, totals=loaded["acc"])
    _assert_same(state, again)
    assert again.totals.loss == pytest.approx(0.5 * 2 + 0.25) and again.totals.items == 3
    assert isinstance(again.best, BestEvaluation) and isinstance(again.plateau, PlateauState)


def test_epoch_sums_are_kept_only_mid_epoch():
    state = _busy_state()
    state.next_batch = 0  # at an epoch boundary the sums start again
    again = TrainingState.from_dict(state.state_dict(), totals=state.totals.state_dict())
    assert again.totals.items == 0 and again.totals.predictions == []


def test_trainer_state_round_trips_through_last_pt(tmp_path):
    """save -> load -> identical state (and RNG), through `Trainer.state_dict` / `Trainer.resume`."""
    config = tiny_config(epochs=3, checkpoint_every_batches=2)
    config.model.crash_after = 8
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tmp_path / "cut", config)
    data = tiny_dataset()
    first = Trainer(tiny_config(), TinyNodeModel(config.model), data.task, data.train, data.val, data.test)
    first.resume(tmp_path / "cut" / "last.pt")
    assert (first.state.epoch, first.state.next_batch) == (1, 2) and first.state.totals.items > 0
    ckpt.save_checkpoint(first.state_dict(), tmp_path / "again.pt")
    expected_random = torch.rand(3)
    second = Trainer(tiny_config(), TinyNodeModel(config.model), data.task, data.train, data.val, data.test)
    second.resume(tmp_path / "again.pt")
    _assert_same(first.state, second.state)
    assert torch.equal(torch.rand(3), expected_random)  # the RNG state came back too


def test_a_checkpoint_of_the_older_trainer_resumes_bit_exactly(tmp_path):
    """A last.pt written before `TrainingState` loads, and the run it continues ends where an uninterrupted run
    of today's code ends (the checkpoint's keys are still the ones read)."""
    old = ckpt.load_checkpoint(OLD_CHECKPOINT)
    assert "final_test" not in old and "best_moving" not in old and "test_metric_per_batch" in old["best"]
    data = tiny_dataset()
    config = tiny_config(epochs=3)
    trainer = Trainer(config, TinyNodeModel(config.model), data.task, data.train, data.val, data.test)
    trainer.resume(OLD_CHECKPOINT)
    state = trainer.state
    assert (state.epoch, state.next_batch, state.bad_evals) == (old["epoch"], old["next_batch"], old["bad_evals"])
    assert state.best.state_dict() == old["best"] and state.plateau.state_dict() == old["plateau"]
    assert state.best_moving == BestEvaluation()  # never recorded: nothing selected
    assert state.history == old["history"] and state.elapsed_s == old["elapsed_s"]
    assert state.totals.items == old["ranks"][0]["acc"]["items"]
    assert torch.equal(torch.cat(state.totals.predictions), old["ranks"][0]["acc"]["predictions"])

    full = fit_tiny(tmp_path / "full", tiny_config(epochs=3)).summary
    run = tmp_path / "old"
    run.mkdir()
    shutil.copy(OLD_CHECKPOINT, run / "last.pt")
    dump_config(tiny_config(epochs=3), run / "config.yaml")
    resumed = fit_tiny(run, tiny_config(epochs=3), resume=True).summary
    for key in ("val_metric", "test_metric", "final_test_metric", "final_train_loss", "best_epoch", "epochs_run"):
        assert resumed[key] == full[key], key
    full_history = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed_history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(full_history, resumed_history, strict=True):
        assert (a["train_loss"], a["val_metric"], a["lr"]) == (b["train_loss"], b["val_metric"], b["lr"])


def test_plateau_state_cuts_the_rate_after_patience():
    plateau = PlateauState()
    assert not plateau.step(1.0, patience=1, factor=0.5)  # first loss: the best so far
    assert not plateau.step(1.0, patience=1, factor=0.5)  # no better: bad = 1
    assert plateau.step(1.0, patience=1, factor=0.5)  # bad = 2 > patience: cut
    assert (plateau.scale, plateau.bad) == (0.5, 0)
    assert not plateau.step(0.5, patience=1, factor=0.5) and plateau.best_loss == 0.5


def test_the_trainer_sets_every_attribute_in_init():
    """No attribute appears only once fit() ran (issue #15: nothing set outside __init__)."""
    data = tiny_dataset()
    config = tiny_config(epochs=1)
    trainer = Trainer(config, TinyNodeModel(config.model), data.task, data.train, data.val, data.test)
    before = set(vars(trainer))
    trainer.fit()
    assert set(vars(trainer)) == before
    assert not hasattr(trainer, "cfg")
