"""Learning-rate schedule: linear warmup, then a cosine to ``min_lr`` (GraphGPS's ``cosine_with_warmup``)."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine_lr"]


def warmup_cosine_lr(
    progress: float, *, base_lr: float, epochs: int, warmup_epochs: float, min_lr: float = 0.0
) -> float:
    """Learning rate at ``progress`` epochs into training (fractional: ``epoch + batch / num_batches``).

    Warmup rises linearly, ``base_lr * max(progress / warmup_epochs, 1e-6)``, to ``base_lr`` at
    ``warmup_epochs``; then ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2`` with t going from 0 to 1
    at ``epochs``. GraphGPS evaluates it once per epoch (``progress`` = the epoch number, so its first epoch
    runs at ``base_lr * 1e-6``); the trainer does too with ``train.lr_update=epoch``. A pure function of
    its arguments, so a resumed run gets exactly the same rates.
    """
    if warmup_epochs > 0 and progress < warmup_epochs:
        return base_lr * max(progress / warmup_epochs, 1e-6)
    span = max(epochs - warmup_epochs, 1e-12)
    t = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
