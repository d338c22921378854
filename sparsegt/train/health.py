"""Training health: has a run learnt anything? The loss of the best constant prediction, and the test against it.

A model that ignores its input can still reach the loss of the best constant prediction (the class
frequencies, the targets' mean or median); a run whose training loss has not fallen below that has learnt
nothing, whatever its status says (a learning rate of 10 on the demo "completes" at chance). The trainer
compares the two after ``train.chance_check_epochs`` epochs (`Trainer._check_chance`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..data.spec import TaskSpec

__all__ = ["CHANCE_MARGIN", "chance_loss", "learnt_something"]

# the training loss must fall this fraction below the best constant prediction's to count as learning
CHANCE_MARGIN = 0.02


def chance_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], task: TaskSpec, targets: Tensor) -> float:
    """The loss ``loss_fn`` gives the best constant prediction of ``targets`` (all the training labels): the
    smallest over the class frequencies and uniform logits (classes), or the mean and the median (regression)."""
    items = targets.shape[0]
    if task.kind == "multiclass":
        counts = torch.bincount(targets.reshape(-1).long(), minlength=task.num_outputs).double()
        frequencies = torch.log(counts.clamp(min=0.5) / counts.sum())
        constants = [frequencies, torch.zeros_like(frequencies)]
    else:
        values = targets.reshape(items, -1).double()
        if task.kind == "binary":
            p = values.mean(0).clamp(1e-6, 1 - 1e-6)
            constants = [torch.log(p / (1 - p)), torch.zeros_like(p)]
        else:
            constants = [values.mean(0), values.median(0).values]
    with torch.no_grad():
        return min(float(loss_fn(c.float().expand(items, -1).contiguous(), targets)) for c in constants)


def learnt_something(train_loss: float, chance: float) -> bool:
    """Whether ``train_loss`` is at least `CHANCE_MARGIN` below the chance loss (a NaN loss has not)."""
    return train_loss < (1 - CHANCE_MARGIN) * chance
