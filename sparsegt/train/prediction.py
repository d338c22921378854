"""A model's predictions against a batch's labels: which rows, which targets, and their loss and metric.

`select_prediction` pairs a model's output with the labels of the task's level (node, edge or graph; the
masked nodes only for a split of one graph); `predict_batches` runs a model in eval mode over batches and
`score_batches` turns what it collected into loss and metric. The trainer, ``sparsegt eval``/``predict``
and the confusion matrices all read predictions this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ..data.spec import TARGET_MASK, TaskSpec
from ..graph import Graph

__all__ = ["select_prediction", "check_output_rows", "predict_batches", "score_batches"]


def select_prediction(output: Tensor, batch: Graph, task: TaskSpec) -> tuple[Tensor, Tensor]:
    """(prediction, target) of a batch: node-level [N, C] vs ``node_data["y"]``, graph-level [B, C] vs
    ``graph_data["y"]``, edge-level [E, C] vs ``edge_data["y"]`` (the batch's edges, CSR order). A node-level
    batch with ``node_data[TARGET_MASK]`` (a split of one graph, or a sampled batch's seeds) keeps the masked
    nodes' rows only."""
    store = {"node": batch.node_data, "edge": batch.edge_data}.get(task.level, batch.graph_data)
    if "y" not in store:
        raise ValueError(f"the batch has no {task.level}-level labels y, but the task is {task.level}-level")
    output, target = check_output_rows(output, batch, task), store["y"]
    mask = batch.node_data.get(TARGET_MASK) if task.level == "node" else None
    return (output, target) if mask is None else (output[mask], target[mask])


def check_output_rows(output: Tensor, batch: Graph, task: TaskSpec) -> Tensor:
    """``output`` itself, after checking it has one row per node, edge or graph (the task's level)."""
    expected = {"node": batch.num_nodes, "edge": batch.num_edges}.get(task.level, batch.num_graphs)
    if output.shape[0] != expected:
        raise ValueError(
            f"the model returned {output.shape[0]} rows but a {task.level}-level task needs "
            f"{expected} (one per {task.level}); check the model's head"
        )
    return output


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[Graph], task: TaskSpec, device: torch.device,
                    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, *, labelled: bool = True
                    ) -> tuple[list[Tensor], list[Tensor], float]:
    """Eval-mode predictions of ``model`` on each batch: ``(predictions, targets, loss_sum)`` with one
    [items, ...] tensor per batch (on CPU) and the loss summed over items (0 without ``loss_fn``).

    ``labelled=False``: graphs without labels (``sparsegt predict``); ``targets`` is then empty."""
    model.eval()
    predictions, targets, loss_sum = [], [], 0.0
    for batch in batches:
        batch = batch.to(device)
        if not labelled:
            predictions.append(check_output_rows(model(batch), batch, task).detach().float().cpu())
            continue
        prediction, target = select_prediction(model(batch), batch, task)
        if loss_fn is not None:
            loss_sum += float(loss_fn(prediction, target, batch=batch)) * target.shape[0]
        predictions.append(prediction.detach().float().cpu())
        targets.append(target.detach().cpu())
    return predictions, targets, loss_sum


def score_batches(predictions: list[Tensor], targets: list[Tensor], loss_sum: float, metric: str,
                  compute_metric: Callable[[str, Tensor, Tensor], float]) -> dict[str, float]:
    """``loss`` (mean over items), ``metric`` over all batches at once (GraphGPS), ``metric_per_batch``: the
    mean of each batch's metric, batches in split order (Benchmarking-GNNs and GT average ``accuracy_SBM``
    this way over the unshuffled test loader)."""
    items = sum(t.shape[0] for t in targets)
    if not items:
        raise ValueError("nothing to evaluate: the split is empty")
    per_batch = [compute_metric(metric, p, t) for p, t in zip(predictions, targets, strict=True) if t.numel()]
    whole = compute_metric(metric, torch.cat(predictions), torch.cat(targets))
    return {"loss": loss_sum / items, "metric": float(whole), "metric_per_batch": float(np.mean(per_batch))}
