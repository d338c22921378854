"""``curves.png``: training loss and the task metric (train / val / test) per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_curves"]


def plot_curves(history: list[dict[str, Any]], metric: str, path: str | Path, title: str = "") -> None:
    """Two panels from ``metrics.jsonl`` records: loss per epoch, and the metric per epoch."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend and open figures stay as they are

    epochs = [r["epoch"] + 1 for r in history]
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker=".", label="train")
    val_loss = [(r["epoch"] + 1, r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val_loss:
        ax_loss.plot(*zip(*val_loss, strict=False), marker=".", label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    scale = 100.0 if metric in ("accuracy", "weighted_accuracy") else 1.0
    for key, label, style in (
        ("train_metric", "train", "-"),
        ("val_metric", "val", "-"),
        ("val_metric_moving_stats", "val, moving-average BatchNorm", "--"),
        ("test_metric", "test (at val gains)", ":"),
        ("test_metric_moving_stats", "test, moving-average BatchNorm (at its val gains)", ":"),
    ):
        points = [(r["epoch"] + 1, scale * r[key]) for r in history if r.get(key) is not None]
        if points:
            ax_metric.plot(*zip(*points, strict=False), marker="o" if key.startswith("test") else ".",
                           linestyle=style, label=label)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(metric + (" (%)" if scale != 1.0 else ""))
    ax_metric.legend(fontsize="small", loc="lower right", framealpha=0.6)
    ax_metric.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
