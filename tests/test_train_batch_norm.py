"""BatchNorm recalibration before evaluation (issue #21: validation swings from moving-average statistics)."""

from __future__ import annotations

import torch
from torch import nn

from sparsegt.train.batch_norm import recalibrate_batch_norm


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 2),
                         nn.BatchNorm1d(2))


def test_recalibration_is_the_equal_weight_average_of_batch_statistics():
    model = _model().train()
    batches = [torch.randn(n, 3) * (1 + i) + i for i, n in enumerate((5, 9, 7))]
    momentum = model[1].momentum
    rng = torch.get_rng_state()
    assert recalibrate_batch_norm(model, batches) == 3
    assert torch.equal(torch.get_rng_state(), rng)  # eval-mode dropout: no random numbers drawn
    assert model.training and model[1].momentum == momentum and model[2].training  # modes restored
    with torch.no_grad():
        first = [model[0](b) for b in batches]
        # the first BatchNorm sees the Linear's outputs: its statistics are their plain averages
        torch.testing.assert_close(model[1].running_mean, torch.stack([f.mean(0) for f in first]).mean(0))
        torch.testing.assert_close(model[1].running_var, torch.stack([f.var(0) for f in first]).mean(0))
        # the second sees what follows a batch-normalised first layer with dropout off (as evaluated)
        second = [model[4](torch.relu((f - f.mean(0)) / (f.var(0, unbiased=False) + 1e-5).sqrt()
                                      * model[1].weight + model[1].bias)) for f in first]
        torch.testing.assert_close(model[5].running_mean, torch.stack([s.mean(0) for s in second]).mean(0))


def test_recalibration_without_batches_or_batch_norm_changes_nothing():
    model = _model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batch_norm(model, []) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert recalibrate_batch_norm(nn.Linear(3, 2), [torch.randn(4, 3)]) == 0


def test_moving_average_can_be_far_from_the_statistics_of_the_weights():
    """What broke: the eval-mode statistics are an exponential moving average (momentum 0.1) dominated by
    the last few batches. When batch statistics differ between batches (PATTERN: graphs of 44-190 nodes, edge
    BatchNorm weighted by n^2 edges), the average of the last batches misses the population; recalibration
    gives the equal-weight average of the same weights' batch statistics."""
    torch.manual_seed(1)
    norm = nn.BatchNorm1d(1)
    population = [torch.randn(50, 1) * scale for scale in (1.0,) * 30 + (4.0,) * 5]  # 5 unusual batches last
    for batch in population:
        norm.train()(batch)
    true_var = torch.stack([b.var(0) for b in population]).mean()
    moving = norm.running_var.clone()
    recalibrate_batch_norm(norm, population)
    assert abs(float(moving - true_var)) > 2 * abs(float(norm.running_var - true_var))
    torch.testing.assert_close(norm.running_var.squeeze(), true_var.squeeze())


class _NormModel(nn.Module):
    """Mean aggregation + BatchNorm: node logits [N, 2] whose eval output depends on the running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, batch):
        h = self.embed(batch.x[:, 0])
        agg = torch.zeros_like(h).index_add_(0, batch.row_index(), h[batch.indices])
        return self.head(torch.relu(self.norm(h + agg)))


def _fit(tmp_path, recalibration: int):
    from sparsegt.train.checkpoint import load_checkpoint
    from sparsegt.train.config import DataConfig, RunConfig, TrainConfig
    from sparsegt.train.run import train_run
    from sparsegt.train.trainer import seed_everything
    from tests.test_train import tiny_dataset

    config = RunConfig(name="bn", data=DataConfig(name="tiny", batch_size=3), model={},
                       train=TrainConfig(epochs=2, lr=1e-2, warmup_epochs=0, checkpoint_every_s=0,
                                         bn_recalibration=recalibration))
    seed_everything(0)
    dataset = tiny_dataset(num_graphs=46)  # 23 training graphs: the epoch ends with a batch of 2
    model = _NormModel()
    result = train_run(config, run_dir=tmp_path / f"r{recalibration}", model=model, dataset=dataset, quiet=True)
    return dataset, config, load_checkpoint(result.run_dir / "last.pt")["model"]  # after the last evaluation


def test_evaluation_statistics_do_not_depend_on_the_last_training_batches(tmp_path):
    """The trainer evaluates (and saves as best) the model with the equal-weight BatchNorm statistics of its fixed
    recalibration batches, not with the moving average that the epoch's last (partial) batch dominates."""
    import copy

    import numpy as np

    from sparsegt import Graph

    dataset, config, state = _fit(tmp_path, recalibration=4)
    model = _NormModel()
    model.load_state_dict(state)
    expected = copy.deepcopy(model)
    chosen = np.random.default_rng([config.train.seed, 21]).permutation(len(dataset.train))[:4 * 3]
    batches = [Graph.batch([dataset.train[int(i)] for i in chosen[b:b + 3]]) for b in range(0, len(chosen), 3)]
    recalibrate_batch_norm(expected, batches)
    torch.testing.assert_close(model.norm.running_mean, expected.norm.running_mean)
    torch.testing.assert_close(model.norm.running_var, expected.norm.running_var)
    _, _, moving = _fit(tmp_path, recalibration=0)  # the same training, evaluated with the moving average
    assert all(torch.equal(moving[k], state[k]) for k in state if "norm" not in k)  # training unchanged
    assert not torch.allclose(moving["norm.running_var"], state["norm.running_var"])


def test_moving_average_selection_scores_test_with_the_moving_statistics(tmp_path):
    """``train.val_with_moving_stats``: GraphGPS's protocol beside ours. The epoch whose moving-average validation
    is best keeps its test score with the same statistics (``best_moving.pt``, the summary's ``moving_stats``);
    the extra evaluations change nothing in training or in the recalibrated selection."""
    import json

    from sparsegt.train.checkpoint import load_checkpoint
    from sparsegt.train.config import DataConfig, RunConfig, TrainConfig
    from sparsegt.train.distributed import DistInfo
    from sparsegt.train.run import train_run
    from sparsegt.train.trainer import Trainer, seed_everything
    from tests.test_train import tiny_dataset

    def fit(moving: bool):
        config = RunConfig(name="bn", data=DataConfig(name="tiny", batch_size=3), model={},
                           train=TrainConfig(epochs=4, lr=3e-2, warmup_epochs=0, checkpoint_every_s=0,
                                             bn_recalibration=4, val_with_moving_stats=moving))
        seed_everything(0)
        dataset = tiny_dataset(num_graphs=46)
        result = train_run(config, run_dir=tmp_path / f"m{moving}", model=_NormModel(), dataset=dataset, quiet=True)
        return config, dataset, result

    config, dataset, result = fit(True)
    _, _, plain = fit(False)
    history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    moving_val = [r["val_metric_moving_stats"] for r in history]
    chosen = moving_val.index(max(moving_val))  # the first epoch with the best score
    summary = result.summary["moving_stats"]
    assert summary["best_epoch"] == chosen + 1 and summary["val_metric"] == moving_val[chosen]
    assert history[chosen]["test_metric_moving_stats"] == summary["test_metric"]
    # test is scored only when the moving-average validation improves
    gains = [i for i, v in enumerate(moving_val) if v > max(moving_val[:i], default=-1.0)]
    assert [i for i, r in enumerate(history) if "test_metric_moving_stats" in r] == gains

    saved = load_checkpoint(result.run_dir / "best_moving.pt")
    model = _NormModel()
    model.load_state_dict(saved["model"])
    trainer = Trainer(config, model, dataset.task, dataset.train, dataset.val, dataset.test, dist=DistInfo())
    assert trainer.evaluate(dataset.val)["metric"] == summary["val_metric"]
    assert trainer.evaluate(dataset.test)["metric"] == summary["test_metric"]
    # the moving averages, not the recalibrated statistics of best.pt
    assert not torch.equal(saved["model"]["norm.running_var"],
                           load_checkpoint(result.run_dir / "best.pt")["model"]["norm.running_var"])

    a, b = load_checkpoint(result.run_dir / "last.pt"), load_checkpoint(plain.run_dir / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["best"] == b["best"] and "moving_stats" not in plain.summary
    assert a["best_moving"]["epoch"] == chosen and b["best_moving"]["epoch"] is None

    # the final model with the moving averages its last evaluation saw (GT's protocol), kept in last.pt
    assert set(a["moving_statistics"]) == {f"norm.{b}" for b in ("running_mean", "running_var",
                                                                 "num_batches_tracked")}
    assert not torch.equal(a["moving_statistics"]["norm.running_var"], a["model"]["norm.running_var"])
    final = _NormModel()
    final.load_state_dict({**a["model"], **a["moving_statistics"]})
    scored = Trainer(config, final, dataset.task, dataset.train, dataset.val, dataset.test, dist=DistInfo())
    assert scored.evaluate(dataset.test)["metric"] == result.summary["final_test_metric_moving_stats"]
    assert result.summary["final_test_metric"] == plain.summary["final_test_metric"]
    assert "final_test_metric_moving_stats" not in plain.summary and not b["moving_statistics"]
