"""Dataset statistics and the tables behind ``sparsegt datasets`` / ``sparsegt datasets show NAME``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .cache import LazyGraphs
from .catalog import get_card, list_datasets, load_dataset
from .dataset import Dataset

__all__ = ["describe", "dataset_rows", "print_dataset_table", "print_dataset_stats"]


def _distribution(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {"min": int(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": int(values.max())}


def _labels(dataset: Dataset, split: str) -> torch.Tensor:
    graphs = dataset.splits[split]
    if not graphs:
        return torch.zeros(0)
    if isinstance(graphs, LazyGraphs):  # read the concatenated tensor, build no graph
        return graphs.node_tensor("y") if dataset.task.level == "node" else graphs.graph_tensor("y")
    key = "node_data" if dataset.task.level == "node" else "graph_data"
    return torch.cat([getattr(g, key)["y"] for g in graphs])


def _counts(graphs) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(graphs, LazyGraphs):
        return graphs.node_counts(), graphs.edge_counts()
    return np.array([g.num_nodes for g in graphs]), np.array([g.num_edges for g in graphs])


def describe(dataset: Dataset) -> dict[str, Any]:
    """Statistics of every split: graphs, node and edge count distributions, label balance.

    Returns ``{"name", "task", "metric", "splits": {split: {"graphs", "nodes": {min, median, mean,
    max}, "edges": {...}, "labels": ...}}}``. ``labels`` is ``{class: fraction}`` for classification
    (over nodes for node tasks, graphs for graph tasks) or ``{target: {mean, std, min, max}}`` for
    regression. Edges count both directions of an undirected edge.
    """
    out: dict[str, Any] = {"name": dataset.name, "task": f"{dataset.task.level} {dataset.task.kind}",
                           "metric": dataset.task.metric, "splits": {}}
    for split, graphs in dataset.splits.items():
        nodes, edges = _counts(graphs)
        y = _labels(dataset, split)
        if dataset.task.kind == "regression":
            y = y.double().reshape(y.shape[0], -1) if y.numel() else y.double().reshape(0, 1)
            names = dataset.task.target_names or tuple(f"y{t}" for t in range(y.shape[1]))
            labels = {names[t] if t < len(names) else f"y{t}": {
                "mean": float(y[:, t].mean()) if y.shape[0] else float("nan"),
                "std": float(y[:, t].std()) if y.shape[0] > 1 else float("nan"),
                "min": float(y[:, t].min()) if y.shape[0] else float("nan"),
                "max": float(y[:, t].max()) if y.shape[0] else float("nan")} for t in range(y.shape[1])}
        else:
            counts = torch.bincount(y.reshape(-1).long()) if y.numel() else torch.zeros(0)
            total = max(int(counts.sum()), 1)
            labels = {int(c): float(counts[c]) / total for c in range(len(counts))}
        out["splits"][split] = {"graphs": len(graphs), "nodes": _distribution(nodes),
                                "edges": _distribution(edges), "labels": labels}
    return out


def dataset_rows() -> list[dict[str, str]]:
    """One row per dataset card: name, task, size, metric, source, licence, variants, extra."""
    return [{"name": c.name, "task": c.task, "size": c.size, "metric": c.metric, "source": c.source,
             "licence": c.licence, "variants": ", ".join(c.variants), "extra": c.extra}
            for c in list_datasets()]


def _console(console: Any) -> Any:
    if console is None:
        from rich.console import Console

        console = Console()
    return console


def print_dataset_table(console: Any = None) -> None:
    """Print every dataset (task, size, metric, source, licence) as a rich table."""
    from rich.table import Table

    table = Table(title="sparsegt datasets (all offline)", show_lines=True)
    for column in ("name", "task", "size", "metric", "source", "licence"):
        table.add_column(column, overflow="fold")
    for row in dataset_rows():
        name = row["name"] + (f"\n[dim]{row['variants']}[/dim]" if row["variants"] else "")
        if row["extra"]:
            name += f"\n[dim]needs sparsegt[{row['extra']}][/dim]"
        table.add_row(name, row["task"], row["size"], row["metric"], row["source"], row["licence"])
    _console(console).print(table)


def print_dataset_stats(name: str, console: Any = None, **load_options: Any) -> dict[str, Any]:
    """Load ``name`` (building and caching it if needed), print its card and statistics; return them."""
    from rich.table import Table

    console = _console(console)
    dataset = load_dataset(name, **load_options)
    stats = describe(dataset)
    card = get_card(name)
    console.print(f"[bold]{dataset.name}[/bold]: {card.description}")
    console.print(f"task: {card.task}; metric: {card.metric}; source: {card.source}; licence: {card.licence}")
    table = Table(title=f"{dataset.name} statistics")
    for column in ("split", "graphs", "nodes min/median/mean/max", "edges min/median/mean/max", "labels"):
        table.add_column(column, overflow="fold")
    for split, s in stats["splits"].items():
        fmt = lambda d: f"{d['min']} / {d['median']:g} / {d['mean']:.1f} / {d['max']}"
        if dataset.task.kind == "regression":
            labels = "; ".join(f"{k}: {v['mean']:.3g} ± {v['std']:.3g} [{v['min']:.3g}, {v['max']:.3g}]"
                               for k, v in s["labels"].items())
        else:
            labels = ", ".join(f"{c}: {f:.1%}" for c, f in s["labels"].items())
        table.add_row(split, str(s["graphs"]), fmt(s["nodes"]), fmt(s["edges"]), labels)
    console.print(table)
    return stats
