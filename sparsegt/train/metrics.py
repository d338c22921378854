"""Evaluation metrics on whole splits: ``compute_metric(name, prediction, target) -> float``.

Conventions (``n`` = number of scored items: nodes for node tasks, graphs for graph tasks):

- classification: ``prediction`` is logits [n, C] (C >= 2; the class is the argmax) or, for binary
  tasks, one logit per item [n] or [n, 1] (class 1 when the logit is > 0); ``target`` [n] int64.
- ``roc_auc`` / ``average_precision``: ``prediction`` scores [n] / [n, 1] (any monotone score: logits
  or probabilities) or [n, T] for T binary tasks; ``target`` 0/1 of the same shape, NaN = missing
  (OGB style). With T tasks the result is the mean over tasks whose targets hold both classes.
- ``mae``: ``prediction`` and ``target`` [n] or [n, T]; the mean absolute error over all entries.

All metrics return fractions, not percentages (PATTERN weighted accuracy 0.86685 = 86.685 %).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.spec import HIGHER_IS_BETTER

__all__ = [
    "compute_metric",
    "HIGHER_IS_BETTER",
    "METRICS",
    "weighted_accuracy",
    "accuracy",
    "mae",
    "roc_auc",
    "average_precision",
]


def _class_predictions(prediction: Tensor, target: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    target = target.reshape(-1)
    if prediction.dim() == 2 and prediction.shape[1] >= 2:
        predicted = prediction.argmax(dim=1)
    elif prediction.dim() == 1 or (prediction.dim() == 2 and prediction.shape[1] == 1):
        predicted = (prediction.reshape(-1) > 0).long()
    else:
        raise ValueError(
            f"{metric}: prediction must be logits [n, C] or binary logits [n] / [n, 1], "
            f"got shape {tuple(prediction.shape)}"
        )
    if predicted.shape[0] != target.shape[0]:
        raise ValueError(
            f"{metric}: prediction has {predicted.shape[0]} rows but target has {target.shape[0]}"
        )
    if target.is_floating_point():
        if not bool((target == target.round()).all()):
            raise ValueError(f"{metric}: target must hold class indices, got non-integer values")
        target = target.long()
    return predicted, target


def weighted_accuracy(prediction: Tensor, target: Tensor) -> float:
    """Class-balanced accuracy: the mean over the classes present in ``target`` of each class's recall.

    Benchmarking-GNNs (``accuracy_SBM``) computes, per batch, the sum of per-class recalls divided by
    the number of classes in the confusion matrix (classes present in targets *or* predictions) and
    then averages over batches. On a whole split where every class occurs in the target, the two are
    equal; we score whole splits and ignore classes that only occur in predictions (they have no recall).
    """
    predicted, target = _class_predictions(prediction, target, "weighted_accuracy")
    if target.numel() == 0:
        raise ValueError("weighted_accuracy: empty target")
    classes = torch.unique(target)
    recalls = [(predicted[target == c] == c).double().mean() for c in classes]
    return float(torch.stack(recalls).mean())


def accuracy(prediction: Tensor, target: Tensor) -> float:
    """Fraction of items whose predicted class equals the target."""
    predicted, target = _class_predictions(prediction, target, "accuracy")
    if target.numel() == 0:
        raise ValueError("accuracy: empty target")
    return float((predicted == target).double().mean())


def mae(prediction: Tensor, target: Tensor) -> float:
    """Mean absolute error over every entry (NaN targets are skipped)."""
    prediction, target = prediction.double(), target.double()
    if prediction.numel() != target.numel():
        raise ValueError(f"mae: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    if prediction.shape != target.shape:  # [n] against [n, 1]
        prediction = prediction.reshape(target.shape)
    keep = ~torch.isnan(target)
    if not bool(keep.any()):
        raise ValueError("mae: no (non-NaN) target")
    return float((prediction[keep] - target[keep]).abs().mean())


def _binary_columns(prediction: Tensor, target: Tensor, metric: str) -> list[tuple[Tensor, Tensor]]:
    """Pairs (scores [m], labels [m] in {0, 1}) per task, NaN targets dropped, one-class tasks skipped."""
    if prediction.dim() == 1:
        prediction = prediction[:, None]
    if target.dim() == 1:
        target = target[:, None]
    if prediction.shape != target.shape:
        raise ValueError(
            f"{metric}: prediction {tuple(prediction.shape)} and target "
            f"{tuple(target.shape)} must have the same shape ([n] or [n, T]); "
            "for multiclass logits use accuracy"
        )
    prediction, target = prediction.double(), target.double()
    columns = []
    for t in range(target.shape[1]):
        keep = ~torch.isnan(target[:, t])
        labels = target[keep, t]
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"{metric}: target column {t} must hold 0/1 (or NaN for missing)")
        if 0 < labels.sum() < labels.numel():
            columns.append((prediction[keep, t], labels))
    if not columns:
        raise ValueError(f"{metric}: needs at least one task whose targets hold both classes 0 and 1")
    return columns


def _average_ranks(scores: Tensor) -> Tensor:
    """1-based ranks of ``scores`` with ties sharing the mean of their ranks."""
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = mean_rank[inverse]
    return ranks


def roc_auc(prediction: Tensor, target: Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney: P(score of a positive > score of a negative), ties 1/2)."""
    values = []
    for scores, labels in _binary_columns(prediction, target, "roc_auc"):
        ranks = _average_ranks(scores)
        positives = labels.sum()
        negatives = labels.numel() - positives
        values.append((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    return float(torch.stack(values).mean())


def average_precision(prediction: Tensor, target: Tensor) -> float:
    """Average precision = sum over thresholds of (R_k - R_{k-1}) * P_k, as scikit-learn defines it.

    Thresholds are the distinct scores, from the highest down; tied scores enter together.
    """
    values = []
    for scores, labels in _binary_columns(prediction, target, "average_precision"):
        order = torch.argsort(scores, descending=True, stable=True)
        scores, labels = scores[order], labels[order]
        true_pos = torch.cumsum(labels, 0)
        false_pos = torch.cumsum(1 - labels, 0)
        last_of_tie = torch.ones_like(scores, dtype=torch.bool)
        last_of_tie[:-1] = scores[1:] != scores[:-1]
        tp, fp = true_pos[last_of_tie], false_pos[last_of_tie]
        precision = tp / (tp + fp)
        recall = tp / labels.sum()
        previous = torch.cat([recall.new_zeros(1), recall[:-1]])
        values.append(((recall - previous) * precision).sum())
    return float(torch.stack(values).mean())


METRICS = {
    "weighted_accuracy": weighted_accuracy,
    "accuracy": accuracy,
    "mae": mae,
    "roc_auc": roc_auc,
    "average_precision": average_precision,
}

assert set(METRICS) == set(HIGHER_IS_BETTER), "every metric needs its direction in sparsegt.data.spec"


def compute_metric(name: str, prediction: Tensor, target: Tensor) -> float:
    """Score ``prediction`` against ``target`` with the metric called ``name`` (see the module docstring)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    prediction = torch.as_tensor(prediction).detach().cpu()
    target = torch.as_tensor(target).detach().cpu()
    return METRICS[name](prediction, target)
