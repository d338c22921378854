"""Pretrained checkpoints of the reproduced runs: export a run, re-check its test number from scratch.

A pretrained model is a folder ``pretrained/NAME/`` with four files:

- ``config.yaml``: the run's config (data, model, training) exactly as trained;
- ``model_inputs.json``: what the model reads (`sparsegt.train.model_inputs`; ``sparsegt predict`` checks it);
- ``model.pt``: the weights only (a ``state_dict`` of tensors; loaded with ``weights_only=True``), with the
  BatchNorm statistics the reported evaluation used;
- ``card.json``: what it claims: the test metric of the run (both SBM conventions where they apply), the
  published number and its source, the run folder, epoch and commit it came from, and its status.

`evaluate_pretrained` regenerates the seeded test split (only the test split gets encodings), loads the
weights and scores them, so anyone can re-check a number without training: ``sparsegt eval --pretrained
NAME``. The folder is found in ``$SPARSEGT_PRETRAINED`` or the repository's ``pretrained/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_write_text, load_checkpoint
from .config import dump_config, load_config
from .model_inputs import write_model_inputs

__all__ = ["pretrained_root", "list_pretrained", "export_pretrained", "evaluate_pretrained"]


def pretrained_root() -> Path:
    """``$SPARSEGT_PRETRAINED`` if set, else ``pretrained/`` at the repository root."""
    env = os.environ.get("SPARSEGT_PRETRAINED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "pretrained"


def list_pretrained(root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{name: card}`` of every pretrained model under ``root``."""
    root = Path(root) if root is not None else pretrained_root()
    if not root.is_dir():
        return {}
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/card.json"))}


def export_pretrained(run_dir: str | Path, name: str, *, published: float | None = None, source: str = "",
                      status: str = "final", root: str | Path | None = None, checkpoint: str = "best.pt") -> Path:
    """Write ``pretrained/name/`` from a run's ``checkpoint`` (its best epoch by default) and summary.

    ``published``: the paper's number for the row (same metric and scale as the run's, e.g. 0.86685);
    ``source``: where it comes from; ``status``: ``"final"`` or e.g. ``"interim: epoch 20 of 100"``.
    ``checkpoint="best_moving.pt"``: the epoch GraphGPS's protocol selects (`train.val_with_moving_stats`),
    with its moving-average BatchNorm statistics and the scores measured with them.
    """
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / checkpoint, required=("model",))
    config = load_config(run_dir / "config.yaml")
    # the record of the checkpoint's epoch in metrics.jsonl (a run still training has no summary.json yet)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    record = next((r for r in records if r["epoch"] == state.get("epoch")), {})
    scores = "_moving_stats" if checkpoint == "best_moving.pt" else ""
    folder = (Path(root) if root is not None else pretrained_root()) / name
    folder.mkdir(parents=True, exist_ok=True)
    dump_config(config, folder / "config.yaml")
    from .run import model_inputs_of_run

    write_model_inputs(folder, model_inputs_of_run(run_dir, config))
    torch.save({k: v.detach().cpu() for k, v in state["model"].items()}, folder / "model.pt")
    from ..data.catalog import get_card

    card = {
        "name": name,
        "status": status,
        "metric": get_card(config.data.name).metric,
        "test_metric": record.get("test_metric" + scores, state.get("test_metric")),
        "test_metric_per_batch": record.get("test_metric_per_batch" + scores),
        "val_metric": record.get("val_metric" + scores),
        "epoch": None if state.get("epoch") is None else int(state["epoch"]) + 1,
        "published": published,
        "published_source": source,
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
    }
    atomic_write_text(folder / "card.json", json.dumps(card, indent=2) + "\n")
    return folder


def evaluate_pretrained(name: str, *, limit: int | None = None, root: str | Path | None = None,
                        data_root: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Score pretrained model ``name`` on its regenerated test split (the first ``limit`` graphs if given).

    Returns the card with ``"measured"`` added: ``{"metric", "metric_per_batch", "loss", "graphs"}``
    (``metric_per_batch`` over batches of ``data.eval_batch_size`` or ``data.batch_size`` graphs in split
    order, the Benchmarking-GNNs convention).
    """
    from ..graph import Graph
    from .losses import make_loss
    from .metrics import compute_metric
    from .prediction import predict_batches, score_batches
    from .run import build_dataset, build_model

    base = Path(root) if root is not None else pretrained_root()
    folder = base / name
    if not (folder / "card.json").exists():
        known = ", ".join(list_pretrained(base)) or "none"
        raise ValueError(f"no pretrained model {name!r} in {base} (available: {known})")
    card = json.loads((folder / "card.json").read_text())
    config = load_config(folder / "config.yaml")
    if data_root is not None:
        config.data.root = data_root
    elif config.data.root and not Path(config.data.root).is_absolute() and not Path(config.data.root).exists():
        config.data.root = None  # a run's relative cache folder: regenerate into the default cache instead
    dataset = build_dataset(config, splits=("test",))
    graphs = dataset.test[:limit] if limit is not None else dataset.test
    model = build_model(config, dataset)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model = model.to(device)
    size = config.data.eval_batch_size or config.data.batch_size
    batches = (Graph.batch(graphs[i:i + size]) for i in range(0, len(graphs), size))
    _, loss_fn = make_loss(dataset.task, config.train.loss, config.train.class_weighted_loss)
    predictions, targets, loss_sum = predict_batches(model, batches, dataset.task, torch.device(device), loss_fn)
    scores = score_batches(predictions, targets, loss_sum, dataset.task.metric, compute_metric)
    return {**card, "measured": {**scores, "graphs": len(graphs)}}
