"""``confusion.png`` (+ ``.json``, ``.csv``): per-class confusion of a classification run's best model.

At the end of a classification run the model of the best validation epoch (``best.pt``) predicts the test
split (validation when there is no test split), and the counts ``matrix[true, predicted]`` are drawn next to
``curves.png`` — one cell per pair of classes, shaded by the fraction of the true class's items (row), with the
count written in it — and saved as JSON and CSV. Items are nodes for node-level tasks, graphs for graph-level
ones. Binary tasks with one output have two classes (logit > 0 is class 1); multi-target binary tasks and
regressions have no confusion matrix.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.spec import TaskSpec
from ..graph import Graph
from .checkpoint import atomic_write_text, load_checkpoint, load_model_weights
from .prediction import predict_batches

__all__ = ["num_classes", "predicted_classes", "confusion_matrix", "plot_confusion", "write_confusion"]


def num_classes(task: TaskSpec) -> int | None:
    """Classes of a classification task (2 for one-output binary), None when it has no confusion matrix."""
    if task.kind == "multiclass":
        return task.num_outputs
    if task.kind == "binary" and task.num_outputs == 1:
        return 2
    return None


def predicted_classes(prediction: Tensor, task: TaskSpec) -> Tensor:
    """[items] class ids from [items, C] logits (argmax) or [items, 1] binary logits (> 0)."""
    if task.kind == "binary":
        return (prediction.reshape(-1) > 0).long()
    return prediction.argmax(dim=-1)


def confusion_matrix(prediction: Tensor, target: Tensor, task: TaskSpec) -> Tensor:
    """[C, C] int64 counts, ``matrix[true, predicted]``, of model outputs ``prediction`` against ``target``."""
    classes = num_classes(task)
    if classes is None:
        raise ValueError(f"a {task.kind} task with {task.num_outputs} output(s) has no confusion matrix")
    true = target.reshape(-1).long()
    flat = true * classes + predicted_classes(prediction, task)
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def plot_confusion(matrix: Tensor, path: str | Path, *, class_names: Sequence[str] | None = None,
                   title: str = "") -> Path:
    """Draw ``matrix[true, predicted]``: cells shaded by the row fraction, counts written in (up to 30 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    counts = matrix.double()
    fractions = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(3.5 + 0.45 * classes, 14)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if classes <= 30:
        for t in range(classes):
            for p in range(classes):
                ax.text(p, t, f"{int(matrix[t, p])}", ha="center", va="center", fontsize=8,
                        color="white" if fractions[t, p] > 0.5 else "black")
    ax.set_xticks(range(classes), names, rotation=45 if classes > 8 else 0)
    ax.set_yticks(range(classes), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_confusion(run_dir: str | Path, model: nn.Module, task: TaskSpec, splits: dict[str, Sequence[Graph]],
                    batch_size: int, device: torch.device, title: str = "") -> dict[str, Any] | None:
    """The confusion of ``best.pt``'s weights (loaded into a copy of ``model``) on the test split (or val):
    writes ``confusion.png``, ``confusion.json`` and ``confusion.csv`` in ``run_dir`` and returns the JSON
    record; None for tasks without classes or runs without a best checkpoint."""
    run_dir = Path(run_dir)
    if num_classes(task) is None or not (run_dir / "best.pt").exists():
        return None
    split = "test" if len(splits.get("test") or ()) else "val"
    graphs = list(splits[split])
    state = load_checkpoint(run_dir / "best.pt", map_location=device, required=("model",))
    best = copy.deepcopy(model)
    load_model_weights(best, state["model"], str(run_dir / "best.pt"))
    batches = (Graph.batch(graphs[i:i + batch_size]) for i in range(0, len(graphs), batch_size))
    predictions, targets, _ = predict_batches(best, batches, task, device)
    matrix = confusion_matrix(torch.cat(predictions), torch.cat(targets), task)
    epoch = state.get("epoch")
    record = {
        "split": split,
        "best_epoch": None if epoch is None else int(epoch) + 1,
        "items": "nodes" if task.level == "node" else "graphs",
        "classes": [str(c) for c in range(matrix.shape[0])],
        "matrix": matrix.tolist(),
        "layout": "matrix[true class][predicted class]",
    }
    atomic_write_text(run_dir / "confusion.json", json.dumps(record, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["true \\ predicted", *record["classes"]])
    for name, row in zip(record["classes"], record["matrix"], strict=True):
        writer.writerow([name, *row])
    atomic_write_text(run_dir / "confusion.csv", table.getvalue())
    where = f"{split} split, best epoch {record['best_epoch']}, {int(matrix.sum())} {record['items']}"
    plot_confusion(matrix, run_dir / "confusion.png", title=f"{title}: {where}" if title else where)
    return record
