"""Trainer pieces: config overrides and YAML, losses, schedule, atomic checkpoints, NaN stop, fit/resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.graph import Graph
from sparsegt.train import checkpoint as ckpt
from sparsegt.train.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_keys,
    dump_config,
    load_config,
)
from sparsegt.train.losses import make_loss, resolve_loss_name, weighted_cross_entropy
from sparsegt.train.run import train_run
from sparsegt.train.schedule import warmup_cosine_lr
from sparsegt.train.trainer import Trainer, TrainingDiverged, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------- stand-ins
@dataclasses.dataclass
class TinyModelConfig:
    hidden: int = 8
    dropout: float = 0.1
    blow_up_after: int | None = None  # steps after which the forward returns NaN (the NaN-stop test)
    crash_after: int | None = None  # steps after which the forward raises (a crash mid-epoch)
    sleep_s: float = 0.0  # per training forward, so a subprocess can be killed mid-epoch
    inf_grad_after: int | None = None  # steps after which the loss stays finite but its gradient is infinite
    constant_output: bool = False  # logits 0 whatever the input: a model that cannot learn (the chance check)


class _InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * float("inf")


class TinyNodeModel(nn.Module):
    """One mean-aggregation layer and a linear head: node logits [N, C]."""

    def __init__(self, config: TinyModelConfig, num_classes: int = 2, cardinality: int = 3) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(cardinality, config.hidden)
        self.mix = nn.Linear(2 * config.hidden, config.hidden)
        self.head = nn.Linear(config.hidden, num_classes)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, batch: Graph) -> torch.Tensor:
        h = self.embed(batch.x[:, 0])
        agg = torch.zeros_like(h).index_add_(0, batch.row_index(), h[batch.indices])
        agg = agg / batch.degree().clamp(min=1)[:, None]
        h = self.dropout(torch.relu(self.mix(torch.cat([h, agg], 1))))
        out = self.head(h)
        if self.config.constant_output:
            out = out * 0.0
        if self.training:
            time.sleep(self.config.sleep_s)
            self.steps += 1
            if self.config.blow_up_after is not None and int(self.steps) > self.config.blow_up_after:
                out = out * float("nan")
            if self.config.crash_after is not None and int(self.steps) > self.config.crash_after:
                raise RuntimeError("simulated crash")
            if self.config.inf_grad_after is not None and int(self.steps) > self.config.inf_grad_after:
                out = _InfiniteGradient.apply(out)
        return out


class TinyGraphModel(nn.Module):
    """Mean-pooled node embeddings and a linear head: graph logits [B, 2] (no dropout, no batch norm)."""

    def __init__(self, config: TinyModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, config.hidden)
        self.head = nn.Linear(config.hidden, 2)

    def forward(self, batch: Graph) -> torch.Tensor:
        h = torch.tanh(self.embed(batch.x[:, 0]))
        counts = torch.bincount(batch.batch_index, minlength=batch.num_graphs).clamp(min=1)
        pooled = torch.zeros(batch.num_graphs, h.shape[1]).index_add_(0, batch.batch_index, h) / counts[:, None]
        return self.head(pooled)


@dataclasses.dataclass
class TinyDataset:
    name: str
    train: list
    val: list
    test: list
    task: TaskSpec
    node_features: FeatureSpec = FeatureSpec("categorical", (3,))
    edge_features: FeatureSpec = FeatureSpec()


def tiny_dataset(num_graphs: int = 40, seed: int = 0) -> TinyDataset:
    """Random graphs whose node label is 1 when the node's feature equals the majority of its neighbours'."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(rng.integers(5, 12))
        src, dst = np.nonzero(np.triu(rng.random((n, n)) < 0.4, 1))
        edge_index = torch.tensor(np.stack([np.r_[src, dst], np.r_[dst, src]]), dtype=torch.long)
        x = torch.tensor(rng.integers(0, 3, (n, 1)), dtype=torch.long)
        y = torch.tensor((rng.random(n) < 0.3).astype(np.int64))
        graphs.append(Graph.from_edge_index(edge_index, n, x=x, y=y, y_level="node"))
    task = TaskSpec(level="node", kind="multiclass", num_outputs=2, metric="weighted_accuracy")
    return TinyDataset(
        "tiny",
        graphs[: num_graphs // 2],
        graphs[num_graphs // 2 : 3 * num_graphs // 4],
        graphs[3 * num_graphs // 4 :],
        task,
    )


def tiny_graph_dataset(num_graphs: int = 48, seed: int = 0) -> TinyDataset:
    """Graph label 1 when most node features are 2; splits 32 / 8 / 8."""
    base = tiny_dataset(num_graphs, seed)
    graphs = []
    for g in base.train + base.val + base.test:
        y = torch.tensor([int((g.x[:, 0] == 2).float().mean() > 0.33)])
        graphs.append(Graph(g.indptr, g.indices, x=g.x, y=y, y_level="graph"))
    task = TaskSpec(level="graph", kind="multiclass", num_outputs=2, metric="accuracy")
    return TinyDataset("tiny-graph", graphs[:32], graphs[32:40], graphs[40:], task)


def tiny_config(**train) -> RunConfig:
    defaults = dict(epochs=3, lr=1e-2, warmup_epochs=0.5, checkpoint_every_s=0, seed=0)
    defaults.update(train)
    return RunConfig(
        name="tiny",
        data=DataConfig(name="tiny", batch_size=4),
        model=TinyModelConfig(),
        train=TrainConfig(**defaults),
    )


def fit_tiny(run_dir: Path, config: RunConfig | None = None, resume: bool = False):
    config = config or tiny_config()
    seed_everything(config.train.seed)
    model = TinyNodeModel(config.model)
    return train_run(
        config,
        run_dir=run_dir,
        model=model,
        dataset=tiny_dataset(),
        resume=run_dir if resume else None,
        quiet=True,
    )


# ---------------------------------------------------------------------------------------------- config
def test_overrides_set_nested_fields_with_types():
    config = tiny_config()
    apply_overrides(
        config,
        [
            "train.epochs=7",
            "train.lr=1e-3",
            "model.hidden=32",
            "data.name=cluster-small",
            "data.options.num_graphs=12",
            "train.patience=null",
            "train.grad_clip=2",
        ],
    )
    assert config.train.epochs == 7 and config.train.lr == 1e-3 and isinstance(config.train.lr, float)
    assert config.model.hidden == 32 and config.data.name == "cluster-small"
    assert config.data.options == {"num_graphs": 12}
    assert config.train.patience is None and config.train.grad_clip == 2.0


def test_unknown_key_lists_close_matches():
    config = tiny_config()
    with pytest.raises(ValueError, match=r"train\.epoch.*did you mean train\.epochs"):
        apply_overrides(config, ["train.epoch=3"])
    with pytest.raises(ValueError, match=r"model\.hidden"):
        apply_overrides(config, ["model.hiden=3"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(config, ["train.epochs"])


def test_wrong_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"train\.epochs = 'many'.*int"):
        apply_overrides(tiny_config(), ["train.epochs=many"])


def test_yaml_round_trip(tmp_path):
    config = tiny_config(epochs=11)
    config.data.encodings = {"lap_pe": 4}
    dump_config(config, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml", base=tiny_config())
    assert dataclasses.asdict(again) == dataclasses.asdict(config)
    (tmp_path / "bad.yaml").write_text("train:\n  lr_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"train\.lr_rate.*did you mean train\.lr"):
        load_config(tmp_path / "bad.yaml", base=tiny_config())
    assert "train.checkpoint_every_s" in config_keys(config)


# ------------------------------------------------------------------------------------ loss, schedule
def test_weighted_cross_entropy_matches_benchmarking_gnns():
    torch.manual_seed(0)
    logits, target = torch.randn(10, 3), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    # Benchmarking-GNNs: weight_c = (V - n_c) / V for classes present
    weight = torch.tensor([(10 - 6) / 10, (10 - 3) / 10, (10 - 1) / 10])
    expected = nn.functional.cross_entropy(logits, target, weight=weight)
    assert torch.allclose(weighted_cross_entropy(logits, target), expected)


def test_loss_must_fit_task():
    node = TaskSpec("node", "multiclass", 2, "weighted_accuracy")
    regression = TaskSpec("graph", "regression", 1, "mae", higher_is_better=False)
    assert resolve_loss_name(node) == "weighted_cross_entropy"
    assert resolve_loss_name(regression) == "l1"
    with pytest.raises(ValueError, match="does not fit a regression task"):
        make_loss(regression, "cross_entropy")
    with pytest.raises(ValueError, match="multiclass"):
        make_loss(regression, "auto", class_weighted=True)


def test_schedule_warmup_then_cosine():
    lr = lambda p: warmup_cosine_lr(p, base_lr=1.0, epochs=10, warmup_epochs=2, min_lr=0.1)
    assert lr(1.0) == pytest.approx(0.5)
    assert lr(2.0) == pytest.approx(1.0)
    assert lr(6.0) == pytest.approx(0.55)
    assert lr(10.0) == pytest.approx(0.1)
    grid = np.linspace(2, 10, 20)
    assert all(lr(a) >= lr(b) for a, b in zip(grid[:-1], grid[1:], strict=True))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_atomic_when_the_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"step": torch.tensor(1)}, path)

    def dying_save(obj, f):  # writes half a file, then the process "dies"
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(ckpt.load_checkpoint(path)["step"]) == 1  # the old checkpoint, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_checkpoint_writes_through_a_temporary_file_and_replace(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((Path(a).name, Path(b).name)), real_replace(a, b)))
    ckpt.save_checkpoint({"x": torch.ones(3)}, tmp_path / "best.pt")
    assert len(calls) == 1 and calls[0][1] == "best.pt" and calls[0][0] != "best.pt"


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    seed_everything(3)
    state = ckpt.capture_rng_state()
    ckpt.save_checkpoint({"rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(99)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


# ---------------------------------------------------------------------------------------------- runs
def test_fit_writes_a_complete_run_dir(tmp_path):
    result = fit_tiny(tmp_path / "run")
    run = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "curves.png"):
        assert (run / name).exists(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2]
    summary = json.loads((run / "summary.json").read_text())
    best = max(history, key=lambda r: r["val_metric"])
    assert summary["status"] == "completed" and summary["best_epoch"] == best["epoch"] + 1
    assert summary["test_metric"] == best["test_metric"]  # test is reported at the best validation epoch
    assert 0.0 <= summary["test_metric"] <= 1.0


def test_train_run_gives_the_caller_its_thread_count_back(tmp_path):
    """``train.threads`` is the run's setting, not the process's (issue #20, global state)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit_tiny(tmp_path / "run", tiny_config(epochs=1, threads=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_resume_after_a_crash_mid_epoch_reproduces_the_run(tmp_path):
    full = fit_tiny(tmp_path / "full", tiny_config(epochs=3)).summary
    crashing = tiny_config(epochs=3, checkpoint_every_batches=2)
    crashing.model.crash_after = 8  # 5 batches an epoch: dies in epoch 2, batch 4; last.pt is after batch 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tmp_path / "cut", crashing)
    state = ckpt.load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (state["epoch"], state["next_batch"]) == (1, 2)
    resumed = fit_tiny(tmp_path / "cut", tiny_config(epochs=3), resume=True).summary
    for key in ("val_metric", "test_metric", "final_train_loss", "best_epoch"):
        assert resumed[key] == full[key], key
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_time_limit_stops_cleanly(tmp_path):
    summary = fit_tiny(tmp_path / "run", tiny_config(epochs=50, time_limit_min=1e-9)).summary
    assert summary["status"] == "time_limit" and summary["epochs_run"] < 50
    assert (tmp_path / "run" / "last.pt").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(epochs=3, checkpoint_every_batches=1)
    config.model.blow_up_after = 7  # 5 batches an epoch: NaN in epoch 2, batch 3
    with pytest.raises(TrainingDiverged, match=r"loss = nan at epoch 2, batch 3/5"):
        fit_tiny(tmp_path / "run", config)
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["next_batch"]) == (1, 2)  # after the last good step
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "nan" in summary["error"]


def test_infinite_gradient_without_clipping_stops_before_the_weights_are_poisoned(tmp_path):
    """Issue #14.5: with clipping off (GT presets) an infinite gradient was stepped on and written to last.pt."""
    config = tiny_config(epochs=3, checkpoint_every_batches=1, grad_clip=None)
    config.model.inf_grad_after = 7
    with pytest.raises(TrainingDiverged, match=r"gradient norm = (nan|inf) at epoch 2, batch 3/5"):
        fit_tiny(tmp_path / "run", config)
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["next_batch"]) == (1, 2)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_trainer_rejects_a_head_of_the_wrong_level(tmp_path):
    data = tiny_dataset()
    graph_task = TaskSpec("graph", "multiclass", 2, "accuracy")
    config = tiny_config()
    trainer = Trainer(config, TinyNodeModel(config.model), graph_task, data.train, data.val, data.test)
    with pytest.raises(ValueError, match="graph-level"):
        trainer.fit()


def test_early_stopping(tmp_path):
    summary = fit_tiny(tmp_path / "run", tiny_config(epochs=30, patience=1, lr=0.0)).summary
    assert summary["status"] == "early_stopped" and summary["epochs_run"] < 30
    assert math.isfinite(summary["test_metric"])


def test_short_epochs_walk_through_the_shuffled_passes():
    class Passes:  # a loader of 5 batches a pass, each batch tagged (pass, position)
        def __len__(self):
            return 5

        def batches(self, epoch, start=0):
            yield from ((epoch, b) for b in range(start, 5))

    config = tiny_config(batches_per_epoch=3)
    data = tiny_dataset()
    trainer = Trainer(
        config,
        TinyNodeModel(config.model),
        data.task,
        data.train,
        data.val,
        data.test,
        make_loader=lambda *a, **k: Passes(),
    )
    epoch1 = list(trainer._epoch_batches(1, 0))
    assert epoch1 == [(0, (0, 3)), (1, (0, 4)), (2, (1, 0))]  # epoch 1 = global batches 3, 4, 5
    assert list(trainer._epoch_batches(1, 2)) == [(2, (1, 0))]  # resumed mid-epoch
    assert list(trainer._epoch_batches(3, 0)) == [(0, (1, 4)), (1, (2, 0)), (2, (2, 1))]


def test_plateau_schedule_halves_the_rate_and_stops_at_min_lr(tmp_path):
    config = tiny_config(epochs=40, scheduler="plateau", plateau_patience=0, plateau_factor=0.5, min_lr=2e-3, lr=1e-2)
    summary = fit_tiny(tmp_path / "run", config).summary
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "min_lr_reached" and summary["epochs_run"] < 40
    assert all(b in (a, a / 2) for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs[-1] < lrs[0]


def test_resume_with_changed_config_uses_it_and_records_it(tmp_path):
    fit_tiny(tmp_path / "run", tiny_config(epochs=3, time_limit_min=0.5 / 60, checkpoint_every_batches=1))
    longer = tiny_config(epochs=5)
    summary = fit_tiny(tmp_path / "run", longer, resume=True).summary
    assert summary["epochs_planned"] == 5 and summary["epochs_run"] == 5
    assert load_config(tmp_path / "run" / "config.yaml", base=tiny_config()).train.epochs == 5
    assert len(list((tmp_path / "run").glob("config.before-resume-*.yaml"))) == 1


def test_resume_with_a_model_that_does_not_fit_is_an_error_that_leaves_the_run_intact(tmp_path):
    """Issue #14.2: a resume with another model shape crashed with a traceback after config.yaml was replaced."""
    fit_tiny(tmp_path / "run", tiny_config(epochs=3, time_limit_min=0.5 / 60, checkpoint_every_batches=1))
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    config_text = (tmp_path / "run" / "config.yaml").read_text()
    wider = tiny_config(epochs=3)
    wider.model.hidden = 16
    with pytest.raises(ValueError, match="do not fit this model"):
        fit_tiny(tmp_path / "run", wider, resume=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert (tmp_path / "run" / "config.yaml").read_text() == config_text
    assert fit_tiny(tmp_path / "run", tiny_config(epochs=3), resume=True).summary["epochs_run"] == 3


@pytest.mark.parametrize("override, message", [
    ("train.grad_clip=-1", "grad_clip=null"),  # issue #14.3: a negative clip flipped the gradients
    ("train.grad_clip=0", "grad_clip"),
    ("train.lr=.nan", "train.lr"),
    ("train.batches_per_epoch=-3", "batches_per_epoch"),
    ("train.patience=-1", "patience"),
    ("train.time_limit_min=-5", "time_limit_min"),
    ("train.checkpoint_every_s=-1", "checkpoint_every_s"),
    ("train.seed=-1", "train.seed"),
    ("data.eval_batch_size=-2", "eval_batch_size"),
])
def test_config_values_that_cannot_work_are_named_errors(override, message):
    from sparsegt.train.presets import get_preset

    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("demo"), [override])


# ---------------------------------------------------------------------------------------------- issue #14
@pytest.mark.parametrize("override, message", [
    ("train.device=tpu", "train.device must be auto, cpu, cuda or cuda:N"),  # issue #14.9
    ("train.threads=-2", "train.threads must be >= 1"),
    ("train.chance_check_epochs=-1", "chance_check_epochs"),
    ("name=../x", "name must be a plain folder name"),  # issue #14.10: the run folder would leave out_dir
    ("name=a/b", "name must be a plain folder name"),
    ("name=..", "name must be a plain folder name"),
])
def test_config_values_that_were_tracebacks_are_named_errors(override, message):
    from sparsegt.train.presets import get_preset

    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("demo"), [override])


def test_malformed_yaml_is_a_message_naming_file_and_line(tmp_path):
    """Issue #14.9: a yaml.ParserError traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [1e-3\n")
    with pytest.raises(ValueError, match=r"bad.yaml, line \d+, column \d+: not valid YAML"):
        load_config(path)


def test_unwritable_run_folder_is_a_message(tmp_path):
    """Issue #14.9: mkdir's OSError traceback (a path under a file fails even as root)."""
    (tmp_path / "file").write_text("")
    config = tiny_config()
    config.out_dir = str(tmp_path / "file" / "runs")
    with pytest.raises(ValueError, match="cannot write the run folder .*--out-dir"):
        train_run(config, model=TinyNodeModel(config.model), dataset=tiny_dataset(), quiet=True)


def test_a_run_that_fails_at_its_start_leaves_no_folder(tmp_path):
    """Issue #14.10: a config that fails after the run folder was made left an empty folder behind."""
    config = tiny_config()
    config.out_dir = str(tmp_path / "runs")
    data = tiny_dataset()
    data.task = TaskSpec("graph", "multiclass", 2, "accuracy")  # a node model on a graph task fails before training
    with pytest.raises(ValueError, match="graph-level"):
        train_run(config, model=TinyNodeModel(config.model), dataset=data, quiet=True)
    with pytest.raises(ValueError, match="graph-level"):
        train_run(config, model=TinyNodeModel(config.model), dataset=data, quiet=True, run_dir=tmp_path / "given")
    assert list((tmp_path / "runs").iterdir()) == [] and not (tmp_path / "given").exists()


def test_checkpoint_checksum_catches_a_flipped_byte(tmp_path):
    """Issue #14.12: flipped bytes inside a tensor loaded silently as a corrupted weight."""
    weights = torch.arange(4096, dtype=torch.float64) + 0.5
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"model": {"w": weights}, "epoch": 3}, path)
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], weights)
    assert ckpt.CHECKSUM_KEY not in ckpt.load_checkpoint(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(weights[1000:1002].numpy().tobytes())
    assert at > 0
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"checkpoint .*last.pt is damaged"):
        ckpt.load_checkpoint(path)
    torch.save({"model": {"w": weights}}, path)  # written before checksums existed: loads unchecked
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], weights)


def test_checkpoint_without_model_or_with_other_shapes_is_a_message(tmp_path):
    """Issue #14.9: KeyError 'model' and load_state_dict's RuntimeError, on resume and on eval's loading."""
    run = fit_tiny(tmp_path / "run").run_dir
    state = ckpt.load_checkpoint(run / "last.pt")
    del state["model"]
    ckpt.save_checkpoint(state, run / "last.pt")
    with pytest.raises(ValueError, match=r"last.pt has no 'model'"):
        fit_tiny(run, resume=True)
    with pytest.raises(ValueError, match=r"best.pt: the weights do not fit this model \(hint\)"):
        wide = TinyNodeModel(TinyModelConfig(hidden=16))
        ckpt.load_model_weights(wide, ckpt.load_checkpoint(run / "best.pt", required=("model",))["model"],
                                str(run / "best.pt"), " (hint)")


def test_stale_temporary_files_are_removed_and_a_run_killed_in_its_first_write_starts_afresh(tmp_path):
    """Issue #14.12: a kill during a checkpoint write left .last.pt.tmp-PID forever; with no last.pt yet,
    --resume was an error instead of a fresh start."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    dump_config(tiny_config(), run / "config.yaml")
    (run / "metrics.jsonl").write_text("")
    (run / f".last.pt.tmp-{dead.pid}").write_bytes(b"PK\x03\x04 half a checkpoint")
    (run / f".best.pt.tmp-{os.getppid()}").write_bytes(b"a live writer's")  # the parent process is alive
    result = fit_tiny(run, resume=True)
    assert result.summary["status"] == "completed" and result.summary["epochs_run"] == 3
    assert not (run / f".last.pt.tmp-{dead.pid}").exists()
    assert (run / f".best.pt.tmp-{os.getppid()}").exists()
    (run / "last.pt").unlink()
    with pytest.raises(ValueError, match="has no last.pt to resume from .but has results"):
        fit_tiny(run, resume=True)


def test_a_model_that_learns_nothing_is_warned_about(tmp_path):
    """Issue #14.13: lr=10 on the demo 'completed' at chance with no word. A model whose logits are constant
    cannot beat the best constant prediction; the warning is printed and kept in summary.json."""
    config = tiny_config(epochs=3, chance_check_epochs=2)
    config.model.constant_output = True
    result = fit_tiny(tmp_path / "flat", config)
    warnings = json.loads((result.run_dir / "summary.json").read_text())["warnings"]
    assert len(warnings) == 1 and "not moved from chance" in warnings[0] and "after 2 epoch(s)" in warnings[0]
    off = tiny_config(epochs=3, chance_check_epochs=0)
    off.model.constant_output = True
    assert fit_tiny(tmp_path / "off", off).summary["warnings"] == []


def test_a_model_that_learns_is_not_warned_about(tmp_path):
    config = tiny_config(epochs=4, lr=0.05, chance_check_epochs=4)
    seed_everything(0)
    data = tiny_graph_dataset()
    result = train_run(config, run_dir=tmp_path / "run", model=TinyGraphModel(config.model), dataset=data,
                       quiet=True)
    assert result.summary["warnings"] == [], result.summary


def test_compiled_training_follows_eager_training(tmp_path):
    """train.compile traces the training steps (aot_eager here: traced, not code-generated, to stay fast):
    the losses and metrics follow the eager run's to rounding, and the checkpoint keys are the model's own."""
    runs = {}
    for mode in ("off", "aot_eager"):
        fit_tiny(tmp_path / mode, tiny_config(compile=mode))
        runs[mode] = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    for eager, traced in zip(runs["off"], runs["aot_eager"], strict=True):
        assert traced["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
        assert traced["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    state = torch.load(tmp_path / "aot_eager" / "last.pt", weights_only=True)["model"]
    assert not any(key.startswith("_orig_mod") for key in state)


def test_bf16_autocast_training_follows_fp32_training(tmp_path):
    """train.precision=bf16: the forward runs under bfloat16 autocast (its matrix products in bf16), the
    weights and the loss stay float32, and the run follows the float32 one to bf16's rounding."""
    runs = {}
    for precision in ("fp32", "bf16"):
        fit_tiny(tmp_path / precision, tiny_config(precision=precision))
        runs[precision] = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text()
                           .splitlines()]
    for full, half in zip(runs["fp32"], runs["bf16"], strict=True):
        assert half["train_loss"] != full["train_loss"]  # bf16 did run
        assert half["train_loss"] == pytest.approx(full["train_loss"], rel=0.05)
    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)["model"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
