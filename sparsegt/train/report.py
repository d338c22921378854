"""Result tables printed at the end of a run (rich; plain text when piped)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .progress import format_metric

__all__ = ["print_run_table", "print_seeds_table", "format_seconds"]


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_run_table(summaries: list[dict[str, Any]], console: Console) -> None:
    """One row per run: dataset, status, epochs, best epoch, val and test metric, time, parameters."""
    if not summaries:
        return
    metric = summaries[0]["metric"]
    table = Table(title="result", title_justify="left")
    for name, justify in (
        ("run", "left"),
        ("dataset", "left"),
        ("status", "left"),
        ("epochs", "right"),
        ("best epoch", "right"),
        (f"val {metric}", "right"),
        (f"test {metric}", "right"),
        ("test per batch", "right"),
        ("final test", "right"),
        ("time", "right"),
        ("params", "right"),
    ):
        table.add_column(name, justify=justify)
    for s in summaries:
        table.add_row(
            s.get("name", "-"),
            s.get("dataset", "-"),
            s["status"],
            f"{s['epochs_run']}/{s['epochs_planned']}",
            str(s["best_epoch"] or "-"),
            format_metric(metric, s["val_metric"]),
            format_metric(metric, s["test_metric"]),
            format_metric(metric, s.get("test_metric_per_batch")),
            format_metric(metric, s.get("final_test_metric")),
            format_seconds(s["train_time_s"]),
            f"{s.get('num_parameters', 0):,}",
        )
    console.print(table)
    console.print(f"test {metric}: the whole test split at the best validation epoch (GraphGPS); per batch: the "
                  "mean over evaluation batches in split order (Benchmarking-GNNs, GT); final: the last epoch's "
                  "model (GT)", highlight=False, style="dim")
    for s in summaries:
        line = _moving_stats_line(s, metric)
        if line:
            console.print(line, highlight=False)
    for s in summaries:
        if s.get("run_dir"):
            console.print(f"run directory: {s['run_dir']}", highlight=False)


def _moving_stats_line(summary: dict[str, Any], metric: str) -> str:
    """The evaluation with moving-average BatchNorm statistics (``train.val_with_moving_stats``), where recorded:
    GraphGPS's selection and the final model as GT evaluates it."""
    parts = []
    moving = summary.get("moving_stats")
    if moving:
        test = format_metric(metric, moving["test_metric"])
        parts.append(f"GraphGPS's selection: best epoch {moving['best_epoch']}, val "
                     f"{format_metric(metric, moving['val_metric'])}, test {test} / "
                     f"{format_metric(metric, moving.get('test_metric_per_batch'))} per batch")
    if summary.get("final_test_metric_moving_stats") is not None:
        parts.append(f"final model: test {format_metric(metric, summary['final_test_metric_moving_stats'])} / "
                     f"{format_metric(metric, summary.get('final_test_metric_per_batch_moving_stats'))} per batch")
    if not parts:
        return ""
    return f"{summary.get('name', 'run')}, with moving-average BatchNorm statistics: " + "; ".join(parts)


def _mean_std_text(metric: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{format_metric(metric, mean)} ± {format_metric(metric, std)}"


def print_seeds_table(summary: dict[str, Any], console: Console) -> None:
    """Per-seed rows and a mean ± std row."""
    metric = summary["metric"]
    table = Table(
        title=f"{summary['name']} on {summary['dataset']}: {len(summary['seeds'])} seeds",
        title_justify="left",
    )
    for name in ("seed", "status", "best epoch", f"val {metric}", f"test {metric}", "time"):
        table.add_column(name, justify="left" if name in ("seed", "status") else "right")
    for seed, s in zip(summary["seeds"], summary["runs"], strict=False):
        table.add_row(
            str(seed),
            s["status"],
            str(s["best_epoch"] or "-"),
            format_metric(metric, s["val_metric"]),
            format_metric(metric, s["test_metric"]),
            format_seconds(s["train_time_s"]),
        )
    table.add_section()
    table.add_row(
        "mean ± std",
        "",
        "",
        _mean_std_text(metric, summary["val_mean"], summary["val_std"]),
        _mean_std_text(metric, summary["test_mean"], summary["test_std"]),
        "",
    )
    console.print(table)
