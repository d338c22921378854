"""What a dataset promises the model and the trainer: its task and the form of its features."""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_LEVELS = ("node", "graph", "edge")
TASK_KINDS = ("multiclass", "binary", "regression")
# node_data key of a bool [N] mask: the nodes whose predictions count (loss and metric) in a node-level task.
# A dataset of one graph gives each split the same graph with its own mask (`sparsegt.data.node_splits`); a
# sampled batch marks its seed nodes (`sparsegt.data.neighbor_loader`). Without it every node counts.
TARGET_MASK = "target_mask"
# the metrics a task may name (computed by sparsegt.train.metrics), and whether higher is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "weighted_accuracy": True,
    "accuracy": True,
    "mae": False,
    "roc_auc": True,
    "average_precision": True,
}


@dataclass(frozen=True)
class FeatureSpec:
    """The form of node (``x`` [N, F]) or edge (``edge_attr`` [E, F]) features.

    - ``kind="categorical"``: ``x`` is int64 [N, F] and column f takes values in ``[0, cardinalities[f])``;
    - ``kind="continuous"``: ``x`` is float [N, dim];
    - ``kind="none"``: no features (models embed a constant).
    """

    kind: str = "none"
    cardinalities: tuple[int, ...] = ()
    dim: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "continuous", "none"):
            raise ValueError(f"FeatureSpec.kind must be categorical, continuous or none, got {self.kind!r}")


@dataclass(frozen=True)
class TaskSpec:
    """What is predicted and how it is scored.

    Labels: node-level tasks keep ``node_data["y"]`` ([N] int64 classes, or [N, T] float targets);
    graph-level tasks keep ``graph_data["y"]`` ([1] int64 per graph, or [1, T] float).
    ``num_outputs``: classes for multiclass, 1 for binary, targets T for regression.
    ``metric``: a name understood by ``sparsegt.train.metrics`` (``weighted_accuracy``, ``accuracy``,
    ``mae``, ``roc_auc``, ``average_precision``).
    """

    level: str
    kind: str
    num_outputs: int
    metric: str
    higher_is_better: bool = True
    target_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.level not in TASK_LEVELS:
            raise ValueError(f"TaskSpec.level must be one of {TASK_LEVELS}, got {self.level!r}")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"TaskSpec.kind must be one of {TASK_KINDS}, got {self.kind!r}")
