"""`sparsegt predict`: a trained model's predictions on new graphs, as a table written to CSV or Parquet.

One row per graph (graph-level tasks) or per node (node-level: the graph's id and the node's index), with:

- multiclass: ``prob_0 .. prob_{C-1}`` (softmax) and ``predicted`` (the most probable class);
- binary: ``prob_NAME`` per target (sigmoid; NAME the dataset's target name, or its index) and, with one
  target, ``predicted`` (0/1 at probability 0.5);
- regression: one column per target, named as in the dataset (``gap``, ``logS``, ...) or ``value``.

The model runs in eval mode on batches built exactly as ``sparsegt eval`` builds them (`Graph.batch` over
``data.eval_batch_size`` graphs, `sparsegt.train.trainer.predict_batches`), after `prepare_graphs` computed
the training encodings. Parquet needs pyarrow (not a dependency of sparsegt); CSV needs nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.spec import TaskSpec
from ..graph import Graph
from .prediction import predict_batches
from .trained import TrainedModel, prepare_graphs

__all__ = ["PredictionTable", "predict", "model_outputs", "output_columns", "write_predictions"]


@dataclass
class PredictionTable:
    """Column names and rows (``rows[i][j]`` is the value of ``columns[j]``)."""

    columns: list[str]
    rows: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        j = self.columns.index(name)
        return [row[j] for row in self.rows]


def model_outputs(trained: TrainedModel, graphs: Sequence[Graph], batch_size: int | None = None) -> Tensor:
    """The model's raw outputs (logits / values), [graphs or nodes, num_outputs], in input order."""
    size = batch_size or trained.batch_size
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    graphs = list(graphs)
    batches = (Graph.batch(graphs[i:i + size]) for i in range(0, len(graphs), size))
    predictions, _, _ = predict_batches(trained.model, batches, trained.inputs.task, trained.device, labelled=False)
    return torch.cat(predictions)


def output_columns(task: TaskSpec) -> list[str]:
    """The value columns of a task's predictions (see the module docstring)."""
    names = list(task.target_names) if len(task.target_names) == task.num_outputs else \
        [str(t) for t in range(task.num_outputs)]
    if task.kind == "multiclass":
        return [f"prob_{c}" for c in range(task.num_outputs)] + ["predicted"]
    if task.kind == "binary":
        return [f"prob_{n}" for n in names] + (["predicted"] if task.num_outputs == 1 else [])
    return names if task.target_names else (["value"] if task.num_outputs == 1 else [f"value_{n}" for n in names])


def _values(outputs: Tensor, task: TaskSpec) -> list[list[Any]]:
    if task.kind == "multiclass":
        probabilities = torch.softmax(outputs.double(), dim=-1)
        predicted = probabilities.argmax(dim=-1)
        return [[*p, int(c)] for p, c in zip(probabilities.tolist(), predicted.tolist(), strict=True)]
    if task.kind == "binary":
        probabilities = torch.sigmoid(outputs.double()).reshape(outputs.shape[0], -1)
        if task.num_outputs == 1:
            return [[p[0], int(p[0] > 0.5)] for p in probabilities.tolist()]
        return probabilities.tolist()
    return outputs.double().reshape(outputs.shape[0], -1).tolist()


def predict(trained: TrainedModel, ids: Sequence[str], graphs: Sequence[Graph], *, source: str = "input",
            batch_size: int | None = None) -> PredictionTable:
    """Predictions of ``trained`` for ``graphs`` (``ids[i]`` names graph i in the table)."""
    if len(ids) != len(graphs):
        raise ValueError(f"{len(ids)} ids for {len(graphs)} graphs")
    prepared = prepare_graphs(trained, graphs, source)
    task = trained.inputs.task
    values = _values(model_outputs(trained, prepared, batch_size), task)
    if task.level == "node":
        keys = [[graph_id, node] for graph_id, g in zip(ids, prepared, strict=True) for node in range(g.num_nodes)]
        columns = ["id", "node"]
    else:
        keys = [[graph_id] for graph_id in ids]
        columns = ["id"]
    return PredictionTable(columns + output_columns(task), [k + v for k, v in zip(keys, values, strict=True)])


def write_predictions(table: PredictionTable, path: str | Path) -> Path:
    """Write ``table`` to ``path``: Parquet when it ends in ``.parquet`` (needs pyarrow), else CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("writing Parquet needs pyarrow (pip install pyarrow); or write CSV: -o "
                              f"{path.with_suffix('.csv')}") from err
        data = {name: [row[j] for row in table.rows] for j, name in enumerate(table.columns)}
        pq.write_table(pa.table(data), path)
        return path
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    return path
