"""User data -> `Dataset`: a folder on disk, PyG ``Data`` lists, a PyG ``InMemoryDataset``, networkx graphs.

A folder holds many graphs split by graph (below), or ONE graph split by nodes: ``graph.npz`` (``edge_index``,
``y``, ``split`` or ``train_mask``/``val_mask``/``test_mask``, optional ``x``, ``edge_attr``), or ``nodes.csv``
(``node,split[,features][,y]``) + ``edges.csv`` (``source,target[,features]``) without graphs.csv; the format
and its checks are in `sparsegt.data.user_graph_files`, the dataset it makes in `sparsegt.data.node_splits`.
``sparsegt train data.name=folder data.root=PATH`` trains on either.

Many-graph folder format (``load_folder(path)``), either ``graphs.npz`` or three CSV files:

``graphs.npz`` (plain arrays, no pickles)::

    num_nodes   [G] int       nodes per graph
    num_edges   [G] int       edges per graph (an undirected edge is stored twice: u->v and v->u)
    edge_index  [2, E] int    per-graph (local) node ids: row 0 source, row 1 target; graph by graph
    split       [G] int       0 = train, 1 = val, 2 = test
    x           [N, F]        optional node features, graph by graph (integers = categorical)
    edge_attr   [E, Fe]       optional edge features, in edge_index order
    node_y      [N] or [N, T] node labels (integers = classes, floats = regression targets), or
    graph_y     [G] or [G, T] graph labels

CSV (one header line each; ``graph`` ids are 0..G-1)::

    graphs.csv  graph,split[,y | y0,y1,...]     split is train / val / test; optional graph labels
    nodes.csv   graph,node[,feature columns][,y] optional; nodes 0..n-1 of each graph, node labels in y
    edges.csv   graph,source,target[,feature columns]

An optional ``meta.json`` may set ``name``, ``metric``, ``task_kind`` (multiclass / binary /
regression), ``num_outputs``. Without it integer labels give classification (binary when two classes,
metric accuracy) and float labels regression (metric mae).

What is checked (`sparsegt.data.user_files` reads the files): errors name the file, the line (CSV) or row (npz),
the graph and the field. Ids are integers (``1.7`` is an error, never truncated); class and category ids are
>= 0 and dense (1 + the largest at most 65,536 or twice the distinct ids); without ``nodes.csv`` a graph's node
count (1 + its largest id) follows `sparsegt.graph.INFERRED_NODES_LIMIT`; a graph has at least one node; labels
come from one level: a ``y`` in both graphs.csv and nodes.csv (or graph_y and node_y) is an error, not a
silent choice. CSV files may start with a UTF-8 byte-order mark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..graph import Graph
from .dataset import Dataset, DatasetCard
from .node_splits import one_graph_dataset
from .spec import HIGHER_IS_BETTER, FeatureSpec, TaskSpec
from .user_files import SPLIT_NAMES, id_problem, read_csv_folder, read_npz
from .user_graph_files import is_one_graph_folder, read_one_graph

__all__ = ["load_folder", "load_user_folder", "save_folder", "from_graphs", "from_pyg", "pyg_graphs", "from_networkx",
           "FOLDER_CARD"]

FOLDER_CARD = DatasetCard(
    name="folder", task="the user's: node or graph level, classification or regression (inferred, or meta.json)",
    size="as the folder's", metric="accuracy",  # for classes; mae for regression, or meta.json's "metric"
    source="a folder of the user's files: data.root=PATH (see sparsegt.data.user)", licence="as the user's",
    description="graphs.npz / graphs.csv + edges.csv [+ nodes.csv] (many graphs), or graph.npz / nodes.csv + "
                "edges.csv (one graph split by nodes)")

def _row_graph(graphs: Sequence[Graph], row: int, level: str) -> int:
    """The graph that holds ``row`` of the concatenated node (``level="node"``) or edge tensors."""
    sizes = [g.num_nodes if level == "node" else g.num_edges for g in graphs]
    return int(np.searchsorted(np.cumsum(sizes), row, side="right"))


def _check_ids(name: str, graphs: Sequence[Graph], values: torch.Tensor, field: str, level: str, what: str) -> None:
    found = id_problem(values.numpy(), what)
    if found:
        row = found[0] // max(1, int(np.prod(values.shape[1:])))
        graph = row if level == "graph" else _row_graph(graphs, row, level)
        raise ValueError(f"{name}: graph {graph}, field '{field}': {found[1]}")


def _feature_spec(values: torch.Tensor | None) -> FeatureSpec:
    if values is None:
        return FeatureSpec()
    if values.is_floating_point():
        return FeatureSpec("continuous", dim=int(values.shape[1]))
    return FeatureSpec("categorical", tuple(int(c) + 1 for c in values.max(dim=0).values.tolist()))


def _infer_task(graphs: Sequence[Graph], meta: dict, name: str) -> TaskSpec:
    level = "node" if "y" in graphs[0].node_data else "graph"
    labels = torch.cat([g.node_data["y"] if level == "node" else g.graph_data["y"] for g in graphs])
    if not labels.is_floating_point() and meta.get("task_kind") != "regression":
        _check_ids(name, graphs, labels, "y", level, "class id")
    if labels.is_floating_point():
        kind, outputs = "regression", (1 if labels.dim() == 1 else int(labels.shape[1]))
        metric = "mae"
    else:
        classes = int(labels.max()) + 1
        kind, outputs = ("binary", 1) if classes <= 2 else ("multiclass", classes)
        metric = "accuracy"
    kind = meta.get("task_kind", kind)
    metric = meta.get("metric", metric)
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"meta.json: metric {metric!r} is unknown; choose from {sorted(HIGHER_IS_BETTER)}")
    return TaskSpec(level, kind, int(meta.get("num_outputs", outputs)), metric, HIGHER_IS_BETTER[metric])


def from_graphs(graphs: Sequence[Graph], splits: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
                name: str = "user", seed: int = 0, meta: dict | None = None) -> Dataset:
    """A `Dataset` from graphs carrying ``x`` (optional), ``edge_attr`` (optional) and ``y``.

    ``splits``: a split id per graph (0/1/2), or three index lists (train, val, test), or None for a
    seeded random 80/10/10 split.
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError(f"{name}: no graphs")
    for i, g in enumerate(graphs):
        if g.y is None:
            raise ValueError(f"{name}: graph {i} has no label y")
        if g.num_nodes == 0:
            raise ValueError(f"{name}: graph {i} has no nodes; remove it (a graph without nodes has nothing to "
                             "predict from)")
        if "y" in g.node_data and "y" in g.graph_data:
            raise ValueError(f"{name}: graph {i} has node labels and graph labels (node_data['y'] and "
                             "graph_data['y']), but a task has one level: keep one")
        keys = (sorted(g.node_data), sorted(g.edge_data), sorted(g.graph_data))
        first = (sorted(graphs[0].node_data), sorted(graphs[0].edge_data), sorted(graphs[0].graph_data))
        if keys != first:
            raise ValueError(f"{name}: graph {i} carries fields {keys} but graph 0 carries {first}")
    if splits is None:
        order = np.random.default_rng(seed).permutation(len(graphs))
        n_train, n_val = int(0.8 * len(graphs)), int(0.1 * len(graphs))
        index_lists = [order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]]
    elif len(splits) == 3 and not isinstance(splits[0], (int, np.integer)):
        index_lists = [np.asarray(s, dtype=np.int64) for s in splits]
    else:
        split_of = np.asarray(splits)
        if split_of.shape != (len(graphs),) or not np.isin(split_of, (0, 1, 2)).all():
            raise ValueError(f"{name}: splits must be one id 0/1/2 per graph ({len(graphs)}) "
                             "or three index lists")
        index_lists = [np.flatnonzero(split_of == s) for s in range(3)]
    for s, idx in zip(SPLIT_NAMES, index_lists, strict=True):
        if idx.size and (idx.min() < 0 or idx.max() >= len(graphs)):
            raise ValueError(f"{name}: {s} indices must lie in 0..{len(graphs) - 1}")
    parts = [[graphs[int(i)] for i in idx] for idx in index_lists]
    meta = meta or {}
    task = _infer_task(graphs, meta, name)
    x = torch.cat([g.x for g in graphs]) if graphs[0].x is not None else None
    edge_attr = torch.cat([g.edge_attr for g in graphs]) if graphs[0].edge_attr is not None else None
    for field, values, level in (("x", x, "node"), ("edge_attr", edge_attr, "edge")):
        if values is not None and not values.is_floating_point():
            _check_ids(name, graphs, values, field, level, "category id")
    card = DatasetCard(name=meta.get("name", name), task=f"{task.level} {task.kind}",
                       size=" / ".join(str(len(p)) for p in parts) + " graphs", metric=task.metric,
                       source=meta.get("source", "user data"), licence=meta.get("licence", "as the user's"),
                       description=meta.get("description", ""))
    return Dataset(card.name, parts[0], parts[1], parts[2], task=task, node_features=_feature_spec(x),
                   edge_features=_feature_spec(edge_attr), card=card, info={"seed": seed})


def load_folder(path: str | Path, *, name: str | None = None) -> Dataset:
    """A `Dataset` from a folder with ``graphs.npz``, or ``graphs.csv`` + ``edges.csv`` (+ ``nodes.csv``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (expected graphs.npz or graphs.csv + edges.csv in it)")
    meta = {}
    if (folder / "meta.json").exists():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8-sig"))
        except ValueError as err:
            raise ValueError(f"meta.json: is not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"meta.json: must be a JSON object of settings, got {type(meta).__name__}")
    if is_one_graph_folder(folder):
        graph, node_split = read_one_graph(folder, meta.get("task_kind"))
        return _one_graph(graph, node_split, name or meta.get("name", folder.name), meta)
    if (folder / "graphs.npz").exists():
        graphs, split = read_npz(folder / "graphs.npz", meta.get("task_kind"))
    elif (folder / "graphs.csv").exists() and (folder / "edges.csv").exists():
        graphs, split = read_csv_folder(folder, meta.get("task_kind"))
    else:
        raise ValueError(f"{folder}: found neither graphs.npz, graphs.csv + edges.csv (many graphs) nor graph.npz, "
                         "nodes.csv + edges.csv (one graph); see sparsegt.data.user for the formats")
    if not np.isin(split, (0, 1, 2)).all():
        bad = int(np.flatnonzero(~np.isin(split, (0, 1, 2)))[0])
        raise ValueError(f"graphs.npz, graph {bad}, field 'split': {int(split[bad])} is not 0 (train), 1 (val) "
                         "or 2 (test)")
    return from_graphs(graphs, split.tolist(), name=name or meta.get("name", folder.name), meta=meta)


def _one_graph(graph: Graph, split: np.ndarray, name: str, meta: dict) -> Dataset:
    task = _infer_task([graph], meta, name)
    card = DatasetCard(name=meta.get("name", name), task=f"node {task.kind}, one graph",
                       size=f"one graph: {graph.num_nodes:,} nodes ({int((split == 0).sum()):,} / "
                            f"{int((split == 1).sum()):,} / {int((split == 2).sum()):,} train / val / test), "
                            f"{graph.num_edges:,} edges", metric=task.metric,
                       source=meta.get("source", "user data"), licence=meta.get("licence", "as the user's"),
                       description=meta.get("description", ""))
    return one_graph_dataset(graph, split, name=card.name, task=task, node_features=_feature_spec(graph.x),
                             edge_features=_feature_spec(graph.edge_attr), card=card)


def load_user_folder(*, root=None, seed: int = 0, progress: bool = False, name: str | None = None) -> Dataset:
    """The catalog's ``folder`` dataset: `load_folder` of ``root`` (``data.root=PATH`` on the command line)."""
    if root is None:
        raise ValueError("data.name=folder reads your own folder: give it with data.root=PATH (see "
                         "sparsegt.data.user for the files it holds)")
    return load_folder(root, name=name)


def save_folder(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` in the ``graphs.npz`` folder format (the inverse of `load_folder`)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    graphs = dataset.train + dataset.val + dataset.test
    split = np.repeat([0, 1, 2], [len(dataset.train), len(dataset.val), len(dataset.test)])
    arrays = {"num_nodes": np.array([g.num_nodes for g in graphs]),
              "num_edges": np.array([g.num_edges for g in graphs]),
              "edge_index": np.concatenate([g.to_edge_index().numpy() for g in graphs], axis=1),
              "split": split}
    if graphs[0].x is not None:
        arrays["x"] = torch.cat([g.x for g in graphs]).numpy()
    if graphs[0].edge_attr is not None:
        arrays["edge_attr"] = torch.cat([g.edge_attr for g in graphs]).numpy()
    level = "node_y" if "y" in graphs[0].node_data else "graph_y"
    arrays[level] = torch.cat([g.y for g in graphs]).numpy()
    np.savez(folder / "graphs.npz", **arrays)
    (folder / "meta.json").write_text(json.dumps({"name": dataset.name, "metric": dataset.task.metric,
                                                  "task_kind": dataset.task.kind,
                                                  "num_outputs": dataset.task.num_outputs}))
    return folder


def from_pyg(data: Any, splits: Sequence[int] | Sequence[Sequence[int]] | None = None, *, name: str = "pyg",
             seed: int = 0, meta: dict | None = None) -> Dataset:
    """A `Dataset` from a list of PyG ``Data`` or a PyG ``InMemoryDataset`` (``splits`` as `from_graphs`)."""
    graphs = pyg_graphs([data[i] for i in range(len(data))], name)
    return from_graphs(graphs, splits, name=name, seed=seed, meta=meta)


def pyg_graphs(items: Sequence[Any], name: str) -> list[Graph]:
    """`Graph.from_pyg` of every PyG ``Data`` in ``items``; an error names ``name`` (a dataset or a file) and
    the graph."""
    graphs = []
    for i, item in enumerate(items):
        if getattr(item, "edge_index", None) is None:
            raise ValueError(f"{name}: graph {i}, field 'edge_index': missing (is this a list of PyG Data?)")
        try:
            graphs.append(Graph.from_pyg(item))
        except ValueError as err:
            raise ValueError(f"{name}: graph {i}: {err}") from err
    return graphs


def from_networkx(graphs: Sequence[Any], labels: Sequence[Any] | None = None, *,
                  node_attrs: Sequence[str] = (), edge_attrs: Sequence[str] = (),
                  node_label: str | None = None,
                  splits: Sequence[int] | Sequence[Sequence[int]] | None = None, name: str = "networkx",
                  seed: int = 0, meta: dict | None = None) -> Dataset:
    """A `Dataset` from networkx graphs: graph labels in ``labels`` or a node attribute ``node_label``.

    ``node_attrs`` / ``edge_attrs`` name the attributes stacked into ``x`` / ``edge_attr`` (floats).
    """
    if (labels is None) == (node_label is None):
        raise ValueError(f"{name}: give exactly one of labels (one per graph) "
                         "or node_label (a node attribute)")
    if labels is not None and len(labels) != len(graphs):
        raise ValueError(f"{name}: {len(labels)} labels for {len(graphs)} graphs")
    out = []
    for i, nx_graph in enumerate(graphs):
        try:
            g = Graph.from_networkx(nx_graph, node_attrs, edge_attrs)
            if node_label is not None:
                y = torch.tensor([nx_graph.nodes[n][node_label] for n in nx_graph.nodes])
                g.node_data["y"] = y
            else:
                y = torch.as_tensor(labels[i])
                g.graph_data["y"] = y.reshape(1) if not y.is_floating_point() else y.reshape(1, -1)
        except KeyError as err:
            raise ValueError(f"{name}: graph {i}, field {err}: missing on a node or edge") from err
        out.append(g)
    return from_graphs(out, splits, name=name, seed=seed, meta=meta)
