"""Training: `Trainer`, run configs and presets, checkpoints, progress, plots, distributed, metrics.

Most users call `train_run` (what ``sparsegt train`` does) with a `RunConfig`::

    from sparsegt.train import get_preset, apply_overrides, train_run
    config = apply_overrides(get_preset("gps-pattern"), ["train.epochs=10"])
    result = train_run(config)          # runs/gps-pattern-<timestamp>/, result.summary["test_metric"]
"""

from .config import DataConfig, RunConfig, TrainConfig, apply_overrides, dump_config, load_config
from .metrics import HIGHER_IS_BETTER, compute_metric
from .presets import RUN_PRESETS, get_preset
from .run import RunResult, evaluate_run, train_run, train_seeds
from .state import TrainingState
from .trainer import Trainer, TrainingDiverged

__all__ = [
    "RunConfig",
    "DataConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "dump_config",
    "get_preset",
    "RUN_PRESETS",
    "train_run",
    "train_seeds",
    "evaluate_run",
    "RunResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingState",
    "compute_metric",
    "HIGHER_IS_BETTER",
]
