"""The main job: ``sparsegt train`` with no arguments (``make demo``).

Trains a small GraphGPS (GatedGCN + full attention over each graph, LapPE) on pattern-small and, in the
same run and with the same budget, the same model without attention (a GatedGCN with the same encoders,
head and optimiser), then prints both next to the published full-PATTERN numbers of GraphGPS and GatedGCN.
The two models train at the same time, one process and one thread each (on two cores this is about twice
as fast as one model after the other with two threads: the layers are many small operations).

Honest by construction: the published numbers are for the full dataset (10,000 training graphs),
~500k parameters and 100 epochs; the demo uses 1,000 training graphs, a small model and a couple of
epochs so that it finishes in minutes on two CPU cores. The table says so.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .checkpoint import atomic_write_text
from .config import RunConfig
from .presets import demo_config
from .progress import format_metric
from .report import format_seconds
from .run import build_dataset, make_run_dir, train_run

__all__ = ["run_demo", "PUBLISHED_PATTERN"]

# ANCHORS §3 (GT / GPS papers as tabulated in Luo et al., NeurIPS 2024): PATTERN weighted accuracy, %.
PUBLISHED_PATTERN = {
    "GraphGPS": 86.685,
    "GatedGCN": 85.568,
    "GT": 84.808,
    "GRIT": 87.196,
    "Exphormer": 86.742,
}

GPS_LABEL, BASELINE_LABEL = "GraphGPS (GatedGCN + attention)", "GatedGCN (no attention)"


def _train_in_child(config: RunConfig, run_dir: str, prefix: str) -> dict[str, Any]:
    return train_run(config, run_dir=run_dir, quiet=True, log_prefix=prefix).summary


def _train_both(configs: dict[str, RunConfig], parent: Path, console: Console, quiet: bool) -> dict[str, dict]:
    if (os.cpu_count() or 1) < 2:
        out = {}
        for label, config in configs.items():
            console.rule(label)
            out[label] = train_run(config, quiet=quiet, console=console, run_dir=parent / config.name).summary
        return out
    for config in configs.values():
        config.train.threads = 1
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked OpenMP/numba state
    with context.Pool(len(configs)) as pool:
        pending = {
            label: pool.apply_async(_train_in_child, (config, str(parent / config.name), f"[{config.name}] "))
            for label, config in configs.items()
        }
        return {label: job.get() for label, job in pending.items()}


def run_demo(*, quiet: bool = False, console: Console | None = None, out_dir: str = "runs") -> dict[str, Any]:
    """Train the demo's two models and print the comparison table; returns the comparison summary."""
    console = console or Console()
    start = time.monotonic()
    configs = {GPS_LABEL: demo_config("full"), BASELINE_LABEL: demo_config("none")}
    gps = configs[GPS_LABEL]
    for config in configs.values():
        config.out_dir = out_dir
    console.print(
        f"[bold]sparsegt demo[/]: GraphGPS vs. the same model without attention on {gps.data.name}, "
        f"{gps.train.epochs} epochs each, trained side by side"
    )
    dataset = build_dataset(gps, progress=not quiet)  # generates and caches data and LapPE for both runs
    parent = make_run_dir(out_dir, "demo")
    results = _train_both(configs, parent, console, quiet)
    total = time.monotonic() - start
    published = {GPS_LABEL: PUBLISHED_PATTERN["GraphGPS"], BASELINE_LABEL: PUBLISHED_PATTERN["GatedGCN"]}
    table = Table(
        title=f"PATTERN: test weighted accuracy (%) at the best validation epoch — {dataset.name}, "
        f"{len(dataset.train):,} training graphs",
        title_justify="left",
    )
    for column in (
        "model",
        "params",
        "epochs",
        "train time",
        "val",
        "test (this run)",
        "published (full PATTERN)",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, s in results.items():
        table.add_row(
            label,
            f"{s['num_parameters']:,}",
            f"{s['epochs_run']}/{s['epochs_planned']}" + (" (time limit)" if s["status"] == "time_limit" else ""),
            format_seconds(s["train_time_s"]),
            format_metric(s["metric"], s["val_metric"]),
            format_metric(s["metric"], s["test_metric"]),
            f"{published[label]:.3f}",
        )
    console.print(table)
    gps_s, base_s = results[GPS_LABEL], results[BASELINE_LABEL]
    gain = 100 * (gps_s["test_metric"] - base_s["test_metric"])
    console.print(
        f"Attention {'adds' if gain >= 0 else 'costs'} {abs(gain):.2f} points here (published, full data: "
        f"{PUBLISHED_PATTERN['GraphGPS'] - PUBLISHED_PATTERN['GatedGCN']:+.2f}). The published numbers use "
        f"10,000 training graphs, ~500k parameters and 100 epochs; this demo {len(dataset.train):,} graphs, "
        f"{gps_s['num_parameters'] // 1000}k parameters and {gps.train.epochs} epochs. "
        f"Total time {format_seconds(total)}.",
        highlight=False,
    )
    console.print(f"runs in {parent}", highlight=False)
    summary = {"dataset": dataset.name, "runs": results, "published": published, "total_time_s": total}
    atomic_write_text(Path(parent) / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
