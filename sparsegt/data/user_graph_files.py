"""The files of a user folder holding ONE graph split by nodes (``graph.npz``, or ``nodes.csv`` + ``edges.csv``).

Format (described for users in `sparsegt.data.user`)::

    graph.npz   edge_index [2, E] int     row 0 source, row 1 target (store both directions of an undirected edge)
                y          [N] or [N, T]  node labels (integers = classes, floats = regression targets)
                split      [N] int        0 train, 1 val, 2 test, -1 none   -- or the three PyG-style masks:
                train_mask, val_mask, test_mask [N] bool (disjoint)
                x          [N, F]         optional node features (integers = categorical)
                edge_attr  [E, Fe]        optional edge features, in edge_index order
                num_nodes  []  int        optional when x or y give N

    nodes.csv   node,split[,feature columns][,y]   split: train / val / test / none (or empty); y may be empty
                                                   on nodes of no split
    edges.csv   source,target[,feature columns]    (no graphs.csv, no graph column: that is the many-graph format)

Labels of nodes in no split are never scored; they may be missing (empty in CSV) or anything (npz; -1 is
usual) and are stored as 0. Every error names the file, the line (CSV) or row (npz: the node or edge number),
the field, and what to change. Checks reuse `user_files` (ids, categories, CSV parsing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..graph import Graph
from .node_splits import SPLIT_IDS, split_from_masks
from .user_files import _CATEGORY_HINT, _check_categories, _ids, _npz_ints, _numbers, _read_table, id_problem, where

__all__ = ["is_one_graph_folder", "read_one_graph"]

_CSV_SPLITS = {"train": 0, "val": 1, "test": 2, "none": -1, "": -1}


def is_one_graph_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the one-graph format (``graph.npz``, or nodes.csv + edges.csv without graphs.csv)."""
    return (folder / "graph.npz").exists() or (
        not (folder / "graphs.csv").exists() and (folder / "nodes.csv").exists() and (folder / "edges.csv").exists())


def read_one_graph(folder: Path, label_kind: str | None = None) -> tuple[Graph, np.ndarray]:
    """(graph with ``x``/``y``/``edge_attr``, [N] int8 split ids) from ``graph.npz`` or nodes.csv + edges.csv;
    ``label_kind`` is meta.json's ``task_kind`` (integer labels of a regression may be negative)."""
    if (folder / "graph.npz").exists():
        return _read_npz(folder / "graph.npz", label_kind)
    return _read_csv(folder, label_kind)


def _clean_labels(y: np.ndarray, split: np.ndarray, file: str, label_kind: str | None, line_of=None) -> np.ndarray:
    """Labels of nodes in no split -> 0; class ids of the others checked (`id_problem`)."""
    y = y.copy()
    y[split < 0] = 0
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1)
        if bad.any():
            node = int(np.flatnonzero(bad)[0])
            place = f"line {line_of(node)}" if line_of else f"row {node}"
            raise ValueError(f"{file}, {place}, field 'y': the label of node {node} is NaN or infinite; give a "
                             "number, or put the node in no split")
    elif label_kind != "regression":
        found = id_problem(y, "class id")
        if found:
            node = found[0] // max(1, int(np.prod(y.shape[1:])))
            place = f"line {line_of(node)}" if line_of else f"row {node}"
            raise ValueError(f"{file}, {place}, field 'y': {found[1]} (node {node}; a node in no split may "
                             "have any label)")
    return y


def _build(file: str, n: int, edge_index: np.ndarray, fields: dict[str, np.ndarray], edge_fields: tuple[str, str],
           edge_line=None) -> Graph:
    for row, field in enumerate(edge_fields):
        ids = edge_index[row]
        bad = np.flatnonzero((ids < 0) | (ids >= n))
        if bad.size:
            e = int(bad[0])
            place = f"line {edge_line(e)}" if edge_line else f"edge {e}"
            raise ValueError(f"{file}, {place}, field '{field}': node id {int(ids[e])} is outside 0..{n - 1} (the "
                             f"graph has {n} nodes); renumber the nodes 0..N-1, or list the missing ones")
    for key, value in fields.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            row = int(np.flatnonzero(~np.isfinite(value.reshape(value.shape[0], -1)).all(axis=1))[0])
            source, field = key.split(":")
            item = f"edge {row}" if field == "edge_attr" else f"node {row}"
            raise ValueError(f"{source}, {item}, field '{field}': holds NaN or infinite values; replace them (e.g. "
                             "with 0 and an indicator column)")
    node_data = {k.split(":")[1]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()
                 if k.split(":")[1] in ("x", "y")}
    edge_attr = next((v for k, v in fields.items() if k.endswith(":edge_attr")), None)
    return Graph.from_edge_index(torch.from_numpy(edge_index.astype(np.int64)), n,
                                 None if edge_attr is None else torch.from_numpy(np.ascontiguousarray(edge_attr)),
                                 node_data=node_data)


# ------------------------------------------------------------------------------------------------ npz
def _read_npz(path: Path, label_kind: str | None) -> tuple[Graph, np.ndarray]:
    file = path.name
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:
        raise ValueError(f"{file}: cannot be read as a NumPy .npz of plain arrays ({type(err).__name__}: {err})") \
            from None
    if "graph_y" in arrays or "num_edges" in arrays:
        raise ValueError(f"{file}: has graph_y/num_edges, fields of the many-graph format; name it graphs.npz "
                         "(see sparsegt.data.user), or keep edge_index, y and split for one graph")
    for field in ("edge_index", "y"):
        if field not in arrays:
            raise ValueError(f"{where(file, field)}: is missing; a graph.npz holds edge_index [2, E], y [N] and "
                             "split [N] (or train_mask/val_mask/test_mask)")
    edge_index = _npz_ints(arrays, "edge_index", file)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{where(file, 'edge_index')}: must have shape [2, E], got {edge_index.shape}; "
                         "transpose an [E, 2] edge list")
    y = arrays["y"]
    if y.ndim not in (1, 2) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{where(file, 'y')}: must be numbers of shape [N] or [N, T], got {y.dtype} {y.shape}")
    n = y.shape[0]
    if "num_nodes" in arrays:
        given = _npz_ints(arrays, "num_nodes", file).reshape(-1)
        if given.shape != (1,) or int(given[0]) != n:
            raise ValueError(f"{where(file, 'num_nodes')}: {given.tolist()} but y has {n} rows (one per node); "
                             "make them agree, or drop num_nodes")
    masks = [m for m in ("train_mask", "val_mask", "test_mask") if m in arrays]
    if ("split" in arrays) == bool(masks) or 0 < len(masks) < 3:
        raise ValueError(f"{where(file, 'split')}: give either split [N] (0 train, 1 val, 2 test, -1 none) or all "
                         f"three of train_mask, val_mask, test_mask; found {['split'] * ('split' in arrays) + masks}")
    if masks:
        split = split_from_masks(*(arrays[m] for m in masks), where=file)
    else:
        split = _npz_ints(arrays, "split", file)
    if split.shape != (n,):
        raise ValueError(f"{where(file, 'split' if not masks else 'masks')}: has shape {split.shape} but y has {n} "
                         "rows (one per node)")
    bad = np.flatnonzero(~np.isin(split, list(SPLIT_IDS.values())))
    if bad.size:
        raise ValueError(f"{where(file, 'split', row=int(bad[0]))}: {int(split[bad[0]])} is not 0 (train), 1 (val), "
                         "2 (test) or -1 (none)")
    split = split.astype(np.int8)
    fields = {f"{file}:y": _clean_labels(y, split, file, label_kind)}
    for field, rows, what in (("x", n, "nodes"), ("edge_attr", edge_index.shape[1], "edges")):
        if field not in arrays:
            continue
        values = arrays[field]
        if values.ndim == 0 or values.shape[0] != rows:
            raise ValueError(f"{where(file, field)}: has shape {values.shape} but there are {rows} {what}")
        values = values.reshape(rows, -1)
        if np.issubdtype(values.dtype, np.integer):
            found = id_problem(values, "category id")
            if found:
                row = found[0] // values.shape[1]
                raise ValueError(f"{where(file, field, row=row)}: {found[1]}"
                                 f"{_CATEGORY_HINT.replace('column', 'array')}")
        fields[f"{file}:{field}"] = values
    return _build(file, n, edge_index, fields, ("edge_index[0]", "edge_index[1]")), split


# ------------------------------------------------------------------------------------------------ CSV
def _read_csv(folder: Path, label_kind: str | None) -> tuple[Graph, np.ndarray]:
    nodes = _read_table(folder / "nodes.csv", ["node", "split"])
    if "graph" in nodes.header:
        raise ValueError("nodes.csv, field 'graph': a graph column but no graphs.csv; for many graphs add "
                         "graphs.csv (graph,split[,y]), for one graph drop the graph column")
    n = len(nodes.rows)
    if n == 0:
        raise ValueError("nodes.csv: no node rows; list every node once (node,split[,features][,y])")
    node_ids = _ids(nodes, ["node"], "node id")[:, 0]
    order = np.argsort(node_ids, kind="stable")
    if not (node_ids[order] == np.arange(n)).all():
        i = int(np.flatnonzero(node_ids[order] != np.arange(n))[0])
        r = int(order[i])
        raise ValueError(f"{nodes.where(r, 'node')}: node {int(node_ids[r])} is out of place; the {n} rows must list "
                         f"the nodes 0..{n - 1}, each once")
    split_column = nodes.header.index("split")
    split = np.empty(n, np.int8)
    for r, row in enumerate(nodes.rows):
        name = row[split_column].strip().lower()
        if name not in _CSV_SPLITS:
            raise ValueError(f"{nodes.where(r, 'split')}: {row[split_column]!r} is not train, val, test or none "
                             "(empty also means none)")
        split[r] = _CSV_SPLITS[name]
    if "y" not in nodes.header:
        raise ValueError(f"{where('nodes.csv', 'y')}: column missing; the header is {nodes.header}; add the node "
                         "labels in a y column")
    y_column = nodes.header.index("y")
    for r, row in enumerate(nodes.rows):
        if not row[y_column].strip():
            if split[r] >= 0:
                raise ValueError(f"{nodes.where(r, 'y')}: empty, but the node is in split "
                                 f"'{row[split_column].strip()}'; give its label, or set its split to none")
            row[y_column] = "0"
    y = _numbers(nodes, ["y"])[:, 0]
    feature_columns = [c for c in nodes.header if c not in ("node", "split", "y")]
    fields = {"nodes.csv:y": _clean_labels(y[order], split[order], "nodes.csv", label_kind,
                                           line_of=lambda node: nodes.lines[int(order[node])])}
    if feature_columns:
        x = _numbers(nodes, feature_columns)
        _check_categories(nodes, feature_columns, x, "category id")
        fields["nodes.csv:x"] = x[order]
    edges = _read_table(folder / "edges.csv", ["source", "target"])
    if "graph" in edges.header:
        raise ValueError("edges.csv, field 'graph': a graph column but no graphs.csv; for many graphs add "
                         "graphs.csv, for one graph drop the graph column")
    edge_index = _ids(edges, ["source", "target"], "node id").T if edges.rows else np.zeros((2, 0), np.int64)
    edge_columns = [c for c in edges.header if c not in ("source", "target")]
    if edge_columns and edges.rows:
        attr = _numbers(edges, edge_columns)
        _check_categories(edges, edge_columns, attr, "category id")
        fields["edges.csv:edge_attr"] = attr
    graph = _build("edges.csv", n, edge_index, fields, ("source", "target"), edge_line=lambda e: edges.lines[e])
    return graph, split[order]
