"""Why GPS's PATTERN validation curve swings (issue #21): which BatchNorm statistics the evaluation uses.

Trains the `gps-pattern` preset on pattern-small (1,000 training graphs; the full preset's model, AdamW at
lr 5e-4, clipping 1.0) and after each epoch scores 400 validation graphs with the *same weights* and five
sets of eval-mode BatchNorm statistics:

- ``moving``: the running averages training left (momentum 0.1: what GraphGPS evaluates with);
- ``recal``: the equal-weight average over 20 training batches, everything else in eval mode (our fix);
- ``recal+noise``: the same with attention dropout and LapPE sign flips switched on while averaging;
- ``ema full``: a fresh momentum-0.1 average over the epoch's full batches (current weights, eval mode);
- ``ema partial last``: the same over the last 12 full batches and then the epoch's partial last batch.

Usage: ``python bench/bn_statistics.py [epochs]``; prints a table, writes bench/results/bn_statistics.json.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sparsegt import Graph
from sparsegt.data import DataLoader
from sparsegt.encodings import LapPEEncoder
from sparsegt.nn.attention import SparseMultiheadAttention
from sparsegt.train.losses import weighted_cross_entropy
from sparsegt.train.metrics import weighted_accuracy
from sparsegt.train.presets import get_preset
from sparsegt.train.run import build_dataset, build_model

BATCH = 32


def score(model: nn.Module, graphs: list[Graph]) -> float:
    model.eval()
    predictions, targets = [], []
    with torch.no_grad():
        for i in range(0, len(graphs), 128):
            batch = Graph.batch(graphs[i:i + 128])
            predictions.append(model(batch))
            targets.append(batch.y)
    return 100 * weighted_accuracy(torch.cat(predictions), torch.cat(targets))


def with_statistics(model: nn.Module, batches: list[Graph], momentum: float | None, noise: bool = False) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``batches`` (in order)."""
    copy_ = copy.deepcopy(model).eval()
    for module in copy_.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.reset_running_stats()
            module.momentum = momentum
            module.train()
        if noise and isinstance(module, (nn.Dropout, SparseMultiheadAttention, LapPEEncoder)):
            module.train()
    rng = torch.get_rng_state()
    with torch.no_grad():
        for batch in batches:
            copy_(batch)
    torch.set_rng_state(rng)
    return copy_


def main(epochs: int) -> None:
    torch.manual_seed(0)
    config = get_preset("gps-pattern")
    config.data.name = "pattern-small"
    dataset = build_dataset(config)
    model = build_model(config, dataset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-5)
    loader = DataLoader(dataset.train, BATCH, shuffle=True, seed=0)
    val = dataset.val[:400]
    probe = list(loader.batches(999))  # a fixed pass: full batches, then the partial last one
    full, partial = [b for b in probe if b.num_graphs == BATCH], [b for b in probe if b.num_graphs < BATCH]
    rows = []
    print(f"{'epoch':>5} {'moving':>7} {'recal':>7} {'recal+noise':>11} {'ema full':>8} {'ema partial last':>16}")
    for epoch in range(epochs):
        model.train()
        start = time.time()
        for batch in loader.batches(epoch):
            loss = weighted_cross_entropy(model(batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        row = {
            "epoch": epoch + 1,
            "train_s": round(time.time() - start, 1),
            "moving": score(model, val),
            "recal": score(with_statistics(model, full[:20], None), val),
            "recal+noise": score(with_statistics(model, full[:20], None, noise=True), val),
            "ema full": score(with_statistics(model, full, 0.1), val),
            "ema partial last": score(with_statistics(model, full[-12:] + partial, 0.1), val),
        }
        rows.append(row)
        print(f"{row['epoch']:>5} {row['moving']:>7.1f} {row['recal']:>7.1f} {row['recal+noise']:>11.1f} "
              f"{row['ema full']:>8.1f} {row['ema partial last']:>16.1f}", flush=True)
    out = Path(__file__).resolve().parent / "results" / "bn_statistics.json"
    out.write_text(json.dumps({"partial_last_batch_graphs": [b.num_graphs for b in partial], "rows": rows},
                              indent=2) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
