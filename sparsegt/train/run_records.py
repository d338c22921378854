"""What a run directory says about itself, read back: its summary, its per-epoch history, and the per-epoch
table `sparsegt runs RUN --epochs` prints (as a terminal table or as Markdown for a results page).

A run directory holds ``summary.json`` (written when the run stops) and ``metrics.jsonl`` (one record per
evaluated epoch, written as the run goes), so a run in progress is read from its history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .progress import format_metric

__all__ = ["find_runs", "read_history", "read_summary", "epoch_rows", "print_epoch_table", "markdown_table"]


def find_runs(root: str | Path) -> list[Path]:
    """The run directories under ``root`` (a folder holding ``metrics.jsonl``), oldest first by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; pass a run directory or the folder holding runs (default: runs)")
    if (root / "metrics.jsonl").exists():
        return [root]
    return sorted(p.parent for p in root.glob("*/metrics.jsonl"))


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (a torn last line, from a run killed mid-write, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """``summary.json`` completed from the history: a run still going (or killed) shows its progress."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    history = read_history(run_dir)
    summary.setdefault("name", run_dir.name)
    summary.setdefault("run_dir", str(run_dir))
    if "metric" not in summary:  # no summary yet: the metric the run's dataset is scored with
        metric = _metric_of_config(run_dir / "config.yaml")
        if metric is not None:
            summary["metric"] = metric
    if history:
        last = history[-1]
        written = summary.get("epochs_run", 0)
        if last["epoch"] + 1 > written:  # history newer than the summary: the run went on after writing it
            best = [r for r in history if r.get("best")]
            summary.update(status="running or stopped without a summary" if written == 0 else "running",
                           epochs_run=last["epoch"] + 1, train_time_s=last.get("elapsed_s"))
            if best:
                summary.update(best_epoch=best[-1]["epoch"] + 1, val_metric=best[-1]["val_metric"],
                               test_metric=best[-1].get("test_metric"),
                               test_metric_per_batch=best[-1].get("test_metric_per_batch"))
    return summary


def _metric_of_config(path: Path) -> str | None:
    """The metric of the dataset a run's ``config.yaml`` names (None: no config, or a dataset not in the
    catalog)."""
    if not path.exists():
        return None
    from ..data.catalog import get_card
    from .config import load_config

    try:
        return get_card(load_config(path).data.name).metric
    except ValueError:
        return None


def epoch_rows(history: list[dict[str, Any]], metric: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-epoch table: epoch (1-based), lr, train loss and metric, validation (and the
    moving-average BatchNorm one where recorded), test at the epochs where validation improved, minutes."""
    moving = any(r.get("val_metric_moving_stats") is not None for r in history)
    moving_test = any(r.get("test_metric_moving_stats") is not None for r in history)
    header = ["epoch", "lr", "train loss", "train", "val"] + (["val (moving-average BN)"] if moving else [])
    header += ["test at val gains (whole / per batch)"]
    header += ["test at moving-average val gains (whole / per batch)"] if moving_test else []
    header += ["epoch min"]
    rows = []
    for r in history:
        val = format_metric(metric, r.get("val_metric"))
        row = [str(r["epoch"] + 1), f"{r['lr']:.2e}", f"{r['train_loss']:.4f}",
               format_metric(metric, r.get("train_metric")), val + (" **best**" if r.get("best") else "")]
        if moving:
            row.append(format_metric(metric, r.get("val_metric_moving_stats")))
        row.append(_test_cell(metric, r, ""))
        if moving_test:
            row.append(_test_cell(metric, r, "_moving_stats"))
        minutes = r.get("epoch_time_s")
        row.append("-" if minutes is None else f"{minutes / 60:.1f}")
        rows.append(row)
    return header, rows


def _test_cell(metric: str, record: dict[str, Any], suffix: str) -> str:
    """"whole / per batch" test metric of an epoch record (``suffix`` "_moving_stats": GraphGPS's), or "-"."""
    if record.get("test_metric" + suffix) is None:
        return "-"
    per_batch = format_metric(metric, record.get("test_metric_per_batch" + suffix))
    return f"{format_metric(metric, record['test_metric' + suffix])} / {per_batch}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_epoch_table(history: list[dict[str, Any]], metric: str, console: Console, title: str = "") -> None:
    header, rows = epoch_rows(history, metric)
    table = Table(title=title or None, title_justify="left")
    for name in header:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*(cell.replace(" **best**", " best") for cell in row))
    console.print(table)
