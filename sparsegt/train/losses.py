"""Training objectives chosen from the dataset's `TaskSpec` (and the run's ``train.loss``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.spec import TaskSpec

__all__ = ["weighted_cross_entropy", "make_loss", "LOSSES"]

LOSSES = ("auto", "cross_entropy", "weighted_cross_entropy", "weighted_cross_entropy_node_mean", "bce", "l1",
          "mse")


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
    }
    if task.kind not in fits[loss]:
        raise ValueError(
            f"train.loss = {loss!r} does not fit a {task.kind} task (metric {task.metric}); use train.loss=auto"
        )
    if class_weighted and task.kind != "multiclass":
        raise ValueError(f"train.class_weighted_loss=true needs a multiclass task, this one is {task.kind}")
    return loss


def make_loss(
    task: TaskSpec, loss: str = "auto", class_weighted: bool | None = None
) -> tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    """(name, fn) with ``fn(prediction, target) -> scalar`` for the task."""
    name = resolve_loss_name(task, loss, class_weighted)
    fns = {
        "cross_entropy": F.cross_entropy,
        "weighted_cross_entropy": weighted_cross_entropy,
        "weighted_cross_entropy_node_mean": lambda logits, target: weighted_cross_entropy(logits, target, True),
        "bce": _bce,
        "l1": _regression(F.l1_loss),
        "mse": _regression(F.mse_loss),
    }
    return name, fns[name]
