"""User data -> `Dataset`: a folder on disk, PyG ``Data`` lists, a PyG ``InMemoryDataset``, networkx graphs.

Folder format (``load_folder(path)``), either ``graphs.npz`` or three CSV files:

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
metric accuracy) and float labels regression (metric mae). Errors name the file, graph and field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..graph import Graph
from .dataset import Dataset, DatasetCard
from .spec import HIGHER_IS_BETTER, FeatureSpec, TaskSpec

__all__ = ["load_folder", "save_folder", "from_graphs", "from_pyg", "from_networkx"]

SPLIT_NAMES = ("train", "val", "test")


def _fail(file: str, field: str, message: str, graph: int | None = None) -> ValueError:
    where = f"{file}" + (f", graph {graph}" if graph is not None else "") + f", field '{field}'"
    return ValueError(f"{where}: {message}")


def _feature_spec(values: torch.Tensor | None) -> FeatureSpec:
    if values is None:
        return FeatureSpec()
    if values.is_floating_point():
        return FeatureSpec("continuous", dim=int(values.shape[1]))
    return FeatureSpec("categorical", tuple(int(c) + 1 for c in values.max(dim=0).values.tolist()))


def _infer_task(graphs: Sequence[Graph], meta: dict) -> TaskSpec:
    level = "node" if "y" in graphs[0].node_data else "graph"
    labels = torch.cat([g.node_data["y"] if level == "node" else g.graph_data["y"] for g in graphs])
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
    task = _infer_task(graphs, meta)
    x = torch.cat([g.x for g in graphs]) if graphs[0].x is not None else None
    edge_attr = torch.cat([g.edge_attr for g in graphs]) if graphs[0].edge_attr is not None else None
    card = DatasetCard(name=meta.get("name", name), task=f"{task.level} {task.kind}",
                       size=" / ".join(str(len(p)) for p in parts) + " graphs", metric=task.metric,
                       source=meta.get("source", "user data"), licence=meta.get("licence", "as the user's"),
                       description=meta.get("description", ""))
    return Dataset(card.name, parts[0], parts[1], parts[2], task=task, node_features=_feature_spec(x),
                   edge_features=_feature_spec(edge_attr), card=card, info={"seed": seed})


def _graph(file: str, g: int, n: int, edge_index: np.ndarray, fields: dict[str, np.ndarray],
           edge_fields: tuple[str, str] = ("edge_index[0]", "edge_index[1]"),
           field_files: dict[str, str] | None = None) -> Graph:
    for row, field in enumerate(edge_fields):
        ids = edge_index[row]
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            bad = int(ids.max()) if ids.max() >= n else int(ids.min())
            raise _fail(file, field, f"node id {bad} outside 0..{n - 1} (the graph has {n} nodes)", g)
    node_data = {k[5:]: torch.from_numpy(v) for k, v in fields.items() if k.startswith("node.")}
    graph_data = {k[6:]: torch.from_numpy(v) for k, v in fields.items() if k.startswith("graph.")}
    edge_attr = fields.get("edge_attr")
    for key, value in fields.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            source = (field_files or {}).get(key, file)
            raise _fail(source, key.split(".")[-1], "holds NaN or infinite values", g)
    try:
        return Graph.from_edge_index(torch.from_numpy(edge_index.astype(np.int64)), n,
                                     None if edge_attr is None else torch.from_numpy(edge_attr),
                                     node_data=node_data, graph_data=graph_data)
    except ValueError as err:
        raise ValueError(f"{file}, graph {g}: {err}") from err


def _load_npz(path: Path) -> tuple[list[Graph], np.ndarray]:
    file = path.name
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for field in ("num_nodes", "num_edges", "edge_index", "split"):
        if field not in arrays:
            raise _fail(file, field, "is missing (see sparsegt.data.user for the format)")
    num_nodes, num_edges = arrays["num_nodes"].astype(np.int64), arrays["num_edges"].astype(np.int64)
    G = num_nodes.shape[0]
    edge_index = arrays["edge_index"]
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.shape[1] != num_edges.sum():
        raise _fail(file, "edge_index", f"must have shape [2, sum(num_edges) = {num_edges.sum()}], "
                    f"got {edge_index.shape}")
    if "node_y" not in arrays and "graph_y" not in arrays:
        raise _fail(file, "node_y/graph_y", "no labels: add node_y [N] or graph_y [G]")
    node_off = np.concatenate([[0], np.cumsum(num_nodes)])
    edge_off = np.concatenate([[0], np.cumsum(num_edges)])
    for field, rows, total in (("x", "nodes", node_off[-1]), ("node_y", "nodes", node_off[-1]),
                               ("edge_attr", "edges", edge_off[-1]), ("graph_y", "graphs", G),
                               ("split", "graphs", G)):
        if field in arrays and arrays[field].shape[0] != total:
            raise _fail(file, field, f"has {arrays[field].shape[0]} rows but there are {total} {rows}")
    graphs = []
    for g in range(G):
        n0, n1, e0, e1 = node_off[g], node_off[g + 1], edge_off[g], edge_off[g + 1]
        fields = {}
        if "x" in arrays:
            fields["node.x"] = arrays["x"][n0:n1].reshape(n1 - n0, -1)
        if "node_y" in arrays:
            fields["node.y"] = arrays["node_y"][n0:n1]
        if "graph_y" in arrays:
            y = arrays["graph_y"][g:g + 1]
            fields["graph.y"] = y if np.issubdtype(y.dtype, np.integer) or y.ndim > 1 else y.reshape(1, 1)
        if "edge_attr" in arrays:
            fields["edge_attr"] = arrays["edge_attr"][e0:e1].reshape(e1 - e0, -1)
        graphs.append(_graph(file, g, int(num_nodes[g]), edge_index[:, e0:e1], fields))
    return graphs, arrays["split"]


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise _fail(path.name, "header", "the file is empty")
    header = [h.strip() for h in rows[0]]
    for field in required:
        if field not in header:
            raise _fail(path.name, field, f"column missing; the header is {header}")
    return header, rows[1:]


def _numbers(path: Path, header: list[str], rows: list[list[str]], columns: list[str]) -> np.ndarray:
    """[rows, len(columns)] as int64 if every value is an integer, else float32."""
    index = [header.index(c) for c in columns]
    values = np.empty((len(rows), len(columns)), dtype=object)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise _fail(path.name, "row", f"line {r + 2} has {len(row)} values, the header {len(header)}")
        values[r] = [row[i] for i in index]
    try:
        return values.astype(np.int64)
    except ValueError:
        try:
            return values.astype(np.float32)
        except ValueError as err:
            raise _fail(path.name, ",".join(columns), f"holds a value that is not a number ({err})") from err


def _load_csv(folder: Path) -> tuple[list[Graph], np.ndarray]:
    g_header, g_rows = _read_csv(folder / "graphs.csv", ["graph", "split"])
    G = len(g_rows)
    gid = np.array([int(r[g_header.index("graph")]) for r in g_rows])
    if sorted(gid.tolist()) != list(range(G)):
        raise _fail("graphs.csv", "graph", f"ids must be 0..{G - 1}, each once")
    split_names = [r[g_header.index("split")].strip() for r in g_rows]
    bad = [s for s in split_names if s not in SPLIT_NAMES]
    if bad:
        where = int(gid[split_names.index(bad[0])])
        raise _fail("graphs.csv", "split", f"{bad[0]!r} is not one of {SPLIT_NAMES}", where)
    split = np.empty(G, dtype=np.int64)
    split[gid] = [SPLIT_NAMES.index(s) for s in split_names]
    y_cols = [c for c in g_header if c == "y" or (c.startswith("y") and c[1:].isdigit())]
    graph_y = None
    if y_cols:
        graph_y = _numbers(folder / "graphs.csv", g_header, g_rows, y_cols)[np.argsort(gid)]
    e_header, e_rows = _read_csv(folder / "edges.csv", ["graph", "source", "target"])
    edges = _numbers(folder / "edges.csv", e_header, e_rows, ["graph", "source", "target"]).astype(np.int64)
    e_feat_cols = [c for c in e_header if c not in ("graph", "source", "target")]
    e_feat = _numbers(folder / "edges.csv", e_header, e_rows, e_feat_cols) if e_feat_cols else None
    node_feat = node_y = None
    if (folder / "nodes.csv").exists():
        n_header, n_rows = _read_csv(folder / "nodes.csv", ["graph", "node"])
        nodes = _numbers(folder / "nodes.csv", n_header, n_rows, ["graph", "node"]).astype(np.int64)
        order = np.lexsort((nodes[:, 1], nodes[:, 0]))
        nodes = nodes[order]
        num_nodes = np.bincount(nodes[:, 0], minlength=G)
        starts = np.concatenate([[0], np.cumsum(num_nodes)])
        expected = np.arange(len(nodes)) - np.repeat(starts[:-1], num_nodes)
        if len(num_nodes) > G or not (nodes[:, 1] == expected).all():
            g = int(nodes[np.flatnonzero(nodes[:, 1] != expected)[0], 0]) if len(num_nodes) <= G else G
            raise _fail("nodes.csv", "node", "each graph must list nodes 0..n-1, each once "
                        "(graph ids 0..G-1)", g)
        f_cols = [c for c in n_header if c not in ("graph", "node", "y")]
        node_feat = _numbers(folder / "nodes.csv", n_header, n_rows, f_cols)[order] if f_cols else None
        if "y" in n_header:
            node_y = _numbers(folder / "nodes.csv", n_header, n_rows, ["y"])[order, 0]
    else:
        num_nodes = np.zeros(G, dtype=np.int64)
        np.maximum.at(num_nodes, edges[:, 0], np.maximum(edges[:, 1], edges[:, 2]) + 1)
    if graph_y is None and node_y is None:
        raise _fail("graphs.csv / nodes.csv", "y", "no labels: add a y column to graphs.csv or nodes.csv")
    if edges.size and (edges[:, 0].min() < 0 or edges[:, 0].max() >= G):
        raise _fail("edges.csv", "graph", f"ids must lie in 0..{G - 1}")
    e_order = np.argsort(edges[:, 0], kind="stable")
    edges = edges[e_order]
    e_feat = None if e_feat is None else e_feat[e_order]
    e_starts = np.concatenate([[0], np.cumsum(np.bincount(edges[:, 0], minlength=G))])
    n_starts = np.concatenate([[0], np.cumsum(num_nodes)])
    graphs = []
    for g in range(G):
        e0, e1, n0, n1 = e_starts[g], e_starts[g + 1], n_starts[g], n_starts[g + 1]
        fields = {}
        if node_feat is not None:
            fields["node.x"] = node_feat[n0:n1]
        if node_y is not None:
            fields["node.y"] = node_y[n0:n1]
        if graph_y is not None:
            y = graph_y[g:g + 1]
            fields["graph.y"] = y[:, 0] if np.issubdtype(y.dtype, np.integer) and y.shape[1] == 1 else y
        if e_feat is not None:
            fields["edge_attr"] = e_feat[e0:e1]
        graphs.append(_graph("edges.csv", g, int(num_nodes[g]), edges[e0:e1, 1:].T, fields,
                             ("source", "target"),
                             {"node.x": "nodes.csv", "node.y": "nodes.csv", "graph.y": "graphs.csv"}))
    return graphs, split


def load_folder(path: str | Path, *, name: str | None = None) -> Dataset:
    """A `Dataset` from a folder with ``graphs.npz``, or ``graphs.csv`` + ``edges.csv`` (+ ``nodes.csv``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (expected graphs.npz or graphs.csv + edges.csv in it)")
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
    if (folder / "graphs.npz").exists():
        graphs, split = _load_npz(folder / "graphs.npz")
    elif (folder / "graphs.csv").exists() and (folder / "edges.csv").exists():
        graphs, split = _load_csv(folder)
    else:
        raise ValueError(f"{folder}: found neither graphs.npz nor graphs.csv + edges.csv")
    if not np.isin(split, (0, 1, 2)).all():
        raise _fail("graphs.npz", "split", "values must be 0 (train), 1 (val) or 2 (test)")
    return from_graphs(graphs, split.tolist(), name=name or meta.get("name", folder.name), meta=meta)


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
    graphs = []
    for i in range(len(data)):
        item = data[i]
        if getattr(item, "edge_index", None) is None:
            raise ValueError(f"{name}: graph {i}, field 'edge_index': missing")
        try:
            graphs.append(Graph.from_pyg(item))
        except ValueError as err:
            raise ValueError(f"{name}: graph {i}: {err}") from err
    return from_graphs(graphs, splits, name=name, seed=seed, meta=meta)


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
