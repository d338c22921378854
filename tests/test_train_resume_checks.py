"""`sparsegt.train.resume`: the checks of a run folder to continue, in one place for `train_run` and the CLI."""

from __future__ import annotations

import pytest

from sparsegt.train.config import dump_config, load_config
from sparsegt.train.resume import checkpoint_to_continue, open_run, record_config
from sparsegt.train.run import train_run

from .test_train import TinyNodeModel, fit_tiny, tiny_config, tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_a_folder_without_config_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match="is not a run directory"):
        open_run(tmp_path)
    with pytest.raises(ValueError, match="is not a run directory"):
        train_run(resume=tmp_path)


def test_overrides_are_applied_and_recorded(tmp_path):
    fit_tiny(tmp_path / "run", tiny_config(epochs=2))
    config = load_config(tmp_path / "run" / "config.yaml", base=tiny_config())
    run = open_run(tmp_path / "run", ["train.epochs=4", "train.lr=0.005"], config=config)
    assert run.config.train.epochs == 4 and run.overrides == ("train.epochs=4", "train.lr=0.005")
    assert checkpoint_to_continue(run) == tmp_path / "run" / "last.pt"
    summary = train_run(resume=run, model=TinyNodeModel(run.config.model), dataset=tiny_dataset(), quiet=True).summary
    assert summary["epochs_run"] == 4 and summary["epochs_planned"] == 4
    assert load_config(tmp_path / "run" / "config.yaml", base=tiny_config()).train.epochs == 4
    (kept,) = (tmp_path / "run").glob("config.before-resume-*.yaml")
    assert load_config(kept, base=tiny_config()).train.epochs == 2


def test_record_config_keeps_nothing_when_nothing_changed(tmp_path):
    config = tiny_config()
    dump_config(config, tmp_path / "config.yaml")
    assert record_config(tmp_path, config) is None
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_place(tmp_path):
    dump_config(tiny_config(), tmp_path / "config.yaml")
    (tmp_path / "metrics.jsonl").write_text("")
    run = open_run(tmp_path, config=tiny_config(epochs=1))
    assert checkpoint_to_continue(run) is None
    (tmp_path / "best.pt").write_bytes(b"")  # results but no last.pt
    with pytest.raises(ValueError, match="has no last.pt to resume from"):
        checkpoint_to_continue(run)
