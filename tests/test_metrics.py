"""Metrics on fixed arrays against values computed by hand (and scikit-learn where installed)."""

import math

import numpy as np
import pytest
import torch

from sparsegt.train.metrics import HIGHER_IS_BETTER, METRICS, compute_metric


def logits_for(classes, num_classes):
    """Logits whose argmax is ``classes``."""
    out = torch.zeros(len(classes), num_classes)
    out[torch.arange(len(classes)), torch.tensor(classes)] = 1.0
    return out


def test_weighted_accuracy_is_mean_recall_over_target_classes():
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    prediction = logits_for([0, 1, 0, 1, 1, 0], 3)
    # recalls: class 0: 2/3, class 1: 2/2, class 2: 0/1
    assert compute_metric("weighted_accuracy", prediction, target) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert compute_metric("accuracy", prediction, target) == pytest.approx(4 / 6)


def test_weighted_accuracy_ignores_classes_only_predicted():
    target = torch.tensor([0, 0, 1, 1])
    prediction = logits_for([2, 0, 1, 1], 3)  # class 2 never occurs in the target: no recall to average
    assert compute_metric("weighted_accuracy", prediction, target) == pytest.approx((0.5 + 1.0) / 2)


def test_weighted_accuracy_matches_benchmarking_gnns_when_all_classes_occur():
    # Benchmarking-GNNs accuracy_SBM: confusion matrix over classes, sum of CM[r, r] / |class r| / C
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 200)
    predicted = np.where(rng.random(200) < 0.6, target, rng.integers(0, 4, 200))
    cm = np.zeros((4, 4))
    np.add.at(cm, (target, predicted), 1)
    expected = np.mean([cm[r, r] / (target == r).sum() for r in range(4)])
    got = compute_metric("weighted_accuracy", logits_for(predicted.tolist(), 4), torch.from_numpy(target))
    assert got == pytest.approx(expected)


def test_binary_logits_threshold_at_zero():
    target = torch.tensor([1, 0, 1, 0, 1])
    logits = torch.tensor([2.0, -1.0, -0.5, 0.3, 0.0])  # predicted 1, 0, 0, 1, 0
    assert compute_metric("accuracy", logits, target) == pytest.approx(2 / 5)
    assert compute_metric("accuracy", logits[:, None], target[:, None]) == pytest.approx(2 / 5)
    # class 1 recall 1/3, class 0 recall 1/2
    assert compute_metric("weighted_accuracy", logits, target) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_mae_by_hand():
    prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.5, 2.0], [2.0, 6.0]])
    assert compute_metric("mae", prediction, target) == pytest.approx((0.5 + 0 + 1 + 2) / 4)
    assert compute_metric("mae", torch.tensor([1.0, 2.0]), torch.tensor([[0.0], [4.0]])) == pytest.approx(1.5)
    nan_target = torch.tensor([[1.5, float("nan")], [2.0, 6.0]])
    assert compute_metric("mae", prediction, nan_target) == pytest.approx((0.5 + 1 + 2) / 3)


def test_roc_auc_by_hand():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    # positive-negative pairs ordered correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); (0.35<0.4) wrong
    assert compute_metric("roc_auc", scores, labels) == pytest.approx(3 / 4)
    tied = torch.tensor([0.5, 0.5, 0.2, 0.9])
    tied_labels = torch.tensor([1, 0, 0, 1])
    # pairs: (0.5 vs 0.5) = 1/2, (0.5 vs 0.2) = 1, (0.9 vs 0.5) = 1, (0.9 vs 0.2) = 1
    assert compute_metric("roc_auc", tied, tied_labels) == pytest.approx(3.5 / 4)


def test_average_precision_by_hand():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    # ranked: 0.8 (+) P=1 R=.5; 0.4 (-) P=.5 R=.5; 0.35 (+) P=2/3 R=1; 0.1 (-)
    assert compute_metric("average_precision", scores, labels) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    tied = torch.tensor([0.5, 0.5, 0.2])
    tied_labels = torch.tensor([1, 0, 1])
    # threshold 0.5 takes both tied items: P=1/2 R=1/2; threshold 0.2: P=2/3 R=1
    assert compute_metric("average_precision", tied, tied_labels) == pytest.approx(0.5 * 0.5 + 0.5 * (2 / 3))


def test_multitask_scores_skip_missing_and_one_class_tasks():
    nan = float("nan")
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.4, 0.2, 0.1], [0.35, 0.7, 0.5], [0.8, 0.1, 0.2]])
    labels = torch.tensor([[0, 1, 1], [0, nan, 1], [1, 0, 1], [1, 1, 1]])
    # task 0: 3/4 (above); task 1 (rows 0, 2, 3): scores .9(+) .7(-) .1(+): pairs .9>.7 yes, .1>.7 no -> 1/2;
    # task 2 holds only positives: skipped
    assert compute_metric("roc_auc", scores, labels) == pytest.approx((0.75 + 0.5) / 2)


def test_against_sklearn_on_random_arrays():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels * 0.7
    scores[:50] = np.round(scores[:50], 1)  # some ties
    assert compute_metric("roc_auc", torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        metrics.roc_auc_score(labels, scores))
    ap = compute_metric("average_precision", torch.from_numpy(scores), torch.from_numpy(labels))
    assert ap == pytest.approx(metrics.average_precision_score(labels, scores))
    target = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5))
    balanced = compute_metric("weighted_accuracy", torch.from_numpy(logits), torch.from_numpy(target))
    assert balanced == pytest.approx(metrics.balanced_accuracy_score(target, logits.argmax(1)))


def test_registry_and_errors():
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert HIGHER_IS_BETTER["mae"] is False and HIGHER_IS_BETTER["weighted_accuracy"] is True
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metric("f1", torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="both classes"):
        compute_metric("roc_auc", torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="rows"):
        compute_metric("accuracy", torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        compute_metric("roc_auc", torch.zeros(3, 2), torch.zeros(3))
    assert math.isfinite(compute_metric("accuracy", torch.zeros(3, 2), torch.tensor([0.0, 1.0, 0.0])))
