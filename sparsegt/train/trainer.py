"""`Trainer`: the loop — Adam(W), warmup + cosine or plateau, clipping, best-on-validation, early stopping, resume.

One ``fit()`` call trains ``train.epochs`` epochs (or until early stopping / the time limit), evaluates
on validation every ``eval_every`` epochs, evaluates test whenever validation improves (so the reported
test metric is the one *at the best validation epoch*) and writes, on rank 0, into the run directory:

- ``metrics.jsonl``: one JSON record per epoch (loss, train/val/test metric, lr, graphs/s, time);
- ``last.pt``: everything needed to continue bit-for-bit — model, optimizer, the `TrainingState` (epoch and
  batch position, best evaluation, schedules, this epoch's sums) and every RNG state — written at each
  epoch end and mid-epoch every ``checkpoint_every_s`` seconds, atomically;
- ``best.pt``: the model at the best validation epoch.

Data order is a pure function of (seed, epoch, rank, world size) (`sparsegt.data.DataLoader`), so a run
resumed from a mid-epoch checkpoint replays exactly the batches it had not seen.

A NaN or infinite loss (or gradient norm) stops the run with `TrainingDiverged`; ``last.pt`` is then
the last good state, never the poisoned one.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.loader import DataLoader
from ..data.spec import TARGET_MASK, TaskSpec
from ..graph import Graph
from ..sparsify import GTSPModel
from .batch_norm import batch_norm_statistics, recalibrate_batch_norm
from .checkpoint import (
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from .config import config_to_dict
from .distributed import DistInfo, any_true, gather_objects
from .health import chance_loss, learnt_something
from .l0_projection import L0BallProjection
from .loggers import epoch_scalars, make_loggers, peak_memory_mb
from .losses import make_loss
from .metrics import compute_metric as default_compute_metric
from .prediction import check_output_rows, predict_batches, score_batches, select_prediction
from .progress import Reporter
from .schedule import warmup_cosine_lr
from .state import BestEvaluation, TrainingState

__all__ = ["Trainer", "TrainingDiverged", "select_prediction", "check_output_rows", "predict_batches",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
# what `Trainer.resume` needs in a last.pt (``status``, ``warnings`` and ``final_test`` are optional: older
# checkpoints lack them)
RESUME_KEYS = ("format", "model", "optimizer", "epoch", "next_batch", "history", "best", "bad_evals", "plateau",
               "elapsed_s", "world_size", "ranks")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/inf; ``last.pt`` holds the last good state."""


def _is_better(new: float, old: float | None, higher_is_better: bool) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new > old if higher_is_better else new < old


@dataclass
class FitSession:
    """What one ``fit()`` call keeps for itself and never saves: its clocks, the speed of its last epoch, and
    whether the plateau schedule has run the rate below ``train.min_lr``."""

    started: float = field(default_factory=time.monotonic)  # when elapsed_s last took this session's time
    last_checkpoint: float = field(default_factory=time.monotonic)
    graphs_per_s: float = 0.0
    lr_exhausted: bool = False


class Trainer:
    """Train ``model`` on a dataset's splits under ``config`` (a `RunConfig`).

    Args:
        config: the run's `RunConfig` (only ``data.batch_size``/``eval_batch_size`` and ``train`` are read).
        model: the `nn.Module` (``model(batch) -> predictions``), already on ``dist.device``.
        task: the dataset's `TaskSpec` (level, kind, metric).
        train_graphs, val_graphs, test_graphs: lists of `Graph` (encodings already attached).
        run_dir: where rank 0 writes metrics and checkpoints (None: nothing is written).
        reporter: progress output; `Reporter()` prints nothing.
        dist: this process's `DistInfo` (one process by default).
        make_loader: ``(graphs, batch_size, shuffle, seed, drop_last, rank, world_size) -> loader`` with
            ``len()`` and ``batches(epoch, start)``; defaults to `sparsegt.data.DataLoader`.
        compute_metric: ``(name, prediction, target) -> float``; defaults to `sparsegt.train.metrics`.

    ``state`` (`TrainingState`) is how far training has come — all that ``last.pt`` saves besides the model,
    the optimizer and the RNG states; ``session`` (`FitSession`) what the current ``fit()`` tracks; ``loggers``
    its TensorBoard / W&B loggers.
    """

    def __init__(
        self,
        config: Any,
        model: nn.Module,
        task: TaskSpec,
        train_graphs: Sequence[Graph],
        val_graphs: Sequence[Graph],
        test_graphs: Sequence[Graph],
        *,
        run_dir: str | Path | None = None,
        reporter: Reporter | None = None,
        dist: DistInfo | None = None,
        make_loader: Callable[..., Any] | None = None,
        compute_metric: Callable[[str, Tensor, Tensor], float] | None = None,
    ) -> None:
        self.config = config
        train = config.train
        self.task = task
        self.dist = dist or DistInfo()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.reporter = reporter or Reporter()
        self.reporter.configure(task.metric, train.epochs)
        self.model = model
        self.train_graphs, self.val_graphs, self.test_graphs = (
            list(train_graphs),
            list(val_graphs),
            list(test_graphs),
        )
        if not self.train_graphs:
            raise ValueError("the training split is empty")
        if not self.val_graphs:
            raise ValueError("the validation split is empty: model selection needs one")
        if train.epochs < 1 or train.eval_every < 1:
            raise ValueError(
                f"train.epochs ({train.epochs}) and train.eval_every ({train.eval_every}) must be >= 1"
            )
        if config.data.batch_size < 1:
            raise ValueError(f"data.batch_size = {config.data.batch_size} must be >= 1")
        self.loss_name, self.loss_fn = make_loss(task, train.loss, train.class_weighted_loss)
        self.compute_metric = compute_metric or default_compute_metric
        self.loader = (make_loader or DataLoader)(
            self.train_graphs,
            config.data.batch_size,
            shuffle=True,
            seed=train.seed,
            drop_last=False,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.eval_batch_size = config.data.eval_batch_size or config.data.batch_size
        self.wrapped = self._wrap(model)
        optimizer = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(self._parameter_groups(model), lr=train.lr, weight_decay=train.weight_decay)
        sparsity = getattr(train, "weight_sparsity", None)
        self.projection = None if sparsity is None else L0BallProjection(keep_fraction=1.0 - sparsity)
        self.state = TrainingState()
        self.session = FitSession()
        self.loggers: list[Any] = []  # TensorBoard / W&B while fit() runs (`_open_loggers`)

    # ------------------------------------------------------------------------------------------ set-up
    def _parameter_groups(self, model: nn.Module) -> list[dict]:
        """One group of every parameter; GTSP's gates in a group of their own (`GTSPModel.parameter_groups`: a
        learning rate ``train.gtsp.gate_lr_scale`` times the run's, no weight decay)."""
        if isinstance(model, GTSPModel):
            gtsp = getattr(self.config.train, "gtsp", None)
            return model.parameter_groups(gtsp.gate_lr_scale if gtsp is not None else 1.0)
        return [{"params": list(model.parameters())}]

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the training steps call: the model, in DDP when distributed, compiled when asked."""
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
        if self.config.train.compile != "off":  # dynamic: batches of other sizes reuse the compiled code
            model = torch.compile(model, backend=self.config.train.compile, dynamic=True)
        return model

    def _autocast(self) -> torch.autocast:
        """The training forward's precision: ``train.precision="bf16"`` runs it under bfloat16 autocast (matrix
        products in bf16; attention and the fused kernels compute in float32, softmax statistics included)."""
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16,
                              enabled=self.config.train.precision == "bf16")

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; RNG and epoch sums of every rank (collective under DDP)."""
        per_rank = gather_objects({"rng": capture_rng_state(), "acc": self.state.totals.state_dict()}, self.dist)
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.state.state_dict(),
            "world_size": self.dist.world_size,
            "ranks": per_rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        if state["next_batch"] > 0 and state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"the checkpoint was written mid-epoch by {state['world_size']} processes; resume it "
                f"with the same number (now {self.dist.world_size})"
            )
        load_model_weights(self.model, state["model"], "the checkpoint",
                           " (was the model config changed on resume? overrides can change training settings, "
                           "not the model's shape)")
        self.optimizer.load_state_dict(state["optimizer"])
        mine = state["ranks"][min(self.dist.rank, len(state["ranks"]) - 1)]
        restore_rng_state(mine["rng"])
        self.state = TrainingState.from_dict(state, totals=mine["acc"])

    def resume(self, path: str | Path) -> None:
        """Continue from a ``last.pt`` written by this trainer."""
        state = load_checkpoint(path, map_location=self.dist.device, required=RESUME_KEYS)
        try:
            self.load_state_dict(state)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def _save_last(self) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if self.run_dir is not None and self.dist.is_main:
            save_checkpoint(state, self.run_dir / "last.pt")
        self.session.last_checkpoint = time.monotonic()

    def _save_best(self, best: BestEvaluation, name: str = "best.pt") -> None:
        if self.run_dir is not None and self.dist.is_main:
            save_checkpoint(
                {
                    "format": CHECKPOINT_FORMAT,
                    "model": self.model.state_dict(),
                    "epoch": best.epoch,
                    "val_metric": best.val_metric,
                    "test_metric": best.test_metric,
                },
                self.run_dir / name,
            )

    def _write_history(self) -> None:
        if self.run_dir is not None and self.dist.is_main:
            atomic_write_text(self.run_dir / "metrics.jsonl",
                              "".join(json.dumps(r) + "\n" for r in self.state.history))

    # ------------------------------------------------------------------------------------------ evaluation
    def _batches_of(self, graphs: Sequence[Graph]) -> list[list[Graph]]:
        mine = list(graphs)[self.dist.rank :: self.dist.world_size]
        return [mine[i : i + self.eval_batch_size] for i in range(0, len(mine), self.eval_batch_size)]

    def _eval_batches(self, graphs: Sequence[Graph]) -> Iterator[Graph]:
        """This rank's evaluation batches: the loader's memory-bounded ``evaluation_batches`` when it has them
        (`sparsegt.data.NeighborLoader`: seed chunks of one large graph), else whole graphs."""
        if hasattr(self.loader, "evaluation_batches"):
            return self.loader.evaluation_batches(graphs, self.eval_batch_size, self.dist.rank, self.dist.world_size)
        return (Graph.batch(chunk) for chunk in self._batches_of(graphs))

    def evaluate(self, graphs: Sequence[Graph], model: nn.Module | None = None) -> dict[str, float]:
        """Loss and metric of the trained model (or ``model``) over ``graphs`` (sharded across ranks, predictions
        gathered; eval mode): see `score_batches` for ``metric`` and ``metric_per_batch``."""
        model = self.model if model is None else model
        local = predict_batches(model, self._eval_batches(graphs), self.task, self.dist.device, self.loss_fn)
        gathered = gather_objects(local, self.dist)
        predictions = [p for g in gathered for p in g[0]]
        targets = [t for g in gathered for t in g[1]]
        loss_sum = sum(g[2] for g in gathered)
        return score_batches(predictions, targets, loss_sum, self.task.metric, self.compute_metric)

    def recalibrate_batch_norm(self) -> int:
        """Before an evaluation: BatchNorm statistics from ``train.bn_recalibration`` fixed training batches
        with the current weights (`sparsegt.train.batch_norm`; the same graphs on every rank and at every
        evaluation, no random numbers drawn). Returns the number of batches used (0: off)."""
        count = min(self.config.train.bn_recalibration, len(self.loader))
        if count <= 0:
            return 0
        size = self.config.data.batch_size
        if hasattr(self.loader, "evaluation_batches"):  # fixed seed chunks of one large graph, same on every rank
            batches = itertools.islice(self.loader.evaluation_batches(self.train_graphs, size), count)
        else:
            order = np.random.default_rng([self.config.train.seed, 21]).permutation(len(self.train_graphs))
            chosen = order[: count * size]
            batches = (Graph.batch([self.train_graphs[int(i)] for i in chosen[b : b + size]])
                       for b in range(0, len(chosen), size))
        return recalibrate_batch_norm(self.model, batches, self.dist.device)

    def _train_metric(self) -> float | None:
        totals = self.state.totals
        gathered = gather_objects((totals.predictions, totals.targets), self.dist)
        predictions = [p for g in gathered for p in g[0]]
        targets = [t for g in gathered for t in g[1]]
        if not predictions:
            return None
        return float(self.compute_metric(self.task.metric, torch.cat(predictions), torch.cat(targets)))

    # ------------------------------------------------------------------------------------------ training
    def _lr(self, epoch: int, batch: int, num_batches: int) -> float:
        train = self.config.train
        progress = float(epoch) if train.lr_update == "epoch" else epoch + batch / max(num_batches, 1)
        if train.scheduler == "cosine":
            return warmup_cosine_lr(
                progress,
                base_lr=train.lr,
                epochs=train.epochs,
                warmup_epochs=train.warmup_epochs,
                min_lr=train.min_lr,
            )
        warm = train.warmup_epochs
        ramp = max(progress, 1e-3) / warm if warm > 0 and progress < warm else 1.0
        return train.lr * ramp * self.state.plateau.scale

    def _step_plateau(self, val_loss: float) -> bool:
        """Benchmarking-GNNs' ReduceLROnPlateau on the validation loss; True once the rate is below min_lr."""
        train = self.config.train
        if train.scheduler != "plateau":
            return False
        plateau = self.state.plateau
        if plateau.step(val_loss, train.plateau_patience, train.plateau_factor):
            self.reporter.message(f"validation loss on a plateau: learning rate -> {train.lr * plateau.scale:.2e}")
        return train.lr * plateau.scale < train.min_lr

    def _checkpoint_due(self, batch: int) -> bool:
        every_b, every_s = self.config.train.checkpoint_every_batches, self.config.train.checkpoint_every_s
        due = bool(every_b and (batch + 1) % every_b == 0)
        due = due or bool(every_s and time.monotonic() - self.session.last_checkpoint >= every_s)
        return any_true(due, self.dist)

    def _out_of_time(self) -> bool:
        limit = self.config.train.time_limit_min
        over = limit is not None and self.state.elapsed_s + (time.monotonic() - self.session.started) > 60 * limit
        return any_true(over, self.dist)

    def _train_epoch(self, epoch: int) -> bool:
        """Train one epoch from ``state.next_batch``; False when the time limit cut it short."""
        state = self.state
        self.wrapped.train()
        num_batches = self.batches_per_epoch
        self.reporter.start_epoch(epoch, num_batches, state.next_batch)
        t0, graphs_seen = time.monotonic(), 0
        last_metric_t, train_metric = 0.0, None
        for b, batch in self._epoch_batches(epoch, state.next_batch):
            if isinstance(batch, (list, tuple)):
                batch = Graph.batch(batch)
            batch = batch.to(self.dist.device)
            prediction, target, loss_value = self._train_step(batch, epoch, b, num_batches)
            state.totals.add(loss_value, prediction, target, batch.num_graphs)
            state.next_batch = b + 1
            graphs_seen += batch.num_graphs
            now = time.monotonic()
            if now - last_metric_t > 2.0:
                last_metric_t = now
                train_metric = float(self.compute_metric(
                    self.task.metric, torch.cat(state.totals.predictions), torch.cat(state.totals.targets)))
            rate = self.session.graphs_per_s = graphs_seen * self.dist.world_size / max(now - t0, 1e-9)
            self.reporter.update(b, state.totals.loss / max(state.totals.items, 1), train_metric, rate)
            if state.next_batch < num_batches:
                if self._out_of_time():
                    self._account_time()
                    self._save_last()
                    return False
                if self._checkpoint_due(b):
                    self._account_time()
                    self._save_last()
        self.session.graphs_per_s = graphs_seen * self.dist.world_size / max(time.monotonic() - t0, 1e-9)
        return True

    def _train_step(self, batch: Graph, epoch: int, b: int, num_batches: int) -> tuple[Tensor, Tensor, float]:
        """One optimiser step on ``batch`` (batch ``b`` of ``epoch``): (prediction, target, loss value).
        Raises `TrainingDiverged`, before stepping, when the loss or the gradient norm is not finite."""
        lr = self._lr(epoch, b, num_batches)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with self._autocast():
            prediction, target = select_prediction(self.wrapped(batch), batch, self.task)
        loss = self.loss_fn(prediction.float(), target, batch=batch)
        loss_value = float(loss.detach())  # the task's loss (the curves), without GTSP's penalty
        if isinstance(self.model, GTSPModel):
            loss = loss + self.model.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        diverged = not math.isfinite(loss_value)
        grad_norm = None
        if not diverged:
            loss.backward()
            if self.config.train.grad_clip:
                grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip))
            else:  # no clipping: still never step on an infinite gradient (it would poison the weights)
                grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                grad_norm = float(nn.utils.get_total_norm(grads)) if grads else 0.0
            diverged = not math.isfinite(grad_norm)
        if any_true(diverged, self.dist):
            what = f"loss = {loss_value}" if not math.isfinite(loss_value) else f"gradient norm = {grad_norm}"
            last = self.run_dir / "last.pt" if self.run_dir is not None else None
            kept = (
                f"the last good state is kept in {last} (resume it with --resume after a fix)"
                if last is not None and last.exists()
                else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"{what} at epoch {epoch + 1}, batch {b + 1}/{num_batches}; {kept}. "
                "Try a lower train.lr, train.grad_clip=1.0, or look for extreme input values."
            )
        self.optimizer.step()
        if self.projection is not None:  # train.weight_sparsity: TEDDY's l0-ball projection
            self.projection.project(self.model)
        return prediction, target, loss_value

    @property
    def batches_per_epoch(self) -> int:
        return self.config.train.batches_per_epoch or len(self.loader)

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[tuple[int, Graph]]:
        """(b, batch) for b = start .. batches_per_epoch - 1 of (possibly shortened) ``epoch``.

        With ``train.batches_per_epoch = K`` epoch e covers the global batches [e K, (e + 1) K) of the
        loader's passes, crossing from one shuffled pass into the next: still a pure function of the seed."""
        per_pass, per_epoch = len(self.loader), self.batches_per_epoch
        position, end = epoch * per_epoch + start, (epoch + 1) * per_epoch
        while position < end:
            data_pass, offset = divmod(position, per_pass)
            for batch in self.loader.batches(data_pass, start=offset):
                yield position - epoch * per_epoch, batch
                position += 1
                if position >= end:
                    return

    def _account_time(self) -> None:
        now = time.monotonic()
        self.state.elapsed_s += now - self.session.started
        self.session.started = now

    def _end_epoch(self, epoch: int, epoch_start_elapsed: float, force_eval: bool = False) -> dict[str, Any]:
        state, train = self.state, self.config.train
        items = sum(gather_objects(state.totals.items, self.dist))
        loss_sum = sum(gather_objects(state.totals.loss, self.dist))
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(items, 1),
            "train_metric": self._train_metric(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "val_loss": None,
            "val_metric": None,
            "test_metric": None,
            "test_metric_per_batch": None,
            "best": False,
        }
        last_epoch = epoch + 1 == train.epochs
        if (epoch + 1) % train.eval_every == 0 or last_epoch or force_eval:
            if train.val_with_moving_stats and train.bn_recalibration:
                self._evaluate_with_moving_stats(epoch, record)
            self.recalibrate_batch_norm()
            val = self.evaluate(self.val_graphs)
            record["val_loss"], record["val_metric"] = val["loss"], val["metric"]
            if _is_better(val["metric"], state.best.val_metric, self.task.higher_is_better):
                test = self.evaluate(self.test_graphs) if self.test_graphs else {}
                record["test_metric"] = test.get("metric")
                record["test_metric_per_batch"] = test.get("metric_per_batch")
                record["best"] = True
                state.best = BestEvaluation(epoch=epoch, val_metric=val["metric"], test_metric=test.get("metric"),
                                            test_metric_per_batch=test.get("metric_per_batch"),
                                            val_loss=val["loss"])
                state.bad_evals = 0
                self._save_best(state.best)
            else:
                state.bad_evals += 1
            self.session.lr_exhausted = self._step_plateau(val["loss"])
        self._account_time()
        record["epoch_time_s"] = state.elapsed_s - epoch_start_elapsed
        record["elapsed_s"] = state.elapsed_s
        record["graphs_per_s"] = self.session.graphs_per_s
        return record

    def _evaluate_with_moving_stats(self, epoch: int, record: dict[str, Any]) -> None:
        """GraphGPS's evaluation beside ours: validation with the moving-average BatchNorm statistics (before
        `recalibrate_batch_norm` replaces them), and when it is the best so far, test with the same statistics
        (``state.best_moving``, ``best_moving.pt``): the test score the published protocol would report."""
        state = self.state
        state.moving_statistics = batch_norm_statistics(self.model)
        val = self.evaluate(self.val_graphs)
        record["val_metric_moving_stats"] = val["metric"]
        if not _is_better(val["metric"], state.best_moving.val_metric, self.task.higher_is_better):
            return
        test = self.evaluate(self.test_graphs) if self.test_graphs else {}
        record["test_metric_moving_stats"] = test.get("metric")
        record["test_metric_per_batch_moving_stats"] = test.get("metric_per_batch")
        state.best_moving = BestEvaluation(epoch=epoch, val_metric=val["metric"], test_metric=test.get("metric"),
                                           test_metric_per_batch=test.get("metric_per_batch"), val_loss=val["loss"])
        self._save_best(state.best_moving, "best_moving.pt")

    @torch.no_grad()
    def _check_output_fits_task(self) -> None:
        """One forward pass in eval mode (no RNG drawn, no state changed) on two validation graphs: a model
        whose output does not fit the task (one row per node or per graph) fails here, before any training.

        Nothing else depends on it: a kernel's first call in a process computes what its later calls
        compute (tests/test_global_state.py), so a resumed run matches an uninterrupted one without it.
        """
        self.model.eval()
        if hasattr(self.loader, "evaluation_batches"):  # one chunk of a large graph, not the whole graph
            batch = next(iter(self.loader.evaluation_batches(self.val_graphs, self.eval_batch_size)))
        else:
            batch = Graph.batch(self.val_graphs[: min(2, len(self.val_graphs))])
        batch = batch.to(self.dist.device)
        select_prediction(self.model(batch), batch, self.task)  # a head that does not fit the task fails here

    def _open_loggers(self) -> list[Any]:
        """TensorBoard / W&B (``train.loggers``) on rank 0 of a run with a folder; the next epoch is the first step."""
        if self.run_dir is None or not self.dist.is_main:
            return []
        return make_loggers(list(self.config.train.loggers), self.run_dir, config=config_to_dict(self.config),
                            first_step=self.state.epoch + 1, notice=self.reporter.message)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if not self.loggers:
            return
        scalars = epoch_scalars(record, self.task.metric)
        memory = peak_memory_mb(self.dist.device)
        if memory is not None:
            scalars["memory/peak_mb"] = memory
        for logger in self.loggers:
            logger.log(scalars, record["epoch"] + 1)

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        """Record a finished (or, at the time limit, partly trained) epoch: history, metrics.jsonl, loggers."""
        self.state.history.append(record)
        self._write_history()
        self._log_epoch(record)
        self.reporter.end_epoch(record)

    def fit(self) -> dict[str, Any]:
        """Train to the end (or early stop / time limit); returns the summary (also ``summary.json``)."""
        state, train = self.state, self.config.train
        self._check_output_fits_task()
        self.loggers = self._open_loggers()
        self.session = FitSession()
        if state.history or state.next_batch:
            self.reporter.message(f"resuming at epoch {state.epoch + 1}, batch {state.next_batch + 1}")
        else:
            self._write_history()
        state.status = "completed"
        last_epoch_s = 0.0
        try:
            while state.epoch < train.epochs:
                epoch = state.epoch
                if train.time_limit_min is not None and state.next_batch == 0:
                    self._account_time()
                    if any_true(state.elapsed_s + last_epoch_s > 60 * train.time_limit_min, self.dist):
                        state.status = "time_limit"
                        self._save_last()
                        break
                start_elapsed = self.history_epoch_start()
                if not self._train_epoch(epoch):
                    state.status = "time_limit"
                    if state.best.epoch is None and state.next_batch > 0:
                        # never evaluated yet: score the partly trained model so the run has a result
                        record = self._end_epoch(epoch, start_elapsed, force_eval=True)
                        record["partial_batches"] = state.next_batch
                        self._finish_epoch(record)
                    break
                record = self._end_epoch(epoch, start_elapsed)
                last_epoch_s = record["epoch_time_s"]
                state.history.append(record)
                self._check_chance(record)
                state.start_next_epoch()
                self._write_history()
                self._save_last()
                self._log_epoch(record)
                self.reporter.end_epoch(record)
                if self.session.lr_exhausted:
                    state.status = "min_lr_reached"
                    self.reporter.message(f"learning rate fell below train.min_lr = {train.min_lr}: stopping")
                    break
                if train.patience is not None and state.bad_evals >= train.patience:
                    state.status = "early_stopped"
                    self.reporter.message(
                        f"early stopping: no better validation {self.task.metric} in {state.bad_evals} evaluations"
                    )
                    break
            if state.status in ("completed", "min_lr_reached") and self.test_graphs:
                # GT / Benchmarking-GNNs report the test metric of the final model; keep it beside the
                # test metric at the best validation epoch (GraphGPS's choice)
                final = self.evaluate(self.test_graphs)
                state.final_test = {"metric": final["metric"], "metric_per_batch": final["metric_per_batch"]}
                if state.moving_statistics:  # and with the moving averages the last evaluation saw (GT's way)
                    moving = copy.deepcopy(self.model)
                    moving.load_state_dict(state.moving_statistics, strict=False)
                    final = self.evaluate(self.test_graphs, model=moving)
                    state.final_test.update(metric_moving_stats=final["metric"],
                                            metric_per_batch_moving_stats=final["metric_per_batch"])
        except TrainingDiverged:
            state.status = "diverged"
            raise
        finally:
            for logger in self.loggers:
                logger.close()
            self.reporter.close()
        return self.summary()

    def _check_chance(self, record: dict[str, Any]) -> None:
        """After ``train.chance_check_epochs`` epochs (or the last, if sooner): a warning, printed and kept in the
        summary, when the training loss is not below the best constant prediction's (`health.learnt_something`)."""
        budget = self.config.train.chance_check_epochs
        if not budget or record["epoch"] + 1 != min(budget, self.config.train.epochs):
            return
        store = {"node": "node_data", "edge": "edge_data"}.get(self.task.level, "graph_data")
        masked = store == "node_data" and TARGET_MASK in self.train_graphs[0].node_data  # a split of one graph
        targets = torch.cat([g.node_data["y"][g.node_data[TARGET_MASK]] if masked else getattr(g, store)["y"]
                             for g in self.train_graphs])
        chance, loss = chance_loss(self.loss_fn, self.task, targets), record["train_loss"]
        if not learnt_something(loss, chance):
            message = (f"training has not moved from chance: after {record['epoch'] + 1} epoch(s) the training loss "
                       f"is {loss:.4g}, and a constant prediction scores {chance:.4g}; the model has learnt nothing "
                       "yet (a learning rate far too high or too low, labels unrelated to the inputs?)")
            self.state.warnings.append(message)
            self.reporter.message(f"warning: {message}")

    def history_epoch_start(self) -> float:
        """Training time when the current (resumed, mid-epoch) epoch began."""
        return self.state.history[-1]["elapsed_s"] if self.state.history else 0.0

    def summary(self) -> dict[str, Any]:
        state = self.state
        return {
            "status": state.status,
            "metric": self.task.metric,
            "higher_is_better": self.task.higher_is_better,
            "loss": self.loss_name,
            "epochs_run": len(state.history),
            "epochs_planned": self.config.train.epochs,
            "best_epoch": None if state.best.epoch is None else state.best.epoch + 1,
            "val_metric": state.best.val_metric,
            "test_metric": state.best.test_metric,
            "test_metric_per_batch": state.best.test_metric_per_batch,
            "final_test_metric": state.final_test.get("metric"),
            "final_test_metric_per_batch": state.final_test.get("metric_per_batch"),
            **{f"final_test_{key}": value for key, value in state.final_test.items() if key.endswith("moving_stats")},
            "final_train_loss": state.history[-1]["train_loss"] if state.history else None,
            "train_time_s": state.elapsed_s,
            "world_size": self.dist.world_size,
            "warnings": list(state.warnings),
            **self._moving_stats_summary(),
        }

    def _moving_stats_summary(self) -> dict[str, Any]:
        """GraphGPS's selection (moving-average BatchNorm statistics), where the run recorded it."""
        best = self.state.best_moving
        if best.epoch is None:
            return {}
        return {"moving_stats": {"best_epoch": best.epoch + 1, "val_metric": best.val_metric,
                                 "test_metric": best.test_metric, "test_metric_per_batch": best.test_metric_per_batch}}


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
