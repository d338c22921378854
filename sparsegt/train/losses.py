"""Training objectives chosen from the dataset's `TaskSpec` (and the run's ``train.loss``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.spec import TaskSpec
from ..graph import Graph

__all__ = ["weighted_cross_entropy", "density_normalized_edge_loss", "make_loss", "LOSSES"]

LOSSES = ("auto", "cross_entropy", "weighted_cross_entropy", "weighted_cross_entropy_node_mean", "bce", "l1",
          "mse", "density_normalized_edge")


def density_normalized_edge_loss(edge_losses: Tensor, foreground: Tensor, edge_graph: Tensor,
                                 num_graphs: int) -> Tensor:
    """The density-normalised edge loss of Knyazev et al., "Graph Density-Aware Losses for Novel Compositions
    in Scene Graph Generation", BMVC 2020 (arXiv:2005.08230).

    The usual edge loss averages over all M_b edges of graph b, foreground (labelled) and background alike,
    ``(1/M_b) sum_e l_e``, so each foreground edge weighs ``1/M_b``: the graph's density ``d_b = M_FG,b / M_b``
    scales its foreground term, and large sparse graphs are neglected. The normalised loss divides by the
    foreground count instead, and averages graphs::

        L = (1/B) sum_b (1/M_FG,b) sum_{e in b} l_e  =  (1/B) sum_b mean_{e in b}(l_e) / d_b

    (the authors' ``dnorm``; a graph without foreground edges keeps ``1/M_b``).

    Args:
        edge_losses: [E] per-edge losses. foreground: [E] bool, True for labelled (non-background) edges.
        edge_graph: [E] graph of each edge. num_graphs: B.
    """
    if not (edge_losses.shape == foreground.shape == edge_graph.shape) or edge_losses.dim() != 1:
        raise ValueError(f"density_normalized_edge_loss: edge_losses {tuple(edge_losses.shape)}, foreground "
                         f"{tuple(foreground.shape)} and edge_graph {tuple(edge_graph.shape)} must all be [E]")
    edges = torch.bincount(edge_graph, minlength=num_graphs).to(edge_losses.dtype)
    labelled = torch.bincount(edge_graph, weights=foreground.to(edge_losses.dtype), minlength=num_graphs)
    normaliser = torch.where(labelled > 0, labelled, edges).clamp_min(1)
    per_graph = edge_losses.new_zeros(num_graphs).index_add(0, edge_graph, edge_losses) / normaliser
    return per_graph[edges > 0].mean() if bool((edges > 0).any()) else edge_losses.sum() * 0


def _density_normalized(task: TaskSpec) -> Callable[..., Tensor]:
    """Per-edge cross-entropy (multiclass: class 0 is background) or BCE (binary: label 0 is background),
    normalised per graph by `density_normalized_edge_loss`; without a batch, the edges are one graph."""

    def loss(prediction: Tensor, target: Tensor, batch: Graph | None = None) -> Tensor:
        if task.kind == "multiclass":
            per_edge = F.cross_entropy(prediction, target, reduction="none")
            foreground = target != 0
        else:
            flat = target.reshape(target.shape[0], -1).to(prediction.dtype)
            per_edge = F.binary_cross_entropy_with_logits(prediction.reshape(flat.shape), flat,
                                                          reduction="none").mean(1)
            foreground = flat.ne(0).any(1)
        if batch is None or batch.ptr is None:
            edge_graph, num_graphs = torch.zeros_like(target.reshape(target.shape[0], -1)[:, 0], dtype=torch.long), 1
        else:
            edge_graph, num_graphs = batch.batch_index[batch.row_index()], batch.num_graphs
        return density_normalized_edge_loss(per_edge, foreground, edge_graph, num_graphs)

    return loss


def weighted_cross_entropy(logits: Tensor, target: Tensor, node_mean: bool = False) -> Tensor:
    """Cross-entropy with class weights ``(V - n_c) / V`` from the batch's own label counts.

    This is the loss of Benchmarking-GNNs and GraphGPS (``weighted_cross_entropy``) on PATTERN and
    CLUSTER: with V labels in the batch and n_c of class c, rare classes weigh more and classes absent
    from the batch weigh 0. ``logits``: [N, C]; ``target``: [N] int64.

    The weighted sum is divided by the sum of the weights (``nn.CrossEntropyLoss(weight)``:
    Benchmarking-GNNs, GT, and GraphGPS with more than two classes) or, with ``node_mean``, by V:
    GraphGPS on a two-class task predicts one logit and takes ``binary_cross_entropy_with_logits(pred, y,
    weight=w[y])``, a plain mean over nodes, which equals this loss on two logits (the BCE of their
    difference) with ``node_mean=True``. On PATTERN the two differ by a factor ~3.5 in scale, which matters
    under gradient clipping.
    """
    num_labels, num_classes = target.shape[0], logits.shape[1]
    counts = torch.bincount(target, minlength=num_classes)
    weight = (num_labels - counts).to(logits.dtype) / num_labels
    weight = weight * (counts > 0).to(logits.dtype)
    if not bool((weight > 0).any()):  # one class only in this batch: fall back to plain cross-entropy
        return F.cross_entropy(logits, target)
    if node_mean:
        return (F.cross_entropy(logits, target, reduction="none") * weight[target]).mean()
    return F.cross_entropy(logits, target, weight=weight)


def _bce(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(
        logits.reshape(target.shape[0], -1), target.reshape(target.shape[0], -1).to(logits.dtype)
    )


def _regression(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        target = target.reshape(target.shape[0], -1).to(prediction.dtype)
        return fn(prediction.reshape(target.shape), target)

    return loss


def resolve_loss_name(task: TaskSpec, loss: str = "auto", class_weighted: bool | None = None) -> str:
    """The loss a run uses; ValueError when it does not fit the task (before training starts)."""
    if loss not in LOSSES:
        raise ValueError(f"train.loss = {loss!r} is not one of {', '.join(LOSSES)}")
    if loss == "auto":
        if task.kind == "multiclass":
            weighted = class_weighted if class_weighted is not None else task.metric == "weighted_accuracy"
            loss = "weighted_cross_entropy" if weighted else "cross_entropy"
        elif task.kind == "binary":
            loss = "bce"
        else:
            loss = "l1" if task.metric == "mae" else "mse"
    elif class_weighted and not loss.startswith("weighted_cross_entropy"):
        raise ValueError(
            f"train.class_weighted_loss=true needs train.loss=auto or weighted_cross_entropy, not {loss!r}"
        )
    fits = {
        "cross_entropy": ("multiclass",),
        "weighted_cross_entropy": ("multiclass",),
        "weighted_cross_entropy_node_mean": ("multiclass",),
        "bce": ("binary",),
        "l1": ("regression",),
        "mse": ("regression",),
        "density_normalized_edge": ("multiclass", "binary"),
    }
    if task.kind not in fits[loss]:
        raise ValueError(
            f"train.loss = {loss!r} does not fit a {task.kind} task (metric {task.metric}); use train.loss=auto"
        )
    if loss == "density_normalized_edge" and task.level != "edge":
        raise ValueError("train.loss = density_normalized_edge needs an edge-level task, this one is "
                         f"{task.level}-level")
    if class_weighted and task.kind != "multiclass":
        raise ValueError(f"train.class_weighted_loss=true needs a multiclass task, this one is {task.kind}")
    return loss


def make_loss(
    task: TaskSpec, loss: str = "auto", class_weighted: bool | None = None
) -> tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    """(name, fn) with ``fn(prediction, target, batch=None) -> scalar`` for the task (only the density-normalised
    edge loss reads ``batch``: the graph of each edge)."""
    name = resolve_loss_name(task, loss, class_weighted)
    if name == "density_normalized_edge":
        return name, _density_normalized(task)
    fns = {
        "cross_entropy": F.cross_entropy,
        "weighted_cross_entropy": weighted_cross_entropy,
        "weighted_cross_entropy_node_mean": lambda logits, target: weighted_cross_entropy(logits, target, True),
        "bce": _bce,
        "l1": _regression(F.l1_loss),
        "mse": _regression(F.mse_loss),
    }
    base = fns[name]

    def fn(prediction: Tensor, target: Tensor, batch: Graph | None = None) -> Tensor:
        return base(prediction, target)

    return name, fn
