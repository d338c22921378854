"""Experiment loggers beside ``metrics.jsonl``: TensorBoard event files and, when installed, Weights & Biases.

``train.loggers`` names them (default ``[tensorboard]``; ``[tensorboard, wandb]``; ``[]`` for none). Each
epoch's ``metrics.jsonl`` record becomes scalars at step ``epoch + 1`` (the epoch number ``curves.png``
shows), under these tags::

    loss/train  loss/val              the records' train_loss, val_loss
    METRIC/train  METRIC/val  METRIC/test  METRIC/test_per_batch  METRIC/val_moving_stats
    lr                                the learning rate at the end of the epoch
    throughput/graphs_per_s           training graphs per second (all processes)
    time/epoch_s
    memory/peak_mb                    peak memory: CUDA's max allocated on a GPU, else the process's peak RSS

Event files (``events.out.tfevents.*``) go into the run folder itself, so ``tensorboard --logdir runs`` shows
every run under its folder name. A resumed run opens a new event file with ``purge_step`` = its next epoch:
TensorBoard drops whatever an interrupted process had logged from that step on, so the curves continue with
the same step numbering and no duplicates. W&B runs offline unless ``WANDB_MODE`` says otherwise (no network
needed; ``wandb sync`` uploads later), with an id derived from the run folder so a resume continues the same
W&B run. Loggers only ever run on rank 0. A missing package is a one-line notice, not an error, for the
default TensorBoard logger; ``train.loggers=[wandb]`` without wandb installed is an ImportError naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["LOGGER_NAMES", "epoch_scalars", "peak_memory_mb", "TensorBoardLogger", "WandbLogger", "make_loggers"]

LOGGER_NAMES = ("tensorboard", "wandb")

# metrics.jsonl key -> tag ("{metric}" is the task's metric name)
_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_metric": "{metric}/train",
    "val_metric": "{metric}/val",
    "val_metric_moving_stats": "{metric}/val_moving_stats",
    "test_metric": "{metric}/test",
    "test_metric_per_batch": "{metric}/test_per_batch",
    "lr": "lr",
    "graphs_per_s": "throughput/graphs_per_s",
    "epoch_time_s": "time/epoch_s",
}


def epoch_scalars(record: dict[str, Any], metric: str) -> dict[str, float]:
    """``{tag: value}`` of one ``metrics.jsonl`` record (fields that are None, e.g. no evaluation, left out)."""
    return {tag.format(metric=metric): float(record[key]) for key, tag in _TAGS.items()
            if record.get(key) is not None}


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory so far in MiB: CUDA's max allocated on ``device``, else the process's peak resident set."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class TensorBoardLogger:
    """Scalars into ``run_dir/events.out.tfevents.*`` (`torch.utils.tensorboard.SummaryWriter`), opened on the
    first scalar (a run that fails before its first epoch leaves no event file behind)."""

    def __init__(self, run_dir: str | Path, first_step: int) -> None:
        self.run_dir, self.first_step = Path(run_dir), first_step
        self.writer: Any = None

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run discards what an interrupted process logged at or after this step
            purge = self.first_step if self.first_step > 1 else None
            self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbLogger:
    """Scalars into a W&B run (offline unless ``WANDB_MODE`` is set), resumed across ``--resume``."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any], project: str = "sparsegt") -> None:
        import wandb

        self.wandb = wandb
        run_dir = Path(run_dir)
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", project), name=run_dir.name, id=run_id,
                              dir=str(run_dir), config=config, resume="allow",
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def make_loggers(names: list[str], run_dir: str | Path, *, config: dict[str, Any], first_step: int,
                 notice: Callable[[str], None] = print) -> list[Any]:
    """The loggers ``names`` asks for, writing into ``run_dir``; ``first_step``: the step of the next epoch."""
    unknown = sorted(set(names) - set(LOGGER_NAMES))
    if unknown:
        raise ValueError(f"train.loggers: unknown logger(s) {unknown}; choose from {list(LOGGER_NAMES)} "
                         "(e.g. train.loggers=[tensorboard,wandb], or [] for none)")
    loggers: list[Any] = []
    if "tensorboard" in names:
        if importlib.util.find_spec("tensorboard") is None:
            notice("TensorBoard logging is off: the tensorboard package is not installed "
                   "(pip install 'sparsegt[tensorboard]'); metrics.jsonl has every number")
        else:
            loggers.append(TensorBoardLogger(run_dir, first_step))
    if "wandb" in names:
        if importlib.util.find_spec("wandb") is None:
            raise ImportError("train.loggers asks for wandb, which is not installed: pip install wandb "
                              "(or leave wandb out of train.loggers)")
        loggers.append(WandbLogger(run_dir, config))
    return loggers
