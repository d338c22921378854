"""A sparsification method applied to a trained run and measured on one of its splits (``sparsegt sparsify``).

- `zero_tprune_run`: Zero-TPrune (`sparsegt.sparsify.ZeroTPrune`, docs/sparsify.md) on a trained model, zero-shot:
  the split is scored by the plain model and by the model that prunes ``ratio`` of each graph's nodes after the
  chosen layers; a `PruningReport` holds the metric before and after, the nodes that reach the readout and the
  wall-clock time per graph of both passes (measured, for the record: it depends on the machine and its load).
- `activation_density_run`: the fraction of nonzero FFN activations of every layer (Lazy Neuron's measure,
  `sparsegt.nn.activation_density`) of a trained model on the split.

Both load the run as ``sparsegt predict`` does (`sparsegt.train.trained.load_trained`: its config, its
``model_inputs.json``, the checkpoint's weights, eval mode) and rebuild the split with the run's own
`build_dataset` (its encodings, and its ``data.trim_edges`` if it trained on trimmed graphs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..graph import Graph
from .metrics import compute_metric
from .prediction import predict_batches, score_batches
from .run import build_dataset
from .trained import TrainedModel, load_trained

__all__ = ["PruningReport", "zero_tprune_run", "activation_density_run", "split_graphs"]


@dataclass
class PruningReport:
    """What `zero_tprune_run` measured on ``graphs`` graphs of ``split``.

    Attributes:
        metric: the task's metric name; metric_before / metric_after: its value without and with pruning.
        nodes_before: nodes entering the first layer; nodes_after: nodes reaching the readout (summed over graphs).
        seconds_before / seconds_after: wall-clock time of the two passes over the split (model calls, after a
            warm-up batch; not asserted anywhere, it depends on the machine).
        prune_after: ``{layer: ratio}`` the pruner ran with.
    """

    run: str
    split: str
    graphs: int
    metric: str
    metric_before: float
    metric_after: float
    nodes_before: int
    nodes_after: int
    seconds_before: float
    seconds_after: float
    prune_after: dict[int, float]

    @property
    def nodes_kept(self) -> float:
        """Fraction of the nodes that reach the readout."""
        return self.nodes_after / self.nodes_before if self.nodes_before else 1.0

    def ms_per_graph(self, seconds: float) -> float:
        return 1000.0 * seconds / max(self.graphs, 1)


def split_graphs(trained: TrainedModel, split: str = "val", limit: int | None = None) -> list[Graph]:
    """The graphs of the run's ``split`` (the first ``limit``), built as for training (encodings, trimming)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 graphs (or none for the whole split), got {limit}")
    if trained.config.data.fanouts:
        raise ValueError(f"{trained.name} trained on neighbourhoods sampled from one large graph (data.fanouts); "
                         "sparsify runs whole graphs: use a run of a dataset of many graphs")
    graphs = list(getattr(build_dataset(trained.config, splits=(split,)), split))
    graphs = graphs[:limit] if limit is not None else graphs
    if not graphs:
        raise ValueError(f"{trained.name}: the {split} split is empty; choose another with --split")
    return graphs


def _batches(graphs: Sequence[Graph], batch_size: int) -> list[Graph]:
    return [Graph.batch(list(graphs[i:i + batch_size])) for i in range(0, len(graphs), batch_size)]


class _CountingPruner(nn.Module):
    """``ZeroTPrune.run`` as a module for `predict_batches`, counting the nodes in and at the readout."""

    def __init__(self, pruner: Any) -> None:
        super().__init__()
        self.pruner = pruner
        self.nodes_in = self.nodes_out = 0

    def forward(self, batch: Graph) -> Tensor:
        result = self.pruner.run(batch)
        self.nodes_in += result.nodes_per_layer[0]
        self.nodes_out += result.nodes_per_layer[-1]
        return result.output


def _timed_score(model: nn.Module, batches: list[Graph], trained: TrainedModel) -> tuple[float, float]:
    """(metric, seconds) of ``model`` over ``batches``, after one untimed warm-up batch (lazy compilation,
    first-call allocations)."""
    predict_batches(model, batches[:1], trained.inputs.task, trained.device)
    if isinstance(model, _CountingPruner):
        model.nodes_in = model.nodes_out = 0
    if trained.device.type == "cuda":
        torch.cuda.synchronize(trained.device)
    start = time.perf_counter()
    predictions, targets, _ = predict_batches(model, batches, trained.inputs.task, trained.device)
    if trained.device.type == "cuda":
        torch.cuda.synchronize(trained.device)
    seconds = time.perf_counter() - start
    metric = trained.inputs.task.metric
    return score_batches(predictions, targets, 0.0, metric, compute_metric)["metric"], seconds


def zero_tprune_run(run_dir: str | Path, ratio: float, *, layers: Sequence[int] | None = None, split: str = "val",
                    checkpoint: str = "best.pt", device: str = "auto", limit: int | None = None,
                    batch_size: int | None = None) -> PruningReport:
    """Score ``split`` of a trained run without and with Zero-TPrune (module docstring).

    Args:
        ratio: in [0, 1): after each layer of ``layers``, each graph drops ``round(ratio * n_b)`` of its current
            nodes (merged into the kept ones). 0 runs the pruning path and removes nothing.
        layers: the layers after which to prune (default: every layer but the last).
        limit: the first ``limit`` graphs of the split only. batch_size: default, the run's evaluation batch.
    """
    from ..sparsify import ZeroTPrune

    trained = load_trained(run_dir, checkpoint=checkpoint, device=device)
    num_layers = len(trained.model.layers)
    if layers is None:
        if num_layers < 2:
            raise ValueError(f"{trained.name} has one layer: Zero-TPrune prunes between layers, so it needs >= 2")
        layers = range(num_layers - 1)
    prune_after = {int(layer): float(ratio) for layer in layers}
    if not prune_after:
        raise ValueError("give at least one layer to prune after (e.g. --layers 0)")
    pruner = _CountingPruner(ZeroTPrune(trained.model, prune_after))
    graphs = split_graphs(trained, split, limit)
    batches = _batches(graphs, batch_size or trained.batch_size)
    before, seconds_before = _timed_score(trained.model, batches, trained)
    after, seconds_after = _timed_score(pruner, batches, trained)
    return PruningReport(trained.name, split, len(graphs), trained.inputs.task.metric, before, after,
                         pruner.nodes_in, pruner.nodes_out, seconds_before, seconds_after, prune_after)


def activation_density_run(run_dir: str | Path, *, split: str = "val", checkpoint: str = "best.pt",
                           device: str = "auto", limit: int | None = None,
                           batch_size: int | None = None) -> dict[str, float]:
    """{FFN name: fraction of its activations that are nonzero} of a trained run on ``split``."""
    from ..nn import activation_density

    trained = load_trained(run_dir, checkpoint=checkpoint, device=device)
    batches = _batches(split_graphs(trained, split, limit), batch_size or trained.batch_size)
    try:
        return activation_density(trained.model, [b.to(trained.device) for b in batches])
    except ValueError as err:
        raise ValueError(f"{trained.name} ({trained.config.model.layer} layers): {err}") from None
