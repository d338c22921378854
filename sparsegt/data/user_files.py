"""The files of a user-data folder (``graphs.npz``, or ``graphs.csv`` + ``edges.csv`` + ``nodes.csv``) -> graphs.

The format is described in `sparsegt.data.user`. This module is the one place where values read from a file
are checked, so that each error names the file, the line (CSV) or row (npz), the graph and the field, and says
how to fix it:

- ids (graph, node, source, target) are integers: ``1.7`` is refused, never truncated (``3.0`` and ``3e9`` are
  whole numbers and read as such);
- class and category ids are >= 0 and dense enough that ``1 + the largest`` is a size to allocate
  (`id_problem`); node ids read off an edge list without ``nodes.csv`` follow `graph.inferred_nodes_problem`;
- every graph has at least one node, and labels come from one level (graph or node), never both;
- CSV files may start with a UTF-8 byte-order mark (as spreadsheet programs write them).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..graph import Graph, inferred_nodes_problem

__all__ = ["ID_RANGE_LIMIT", "SPLIT_NAMES", "id_problem", "where", "read_npz", "read_csv_folder"]

SPLIT_NAMES = ("train", "val", "test")

# 1 + the largest class or category id is the size of an output layer or an embedding table; it may exceed the
# number of distinct ids up to this, or twice that number when there are more (an id of 1e9 would ask for a
# 1e9-row table: 32 GB at 8 channels).
ID_RANGE_LIMIT = 2**16

_CATEGORY_HINT = (" (a column of whole numbers is read as categories; write a numeric feature with a decimal "
                  "point, e.g. -1.0)")


def where(file: str, field: str | None = None, *, graph: int | None = None, line: int | None = None,
          row: int | None = None) -> str:
    """``file, line L, row R, graph G, field 'F'`` (the parts that are known)."""
    parts = [file]
    parts += [f"line {line}"] if line is not None else []
    parts += [f"row {row}"] if row is not None else []
    parts += [f"graph {graph}"] if graph is not None else []
    parts += [f"field '{field}'"] if field is not None else []
    return ", ".join(parts)


def id_problem(ids: np.ndarray, what: str) -> tuple[int, str] | None:
    """(flat position, why) of the first value of integer ``ids`` that cannot be a class/category id, or None.

    Ids must be >= 0, and 1 + the largest at most ``max(ID_RANGE_LIMIT, 2 * the number of distinct ids)``."""
    flat = np.asarray(ids).reshape(-1)
    if flat.size == 0:
        return None
    if int(flat.min()) < 0:
        return int(np.argmin(flat)), f"{what} {int(flat.min())} is negative; {what}s are numbered 0, 1, 2, ..."
    largest, distinct = int(flat.max()), len(np.unique(flat))
    limit = max(ID_RANGE_LIMIT, 2 * distinct)
    if largest + 1 > limit:
        return int(np.argmax(flat)), (
            f"{what} {largest:,} would make {largest + 1:,} {what}s to allocate for {distinct:,} distinct ones "
            f"(at most {limit:,}); number them 0..{distinct - 1} (numpy.unique(ids, return_inverse=True) does)")
    return None


# ------------------------------------------------------------------------------------------------ CSV
@dataclass
class _Table:
    """A CSV file: its header, its data rows (blank lines skipped) and the file line of each row."""

    file: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def values(self, columns: list[str]) -> np.ndarray:
        index = [self.header.index(c) for c in columns]
        out = np.empty((len(self.rows), len(columns)), dtype=object)
        for r, row in enumerate(self.rows):
            out[r] = [row[i] for i in index]
        return out

    def where(self, r: int, column: str, graph: int | None = None) -> str:
        return where(self.file, column, graph=graph, line=self.lines[r])


def _read_table(path: Path, required: list[str]) -> _Table:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not a name
            reader = csv.reader(handle)
            raw = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name}: is not UTF-8 text ({err}); save it as UTF-8 CSV") from None
    if not raw:
        raise ValueError(f"{where(path.name, 'header')}: the file is empty")
    header = [h.strip() for h in raw[0][1]]
    for field in required:
        if field not in header:
            raise ValueError(f"{where(path.name, field)}: column missing; the header is {header}")
    rows, lines = [], []
    for line, row in raw[1:]:
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{where(path.name, line=line)}: {len(row)} values, but the header has {len(header)}")
        rows.append(row)
        lines.append(line)
    return _Table(path.name, header, rows, lines)


def _parse(table: _Table, columns: list[str], dtype: type) -> np.ndarray:
    values = table.values(columns)
    try:
        return values.astype(dtype)
    except (ValueError, OverflowError):
        for (r, c), text in np.ndenumerate(values):
            try:
                dtype(text)
            except (ValueError, OverflowError):
                raise ValueError(f"{table.where(r, columns[c])}: {text!r} is not a number") from None
        raise


def _numbers(table: _Table, columns: list[str]) -> np.ndarray:
    """[rows, len(columns)]: int64 when every value is an integer, else float32."""
    try:
        return table.values(columns).astype(np.int64)
    except (ValueError, OverflowError):
        return _parse(table, columns, float).astype(np.float32)


def _ids(table: _Table, columns: list[str], what: str) -> np.ndarray:
    """[rows, len(columns)] int64 ids; a value that is not a whole number is an error (never truncated)."""
    try:
        return table.values(columns).astype(np.int64)
    except (ValueError, OverflowError):
        pass
    numbers = _parse(table, columns, float).astype(np.float64)
    whole = np.isfinite(numbers) & (np.floor(numbers) == numbers) & (np.abs(numbers) < 2**53)
    if not whole.all():
        r, c = np.argwhere(~whole)[0]
        raise ValueError(f"{table.where(r, columns[c])}: {table.values(columns)[r, c].strip()!r} is not an integer "
                         f"{what}; ids are whole numbers 0, 1, 2, ... (a fraction is never rounded)")
    return numbers.astype(np.int64)


def _check_categories(table: _Table, columns: list[str], values: np.ndarray, what: str) -> None:
    """Integer class/category ids ``values`` [rows, len(columns)] in file order (`id_problem`)."""
    if not np.issubdtype(values.dtype, np.integer):
        return
    found = id_problem(values, what)
    if found:
        r, c = divmod(found[0], len(columns))
        hint = _CATEGORY_HINT if what == "category id" else ""
        raise ValueError(f"{table.where(r, columns[c])}: {found[1]}{hint}")


def read_csv_folder(folder: Path, label_kind: str | None = None, *,
                    labelled: bool = True) -> tuple[list[Graph], np.ndarray]:
    """Graphs and their split ids from ``graphs.csv`` + ``edges.csv`` (+ ``nodes.csv``); ``label_kind`` is
    meta.json's ``task_kind`` (integer labels of a regression may be negative). ``labelled=False`` (graphs to
    predict on): the ``split`` and ``y`` columns may be left out (every graph is then in split 0)."""
    graphs_table = _read_table(folder / "graphs.csv", ["graph", "split"] if labelled else ["graph"])
    G = len(graphs_table.rows)
    gid = _ids(graphs_table, ["graph"], "graph id")[:, 0]
    seen = np.zeros(G, dtype=bool)
    for r, g in enumerate(gid.tolist()):
        if not 0 <= g < G or seen[g]:
            raise ValueError(f"{graphs_table.where(r, 'graph')}: graph id {g} {'repeated' if 0 <= g < G else 'given'}"
                             f"; graph ids must be 0..{G - 1}, each once")
        seen[g] = True
    order = np.argsort(gid)  # row of graph g
    has_split = "split" in graphs_table.header
    split_names = [row[graphs_table.header.index("split")].strip() if has_split else SPLIT_NAMES[0]
                   for row in graphs_table.rows]
    for r, name in enumerate(split_names):
        if name not in SPLIT_NAMES:
            raise ValueError(f"{graphs_table.where(r, 'split', int(gid[r]))}: {name!r} is not one of {SPLIT_NAMES}")
    split = np.empty(G, dtype=np.int64)
    split[gid] = [SPLIT_NAMES.index(s) for s in split_names]
    y_cols = [c for c in graphs_table.header if c == "y" or (c.startswith("y") and c[1:].isdigit())]
    graph_y = None
    if y_cols:
        graph_y = _numbers(graphs_table, y_cols)
        if label_kind != "regression":
            _check_categories(graphs_table, y_cols, graph_y, "class id")
        graph_y = graph_y[order]

    edges_table = _read_table(folder / "edges.csv", ["graph", "source", "target"])
    edges = _ids(edges_table, ["graph", "source", "target"], "id")
    bad = np.flatnonzero((edges[:, 0] < 0) | (edges[:, 0] >= G))
    if bad.size:
        raise ValueError(f"{edges_table.where(int(bad[0]), 'graph')}: graph id {int(edges[bad[0], 0])} is not in "
                         f"graphs.csv (ids 0..{G - 1})")
    e_feat_cols = [c for c in edges_table.header if c not in ("graph", "source", "target")]
    e_feat = _numbers(edges_table, e_feat_cols) if e_feat_cols else None
    if e_feat is not None:
        _check_categories(edges_table, e_feat_cols, e_feat, "category id")

    node_feat = node_y = None
    if (folder / "nodes.csv").exists():
        nodes_table = _read_table(folder / "nodes.csv", ["graph", "node"])
        nodes = _ids(nodes_table, ["graph", "node"], "id")
        bad = np.flatnonzero((nodes[:, 0] < 0) | (nodes[:, 0] >= G))
        if bad.size:
            raise ValueError(f"{nodes_table.where(int(bad[0]), 'graph')}: graph id {int(nodes[bad[0], 0])} is not "
                             f"in graphs.csv (ids 0..{G - 1})")
        node_order = np.lexsort((nodes[:, 1], nodes[:, 0]))
        nodes = nodes[node_order]
        num_nodes = np.bincount(nodes[:, 0], minlength=G)
        starts = np.concatenate([[0], np.cumsum(num_nodes)])
        expected = np.arange(len(nodes)) - np.repeat(starts[:-1], num_nodes)
        if not (nodes[:, 1] == expected).all():
            i = int(np.flatnonzero(nodes[:, 1] != expected)[0])
            raise ValueError(f"{nodes_table.where(int(node_order[i]), 'node', int(nodes[i, 0]))}: node "
                             f"{int(nodes[i, 1])} out of place; each graph must list nodes 0..n-1, each once")
        f_cols = [c for c in nodes_table.header if c not in ("graph", "node", "y")]
        if f_cols:
            node_feat = _numbers(nodes_table, f_cols)
            _check_categories(nodes_table, f_cols, node_feat, "category id")
            node_feat = node_feat[node_order]
        if "y" in nodes_table.header:
            node_y = _numbers(nodes_table, ["y"])
            if label_kind != "regression":
                _check_categories(nodes_table, ["y"], node_y, "class id")
            node_y = node_y[node_order, 0]
    else:
        num_nodes = np.zeros(G, dtype=np.int64)
        np.maximum.at(num_nodes, edges[:, 0], np.maximum(edges[:, 1], edges[:, 2]) + 1)
        edge_counts = np.bincount(edges[:, 0], minlength=G)
        for g in range(G):
            problem = inferred_nodes_problem(int(num_nodes[g]), int(edge_counts[g]))
            if problem:
                r = int(np.flatnonzero((edges[:, 0] == g) & (np.maximum(edges[:, 1], edges[:, 2]) + 1
                                                             == num_nodes[g]))[0])
                raise ValueError(f"{edges_table.where(r, 'source/target', g)}: {problem}; without nodes.csv a graph's "
                                 "nodes are 0..(largest id): renumber them 0..n-1, or list them in nodes.csv")
    if graph_y is None and node_y is None and labelled:
        raise ValueError("graphs.csv / nodes.csv, field 'y': no labels: add a y column to graphs.csv or nodes.csv")
    if graph_y is not None and node_y is not None:
        raise ValueError("graphs.csv and nodes.csv, field 'y': both hold labels, but a task has one level; remove "
                         "the y column of nodes.csv for a graph-level task, or that of graphs.csv for a node-level one")
    for g in np.flatnonzero(num_nodes == 0).tolist():
        listed = "no row in nodes.csv" if (folder / "nodes.csv").exists() else "no edge in edges.csv and no nodes.csv"
        raise ValueError(f"{graphs_table.where(int(order[g]), 'graph', g)}: the graph has no nodes ({listed}); "
                         "remove it from graphs.csv, or list its nodes in nodes.csv")
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


# ------------------------------------------------------------------------------------------------ npz
def _npz_ints(arrays: dict[str, np.ndarray], field: str, file: str) -> np.ndarray:
    """An id/count array as int64; floats only when every value is whole (never truncated)."""
    values = arrays[field]
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating):
        whole = np.isfinite(values) & (np.floor(values) == values)
        if whole.all():
            return values.astype(np.int64)
        position = np.unravel_index(int(np.flatnonzero(~whole.reshape(-1))[0]), values.shape)
        raise ValueError(f"{where(file, field)}: [{', '.join(map(str, position))}] = {values[position]} is not a "
                         "whole number; ids and counts are integers (a fraction is never rounded)")
    raise ValueError(f"{where(file, field)}: must hold integers, got dtype {values.dtype}")


def read_npz(path: Path, label_kind: str | None = None, *, labelled: bool = True) -> tuple[list[Graph], np.ndarray]:
    """Graphs and their split ids from a ``graphs.npz`` (``label_kind``, ``labelled`` as `read_csv_folder`)."""
    file = path.name
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # a torn zip, a pickle, not an npz at all
        raise ValueError(f"{file}: cannot be read as a NumPy .npz of plain arrays ({type(err).__name__}: {err})") \
            from None
    for field in ("num_nodes", "num_edges", "edge_index") + (("split",) if labelled else ()):
        if field not in arrays:
            raise ValueError(f"{where(file, field)}: is missing (see sparsegt.data.user for the format)")
    num_nodes, num_edges = _npz_ints(arrays, "num_nodes", file), _npz_ints(arrays, "num_edges", file)
    G = num_nodes.shape[0]
    split = _npz_ints(arrays, "split", file) if "split" in arrays else np.zeros(G, dtype=np.int64)
    for field, counts in (("num_nodes", num_nodes), ("num_edges", num_edges)):
        if counts.ndim != 1 or counts.shape[0] != G:
            raise ValueError(f"{where(file, field)}: must have shape [G = {G}], got {counts.shape}")
        if counts.size and counts.min() < 0:
            raise ValueError(f"{where(file, field, graph=int(np.argmin(counts)))}: {int(counts.min())} is negative")
    edge_index = _npz_ints(arrays, "edge_index", file)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.shape[1] != num_edges.sum():
        raise ValueError(f"{where(file, 'edge_index')}: must have shape [2, sum(num_edges) = {num_edges.sum()}], "
                         f"got {edge_index.shape}")
    if "node_y" not in arrays and "graph_y" not in arrays and labelled:
        raise ValueError(f"{where(file, 'node_y/graph_y')}: no labels: add node_y [N] or graph_y [G]")
    if "node_y" in arrays and "graph_y" in arrays:
        raise ValueError(f"{where(file, 'node_y/graph_y')}: both hold labels, but a task has one level; keep "
                         "node_y for a node-level task or graph_y for a graph-level one")
    node_off = np.concatenate([[0], np.cumsum(num_nodes)])
    edge_off = np.concatenate([[0], np.cumsum(num_edges)])
    for field, rows, total in (("x", "nodes", node_off[-1]), ("node_y", "nodes", node_off[-1]),
                               ("edge_attr", "edges", edge_off[-1]), ("graph_y", "graphs", G),
                               ("split", "graphs", G)):
        if field in arrays and (arrays[field].ndim == 0 or arrays[field].shape[0] != total):
            raise ValueError(f"{where(file, field)}: has shape {arrays[field].shape} but there are {total} {rows}")
    for field, what in (("x", "category id"), ("edge_attr", "category id"), ("node_y", "class id"),
                        ("graph_y", "class id")):
        values = arrays.get(field)
        if values is None or not np.issubdtype(values.dtype, np.integer):
            continue
        if what == "class id" and label_kind == "regression":
            continue
        found = id_problem(values, what)
        if found:
            row = found[0] // max(1, int(np.prod(values.shape[1:])))
            hint = _CATEGORY_HINT.replace("column", "array") if what == "category id" else ""
            raise ValueError(f"{where(file, field, row=row)}: {found[1]}{hint}")
    sized_by_data = "x" in arrays or "node_y" in arrays  # their rows already match num_nodes
    for g in range(G):
        if num_nodes[g] == 0:
            raise ValueError(f"{where(file, 'num_nodes', graph=g)}: the graph has no nodes; remove it")
        problem = None if sized_by_data else inferred_nodes_problem(int(num_nodes[g]), int(num_edges[g]))
        if problem:
            problem = problem.replace("the largest node id", "num_nodes - 1")
            raise ValueError(f"{where(file, 'num_nodes', graph=g)}: {problem}; without x or node_y nothing else in "
                             "the file holds the nodes: check num_nodes")
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
    return graphs, split


def _graph(file: str, g: int, n: int, edge_index: np.ndarray, fields: dict[str, np.ndarray],
           edge_fields: tuple[str, str] = ("edge_index[0]", "edge_index[1]"),
           field_files: dict[str, str] | None = None) -> Graph:
    for row, field in enumerate(edge_fields):
        ids = edge_index[row]
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            bad = int(ids.max()) if ids.max() >= n else int(ids.min())
            raise ValueError(f"{where(file, field, graph=g)}: node id {bad} outside 0..{n - 1} "
                             f"(the graph has {n} nodes)")
    node_data = {k[5:]: torch.from_numpy(v) for k, v in fields.items() if k.startswith("node.")}
    graph_data = {k[6:]: torch.from_numpy(v) for k, v in fields.items() if k.startswith("graph.")}
    edge_attr = fields.get("edge_attr")
    for key, value in fields.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            source = (field_files or {}).get(key, file)
            raise ValueError(f"{where(source, key.split('.')[-1], graph=g)}: holds NaN or infinite values")
    try:
        return Graph.from_edge_index(torch.from_numpy(edge_index.astype(np.int64)), n,
                                     None if edge_attr is None else torch.from_numpy(edge_attr),
                                     node_data=node_data, graph_data=graph_data)
    except ValueError as err:
        raise ValueError(f"{file}, graph {g}: {err}") from err
