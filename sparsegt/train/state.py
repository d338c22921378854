"""`TrainingState`: how far a run has come, as one value — what ``last.pt`` saves and a resume restores.

`Trainer` keeps every number that must survive a restart here, and nothing of the kind anywhere else:

- where the run stands: ``epoch`` (epochs finished) and ``next_batch`` (the batch of that epoch to train next);
- what it has measured: ``history`` (one record per epoch, `metrics.jsonl`), ``best`` (`BestEvaluation`),
  ``best_moving`` (the same selection on the moving-average BatchNorm scores, GraphGPS's protocol, when
  ``train.val_with_moving_stats`` records them), ``final_test`` and ``warnings``; ``status``;
- ``moving_statistics``: the BatchNorm running statistics as training left them at the last evaluation, before
  recalibration replaced them (with ``train.val_with_moving_stats``): the final model's test with them is
  the number of a protocol that evaluates with moving averages (GT, Benchmarking-GNNs);
- what its schedules remember: ``bad_evals`` (early stopping) and ``plateau`` (`PlateauState`);
- ``elapsed_s``, the training time over every session of the run (the time limit counts it);
- ``totals`` (`EpochTotals`): this process's running sums over the current epoch, so a run resumed
  mid-epoch reports the same epoch loss and metric as one that was never stopped.

``state_dict()`` gives the checkpoint's keys, the ones ``last.pt`` has always had (``epoch``, ``next_batch``,
``history``, ``best``, ``bad_evals``, ``plateau``, ``elapsed_s``, ``status``, ``warnings``; ``final_test``,
``best_moving`` and ``moving_statistics`` are newer and optional), and ``from_dict`` reads them back, filling
what an older checkpoint lacks with its default. ``totals`` are per process: the trainer saves each rank's
under ``ranks`` (`EpochTotals.state_dict`, the checkpoint's ``acc``) beside its RNG state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["TrainingState", "BestEvaluation", "PlateauState", "EpochTotals"]


@dataclass
class BestEvaluation:
    """The best validation evaluation so far (``epoch`` None: none yet) and the test metric measured then."""

    epoch: int | None = None
    val_metric: float | None = None
    test_metric: float | None = None
    test_metric_per_batch: float | None = None
    val_loss: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_metric": self.val_metric, "test_metric": self.test_metric,
                "test_metric_per_batch": self.test_metric_per_batch, "val_loss": self.val_loss}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BestEvaluation:
        # a checkpoint written before the first evaluation has no test_metric_per_batch
        return cls(**{name: state.get(name) for name in cls.__dataclass_fields__})


@dataclass
class PlateauState:
    """Benchmarking-GNNs' ReduceLROnPlateau on the validation loss: what it remembers between evaluations."""

    scale: float = 1.0  # the learning rate is train.lr * scale
    best_loss: float | None = None
    bad: int = 0  # evaluations since the validation loss last improved by 1e-4 (relative)

    def step(self, val_loss: float, patience: int, factor: float) -> bool:
        """Take one evaluation's loss; True when it cut the rate (``bad`` went past ``patience``)."""
        if self.best_loss is None or val_loss < self.best_loss * (1 - 1e-4):
            self.best_loss, self.bad = val_loss, 0
            return False
        self.bad += 1
        if self.bad <= patience:
            return False
        self.scale *= factor
        self.bad = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best_loss": self.best_loss, "bad": self.bad}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PlateauState:
        return cls(scale=state["scale"], best_loss=state["best_loss"], bad=state["bad"])


@dataclass(eq=False)
class EpochTotals:
    """This process's running sums over the current epoch's training batches."""

    loss: float = 0.0  # the loss summed over items
    items: int = 0  # prediction rows (nodes, edges or graphs) the loss was taken over
    graphs: int = 0
    predictions: list[Tensor] = field(default_factory=list)  # [items, ...] per batch, on CPU
    targets: list[Tensor] = field(default_factory=list)

    def add(self, loss: float, prediction: Tensor, target: Tensor, num_graphs: int) -> None:
        """Count one batch: ``loss`` is its mean over the ``target.shape[0]`` items."""
        items = int(target.shape[0])
        self.loss += loss * items
        self.items += items
        self.graphs += num_graphs
        self.predictions.append(prediction.detach().float().cpu())
        self.targets.append(target.detach().cpu())

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``acc`` entry of a rank: predictions and targets concatenated (None when empty)."""
        return {
            "loss": self.loss,
            "items": self.items,
            "graphs": self.graphs,
            "predictions": torch.cat(self.predictions) if self.predictions else None,
            "targets": torch.cat(self.targets) if self.targets else None,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EpochTotals:
        kept = state["predictions"] is not None
        return cls(loss=state["loss"], items=state["items"], graphs=state["graphs"],
                   predictions=[state["predictions"]] if kept else [], targets=[state["targets"]] if kept else [])


@dataclass(eq=False)
class TrainingState:
    """How far a run has come (see the module's docstring); a fresh run starts from ``TrainingState()``."""

    epoch: int = 0
    next_batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEvaluation = field(default_factory=BestEvaluation)
    best_moving: BestEvaluation = field(default_factory=BestEvaluation)
    bad_evals: int = 0
    plateau: PlateauState = field(default_factory=PlateauState)
    elapsed_s: float = 0.0
    status: str = "running"
    warnings: list[str] = field(default_factory=list)
    final_test: dict[str, float] = field(default_factory=dict)  # the final model's test metric, once run
    moving_statistics: dict[str, Tensor] = field(default_factory=dict)
    totals: EpochTotals = field(default_factory=EpochTotals)

    @property
    def mid_epoch(self) -> bool:
        return self.next_batch > 0

    def start_next_epoch(self) -> None:
        self.epoch, self.next_batch = self.epoch + 1, 0
        self.totals = EpochTotals()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's keys (all but this process's ``totals``: `EpochTotals.state_dict`)."""
        return {
            "epoch": self.epoch,
            "next_batch": self.next_batch,
            "history": [dict(record) for record in self.history],
            "best": self.best.state_dict(),
            "best_moving": self.best_moving.state_dict(),
            "bad_evals": self.bad_evals,
            "plateau": self.plateau.state_dict(),
            "elapsed_s": self.elapsed_s,
            "status": self.status,
            "warnings": list(self.warnings),
            "final_test": dict(self.final_test),
            "moving_statistics": dict(self.moving_statistics),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], totals: dict[str, Any] | None = None) -> TrainingState:
        """The state ``state_dict`` (or any ``last.pt`` so far) describes; ``totals``: this rank's ``acc``
        entry, kept only mid-epoch (at an epoch boundary the sums start again from zero)."""
        mid_epoch = state["next_batch"] > 0
        return cls(
            epoch=state["epoch"],
            next_batch=state["next_batch"],
            history=[dict(record) for record in state["history"]],
            best=BestEvaluation.from_dict(state["best"]),
            best_moving=BestEvaluation.from_dict(state.get("best_moving", {})),
            bad_evals=state["bad_evals"],
            plateau=PlateauState.from_dict(state["plateau"]),
            elapsed_s=state["elapsed_s"],
            status=state.get("status", "running"),  # `status` and `warnings`: not in the first checkpoints
            warnings=list(state.get("warnings", [])),
            final_test=dict(state.get("final_test", {})),
            moving_statistics=dict(state.get("moving_statistics", {})),
            totals=EpochTotals.from_dict(totals) if totals is not None and mid_epoch else EpochTotals(),
        )
