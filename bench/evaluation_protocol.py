"""What moves a trained PATTERN model's test score besides its weights (issue #13's finding for GraphGPS).

Two measurements on a finished run (`runs/gps-pattern-...`):

- ``draw``: PATTERN's test split is 20 graphs of each of 100 planted patterns (in pattern order). The
  weighted accuracy per pattern, and a bootstrap over the 100 patterns: how much another draw of patterns
  (the published set is one) moves the whole-split metric. Uses ``best.pt``.
- ``statistics``: the final weights (``last.pt``) evaluated with BatchNorm statistics estimated several
  ways: as saved (the trainer's recalibrated ones), recalibrated with dropout and sign flips on, and
  ``--draws`` draws of GraphGPS-style moving averages (momentum 0.1 over 40 random training batches in train
  mode, the first batch setting the statistics); validation for every draw, test for the three best by
  validation. Shows whether test follows validation when only the statistics change, i.e. whether picking
  the best of noisy evaluations by validation carries over to test.

    .venv/bin/python bench/evaluation_protocol.py runs/gps-pattern-20261203-095652 [--draws 8]

Prints JSON and writes bench/results/evaluation_protocol.json. About 10 min on the idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sparsegt.graph import Graph
from sparsegt.train.batch_norm import batch_norms
from sparsegt.train.config import load_config
from sparsegt.train.metrics import compute_metric
from sparsegt.train.run import build_dataset, build_model

RESULTS = Path(__file__).resolve().parent / "results" / "evaluation_protocol.json"
PER_PATTERN = 20  # test graphs per planted pattern (PATTERN's generator, in pattern order)


def load(run: Path, checkpoint: str):
    config = load_config(run / "config.yaml")
    dataset = build_dataset(config, splits=("train", "val", "test"))
    model = build_model(config, dataset)
    model.load_state_dict(torch.load(run / checkpoint, map_location="cpu", weights_only=True)["model"])
    return config, dataset, model.eval()


@torch.no_grad()
def predict(model, graphs, size):
    model.eval()
    outputs, targets = [], []
    for i in range(0, len(graphs), size):
        batch = Graph.batch(graphs[i:i + size])
        outputs.append(model(batch))
        targets.append(batch.y)
    return outputs, targets


def weighted(outputs, targets) -> float:
    return 100 * float(compute_metric("weighted_accuracy", torch.cat(outputs), torch.cat(targets)))


def score(model, graphs, size) -> tuple[float, float]:
    """(whole split, mean over batches of ``size``), in %."""
    outputs, targets = predict(model, graphs, size)
    per_batch = np.mean([compute_metric("weighted_accuracy", o, t) for o, t in zip(outputs, targets, strict=True)])
    return round(weighted(outputs, targets), 2), round(100 * float(per_batch), 2)


def pattern_draw(run: Path) -> dict:
    config, dataset, model = load(run, "best.pt")
    outputs, targets = predict(model, dataset.test, PER_PATTERN)  # one batch = one planted pattern
    per_pattern = [weighted([o], [t]) for o, t in zip(outputs, targets, strict=True)]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        pick = rng.integers(0, len(outputs), len(outputs))
        boot.append(weighted([outputs[k] for k in pick], [targets[k] for k in pick]))
    return {"whole_split": round(weighted(outputs, targets), 2), "patterns": len(outputs),
            "per_pattern_std": round(float(np.std(per_pattern)), 2),
            "per_pattern_range": [round(min(per_pattern), 2), round(max(per_pattern), 2)],
            "bootstrap_se": round(float(np.std(boot)), 3),
            "bootstrap_95": [round(float(np.percentile(boot, 2.5)), 2), round(float(np.percentile(boot, 97.5)), 2)]}


@torch.no_grad()
def estimate_statistics(model, dataset, size, seed, count, momentum, dropout_on) -> None:
    """BatchNorm statistics from ``count`` random training batches (seeded), the first batch setting them."""
    order = np.random.default_rng(seed).permutation(len(dataset.train))[: count * size]
    torch.manual_seed(seed)
    model.train() if dropout_on else model.eval()
    norms = batch_norms(model)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for n, i in enumerate(range(0, len(order), size)):
        model(Graph.batch([dataset.train[int(j)] for j in order[i:i + size]]))
        if n == 0 and momentum is not None:
            for m in norms:
                m.momentum = momentum
    for m in norms:
        m.momentum = 0.1
    model.eval()


def statistics(run: Path, draws: int) -> dict:
    config, dataset, model = load(run, "last.pt")
    size = config.data.batch_size
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    out = {"as saved (recalibrated, eval mode)": {"val": score(model, dataset.val, size),
                                                  "test": score(model, dataset.test, size)}}
    estimate_statistics(model, dataset, size, seed=0, count=32, momentum=None, dropout_on=True)
    out["recalibrated with dropout and sign flips on"] = {"val": score(model, dataset.val, size),
                                                          "test": score(model, dataset.test, size)}
    moving = []
    for seed in range(draws):
        model.load_state_dict(saved)
        estimate_statistics(model, dataset, size, seed=seed, count=40, momentum=0.1, dropout_on=True)
        stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        moving.append({"seed": seed, "val": score(model, dataset.val, size), "stats": stats})
    best = sorted(moving, key=lambda r: -r["val"][0])[:3]
    for r in best:
        model.load_state_dict({**saved, **r["stats"]})
        r["test"] = score(model, dataset.test, size)
    vals = [r["val"][0] for r in moving]
    out["moving averages"] = {"draws": draws, "val_mean": round(float(np.mean(vals)), 2),
                              "val_std": round(float(np.std(vals)), 2), "val_range": [min(vals), max(vals)],
                              "best_by_val": [{"seed": r["seed"], "val": r["val"], "test": r["test"]} for r in best]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args()
    start = time.time()
    result = {"run": str(args.run), "draw": pattern_draw(args.run), "statistics": statistics(args.run, args.draws)}
    result["seconds"] = round(time.time() - start)
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
