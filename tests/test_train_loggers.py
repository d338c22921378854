"""TensorBoard event files beside metrics.jsonl (read back with tensorboard's own reader), resume, W&B, confusion."""

from __future__ import annotations

import csv
import importlib.machinery
import json
import sys
import types

import pytest
import torch

from sparsegt.graph import Graph
from sparsegt.train.checkpoint import load_checkpoint
from sparsegt.train.confusion import confusion_matrix
from sparsegt.train.loggers import epoch_scalars
from sparsegt.train.trainer import Trainer, seed_everything
from tests.test_train import TinyNodeModel, fit_tiny, tiny_config, tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _events(run_dir):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def _expected(history, metric):
    expected: dict[str, list] = {}
    for record in history:
        for tag, value in epoch_scalars(record, metric).items():
            expected.setdefault(tag, []).append((record["epoch"] + 1, value))
    return expected


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    run = fit_tiny(tmp_path / "run").run_dir
    assert list(run.glob("events.out.tfevents.*")), "no event file beside metrics.jsonl"
    events, history = _events(run), _history(run)
    expected = _expected(history, "weighted_accuracy")
    for tag in ("loss/train", "loss/val", "weighted_accuracy/train", "weighted_accuracy/val", "lr",
                "throughput/graphs_per_s"):
        assert tag in expected
    for tag, points in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in points], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert [step for step, _ in events["memory/peak_mb"]] == [1, 2, 3]
    assert all(v > 0 for _, v in events["memory/peak_mb"])


def test_resumed_run_continues_the_same_steps_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    fit_tiny(tmp_path / "run", tiny_config(epochs=2))
    run = fit_tiny(tmp_path / "run", tiny_config(epochs=4), resume=True).run_dir
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one file per process, read as one run
    events, history = _events(run), _history(run)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert [step for step, _ in events["loss/train"]] == [1, 2, 3, 4]
    assert [v for _, v in events["loss/train"]] == pytest.approx([r["train_loss"] for r in history], rel=1e-6)


def test_no_loggers_writes_no_event_file_and_unknown_logger_is_an_error(tmp_path):
    run = fit_tiny(tmp_path / "run", tiny_config(loggers=[])).run_dir
    assert not list(run.glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="unknown logger.*tensorboard, wandb"):
        tiny_config(loggers=["mlflow"])


def test_wandb_logger_gets_the_same_scalars(tmp_path, monkeypatch):
    calls: dict[str, list] = {"init": [], "log": [], "finish": []}

    class FakeRun:
        def log(self, scalars, step):
            calls["log"].append((step, dict(scalars)))

        def finish(self):
            calls["finish"].append(True)

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kwargs: calls["init"].append(kwargs) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = fit_tiny(tmp_path / "run", tiny_config(loggers=["wandb"])).run_dir
    (init,) = calls["init"]
    assert init["mode"] == "offline" and init["dir"] == str(run) and init["resume"] == "allow"
    assert init["config"]["train"]["loggers"] == ["wandb"]
    history = _history(run)
    assert [step for step, _ in calls["log"]] == [1, 2, 3]
    for (_, scalars), record in zip(calls["log"], history):
        assert scalars["loss/train"] == record["train_loss"] and scalars["lr"] == record["lr"]
    assert calls["finish"] == [True]


def test_confusion_matrix_of_the_best_model_on_test(tmp_path):
    result = fit_tiny(tmp_path / "run")
    run = result.run_dir
    record = json.loads((run / "confusion.json").read_text())
    dataset = tiny_dataset()
    # direct: the best checkpoint's weights, eval mode, every test node, argmax against the label
    config = tiny_config()
    seed_everything(0)
    model = TinyNodeModel(config.model)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    model.eval()
    with torch.no_grad():
        batch = Graph.batch(dataset.test)
        logits = model(batch)
    direct = torch.zeros(2, 2, dtype=torch.long)
    for true, predicted in zip(batch.node_data["y"].tolist(), logits.argmax(1).tolist()):
        direct[true, predicted] += 1
    assert record["matrix"] == direct.tolist() and record["split"] == "test"
    assert record["best_epoch"] == result.summary["best_epoch"]
    rows = list(csv.reader((run / "confusion.csv").read_text().splitlines()))
    assert rows[0] == ["true \\ predicted", "0", "1"]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == direct.tolist()
    assert confusion_matrix(logits, batch.node_data["y"], dataset.task).tolist() == direct.tolist()
    _assert_png(run / "confusion.png")


def _assert_png(path, min_side=200):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side, image.size


def test_regression_runs_have_no_confusion_plot(tmp_path):
    from sparsegt.data.spec import TaskSpec
    from sparsegt.train.confusion import num_classes

    assert num_classes(TaskSpec("graph", "regression", 1, "mae", False)) is None
    assert num_classes(TaskSpec("graph", "binary", 3, "roc_auc")) is None
    assert num_classes(TaskSpec("graph", "binary", 1, "roc_auc")) == 2
    binary = confusion_matrix(torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 1, 0]),
                              TaskSpec("graph", "binary", 1, "roc_auc"))
    assert binary.tolist() == [[0, 1], [1, 1]]


def test_trainer_without_a_run_dir_logs_nothing(tmp_path):
    dataset = tiny_dataset()
    config = tiny_config(epochs=1)
    trainer = Trainer(config, TinyNodeModel(config.model), dataset.task, dataset.train, dataset.val, dataset.test)
    trainer.fit()
    assert trainer.loggers == [] and not list(tmp_path.iterdir())
