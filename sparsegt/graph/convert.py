"""Converters: a `Graph` from an edge index, a scipy sparse matrix, a networkx graph or a PyG ``Data`` /
``Batch``, and back to each.

Edge-index convention (the one PyG uses for message passing, ``flow="source_to_target"``):
``edge_index[0]`` is the source (the key, the node a message comes from) and ``edge_index[1]`` the target
(the query, the node that aggregates); edges are sorted into CSR order (by query, then key; stable) and
every edge tensor is permuted with them. `Converters` is `Graph`'s share of this module
(``Graph.from_edge_index``, ``Graph.to_pyg``, ...). scipy, networkx and PyG are imported when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .batch import ptr_from_batch
from .validate import as_count, as_index_tensor, check_finite, first_bad, inferred_nodes_problem

if TYPE_CHECKING:
    from .core import Graph

__all__ = ["Converters"]


class Converters:
    """Build a `Graph` from other formats and convert it back (mixed into `Graph`, whose fields the ``to_*``
    methods read)."""

    indptr: Tensor
    indices: Tensor
    num_nodes: int
    num_cols: int
    num_edges: int
    node_data: dict[str, Tensor]
    edge_data: dict[str, Tensor]
    graph_data: dict[str, Tensor]
    row_index: Callable[[], Tensor]

    @classmethod
    def from_edge_index(
        cls,
        edge_index: Tensor,
        num_nodes: int | None = None,
        edge_attr: Tensor | None = None,
        *,
        num_cols: int | None = None,
        add_self_loops: bool = False,
        remove_duplicates: bool = False,
        edge_data: Mapping[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> Graph:
        """Build from a [2, E] edge index (row 0: source/key, row 1: target/query).

        Edges are sorted into CSR order (by query, then key; stable) and every edge tensor is permuted
        with them. ``num_nodes`` defaults to 1 + the largest index; ``num_cols`` to ``num_nodes``.
        ``remove_duplicates`` keeps the first copy of a repeated (query, key) pair;
        ``add_self_loops`` adds (i, i) for every i < min(num_nodes, num_cols) that lacks one, with
        zero edge features.
        """
        edge_index = as_index_tensor(edge_index, "edge_index")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        edge_data = dict(edge_data or {})
        if edge_attr is not None:
            edge_data["edge_attr"] = torch.as_tensor(edge_attr)
        num_edges = edge_index.shape[1]
        for name, t in edge_data.items():
            if t.dim() == 0 or t.shape[0] != num_edges:
                raise ValueError(f"{name} has {t.shape[0] if t.dim() else 0} rows but edge_index has "
                                 f"{num_edges} edges")
            check_finite(name, t)  # before sorting, so the message names the caller's edge position
        if num_edges and bool((edge_index < 0).any()):
            r, e = (edge_index < 0).nonzero()[0].tolist()
            raise ValueError(f"edge_index[{r}, {e}] = {int(edge_index[r, e])} is negative")
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if num_edges else 0
            problem = inferred_nodes_problem(num_nodes, num_edges)
            if problem:
                raise ValueError(f"edge_index: {problem}; pass num_nodes= (and num_cols=) if so many nodes are "
                                 "meant, or renumber the node ids 0..n-1")
        num_nodes = as_count(num_nodes, "num_nodes")
        cols = num_nodes if num_cols is None else as_count(num_cols, "num_cols")
        for r, limit, what in ((1, num_nodes, "nodes"), (0, cols, "nodes" if num_cols is None else "columns")):
            if num_edges and bool((edge_index[r] >= limit).any()):
                e = first_bad(edge_index[r] >= limit)
                raise ValueError(f"edge_index[{r}, {e}] = {int(edge_index[r, e])} but the graph has {limit} {what}")
        row, col = edge_index[1], edge_index[0]
        if add_self_loops:
            n_loop = min(num_nodes, cols)
            has = torch.zeros(n_loop, dtype=torch.bool, device=row.device)
            loop_mask = (row == col) & (row < n_loop)
            has[row[loop_mask]] = True
            missing = (~has).nonzero().flatten()
            row = torch.cat([row, missing])
            col = torch.cat([col, missing])
            edge_data = {name: torch.cat([t, t.new_zeros((len(missing), *t.shape[1:]))])
                         for name, t in edge_data.items()}
        key = row * max(cols, 1) + col
        order = torch.sort(key, stable=True).indices
        row, col = row[order], col[order]
        edge_data = {name: t[order] for name, t in edge_data.items()}
        if remove_duplicates and row.numel():
            sorted_key = key[order]
            keep = torch.ones_like(sorted_key, dtype=torch.bool)
            keep[1:] = sorted_key[1:] != sorted_key[:-1]
            row, col = row[keep], col[keep]
            edge_data = {name: t[keep] for name, t in edge_data.items()}
        indptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=row.device)
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_nodes), 0)
        return cls(indptr, col.contiguous(), num_cols, edge_data=edge_data, **kwargs)

    @classmethod
    def from_scipy(cls, matrix: Any, **kwargs: Any) -> Graph:
        """Build from a scipy sparse matrix whose rows are queries and columns keys.

        Stored values (if not all ones) become ``edge_data["edge_weight"]``.
        """
        import scipy.sparse as sp

        csr = sp.csr_array(matrix)
        csr.sort_indices()
        data = torch.as_tensor(csr.data)
        edge_data = dict(kwargs.pop("edge_data", {}) or {})
        if data.numel() and not bool((data == 1).all()):
            edge_data["edge_weight"] = data.clone()
        return cls(torch.as_tensor(csr.indptr.astype(np.int64)), torch.as_tensor(csr.indices.astype(np.int64)),
                   csr.shape[1], edge_data=edge_data, **kwargs)

    @classmethod
    def from_networkx(cls, graph: Any, node_attrs: Sequence[str] = (), edge_attrs: Sequence[str] = (),
                      **kwargs: Any) -> Graph:
        """Build from a networkx graph; nodes are numbered in ``graph.nodes`` order.

        An undirected graph gives both directions of every edge. Named node/edge attributes are
        stacked into ``x`` / ``edge_attr`` (several names are concatenated as columns).
        """
        nodes = list(graph.nodes)
        position = {node: i for i, node in enumerate(nodes)}
        src, dst, feats = [], [], []
        for u, v, attrs in graph.edges(data=True):
            pairs = [(u, v)] if graph.is_directed() or u == v else [(u, v), (v, u)]
            for a, b in pairs:
                src.append(position[a])
                dst.append(position[b])
                if edge_attrs:
                    feats.append([float(attrs[name]) for name in edge_attrs])
        edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
        edge_attr = torch.tensor(feats, dtype=torch.float32).reshape(-1, len(edge_attrs)) if edge_attrs else None
        if node_attrs:
            kwargs["x"] = torch.tensor([[float(graph.nodes[n][a]) for a in node_attrs] for n in nodes],
                                       dtype=torch.float32).reshape(len(nodes), len(node_attrs))
        return cls.from_edge_index(edge_index, len(nodes), edge_attr, **kwargs)

    @classmethod
    def from_pyg(cls, data: Any) -> Graph:
        """Build from a PyG ``Data`` or ``Batch`` (``x``, ``edge_attr``, ``y``, ``pos``, ``edge_weight``).

        A ``Batch`` (any data with ``ptr`` or a ``batch`` vector) is converted in one vectorised pass: the
        result equals converting each graph and `Graph.batch`-ing them, without the per-graph loop. Edges
        are sorted into CSR order (by query ``edge_index[1]``, then key; stable) and ``edge_attr`` /
        ``edge_weight`` [E, ...] are permuted with them.

        ``y`` is node-level when it has one row per node, graph-level when it has one row per graph (a
        0-dim ``y`` of a single graph is one graph label); when both fit (every graph has one node) it
        is graph-level, unless the batch's slices say each graph holds one ``y`` row per node.
        """
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            raise ValueError("from_pyg: the data has no edge_index (set data.edge_index [2, E])")
        if getattr(data, "ptr", None) is not None or getattr(data, "batch", None) is not None:
            return cls._from_pyg_batch(data, edge_index)
        node_data = {name: getattr(data, name) for name in ("pos",) if getattr(data, name, None) is not None}
        edge_data = {}
        if getattr(data, "edge_weight", None) is not None:
            edge_data["edge_weight"] = data.edge_weight
        y = getattr(data, "y", None)
        level = None
        if y is not None:
            y = y.reshape(1) if y.dim() == 0 else y
            level = "node" if y.shape[0] == data.num_nodes and data.num_nodes != 1 else "graph"
        return cls.from_edge_index(edge_index, data.num_nodes, getattr(data, "edge_attr", None),
                                   edge_data=edge_data, x=getattr(data, "x", None), y=y, y_level=level,
                                   node_data=node_data)

    @classmethod
    def _from_pyg_batch(cls, data: Any, edge_index: Any) -> Graph:
        """`from_pyg` of a batch: one sort of all edges, no per-graph loop (same result as the loop)."""
        edge_index = as_index_tensor(edge_index, "edge_index")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        ptr = getattr(data, "ptr", None)
        if ptr is None:
            ptr = ptr_from_batch(data.batch)
        else:  # the batch's own offsets say how many nodes it has (PyG's num_nodes is inferred from x)
            ptr = as_index_tensor(ptr, "ptr")
            if ptr.dim() != 1 or ptr.numel() < 2 or int(ptr[0]) != 0 or bool((ptr.diff() < 0).any()):
                raise ValueError(f"ptr must be [B+1] offsets rising from 0, got {ptr.tolist()[:8]}...")
        num_nodes = int(ptr[-1])
        num_graphs = ptr.numel() - 1
        graph_of_node = torch.repeat_interleave(torch.arange(num_graphs, device=ptr.device), ptr.diff())
        num_edges = edge_index.shape[1]
        src, dst = edge_index[0], edge_index[1]

        def where(e: int) -> str:  # which edge of which graph, for error messages
            node = min(int(dst[e]), int(src[e]))
            return f"edge {e}" + (f" (graph {int(graph_of_node[node])})" if 0 <= node < num_nodes else "")

        if num_edges:
            bad = (edge_index < 0) | (edge_index >= num_nodes)
            if bool(bad.any()):
                r, e = bad.nonzero()[0].tolist()
                raise ValueError(f"edge_index[{r}, {e}] = {int(edge_index[r, e])} is out of range: the batch has "
                                 f"{num_nodes} nodes ({where(e)})")
            crossing = graph_of_node[src] != graph_of_node[dst]
            if bool(crossing.any()):
                e = first_bad(crossing)
                raise ValueError(f"edge_index[:, {e}] = ({int(src[e])}, {int(dst[e])}) joins graph "
                                 f"{int(graph_of_node[src[e]])} and graph {int(graph_of_node[dst[e]])}")
        edge_data = {name: torch.as_tensor(getattr(data, name)) for name in ("edge_attr", "edge_weight")
                     if getattr(data, name, None) is not None}
        for name, t in edge_data.items():
            if t.dim() == 0 or t.shape[0] != num_edges:
                raise ValueError(f"{name} has shape {tuple(t.shape)} but edge_index has {num_edges} edges")
            if t.is_floating_point() and num_edges and not bool(torch.isfinite(t).all()):
                e = int((~torch.isfinite(t)).reshape(num_edges, -1).any(1).nonzero()[0, 0])
                raise ValueError(f"{name}[{e}] is not finite ({where(e)}): features must be finite")
        key = dst * max(num_nodes, 1) + src
        if num_edges and bool((key.diff() < 0).any()):  # PyG batches are often sorted already: no permutation
            order = torch.sort(key, stable=True).indices
            src, dst = src[order], dst[order]
            edge_data = {name: t[order] for name, t in edge_data.items()}
        indptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        node_data = {name: getattr(data, name) for name in ("x", "pos") if getattr(data, name, None) is not None}
        graph_data = {}
        y = getattr(data, "y", None)
        if y is not None:
            level = _batch_label_level(data, y, ptr)
            (node_data if level == "node" else graph_data)["y"] = y
        return cls(indptr, src.contiguous(), None, node_data=node_data, edge_data=edge_data, graph_data=graph_data,
                   ptr=ptr, col_ptr=ptr, edge_ptr=indptr[ptr])

    def to_edge_index(self) -> Tensor:
        """[2, E] edge index in CSR order: row 0 keys (sources), row 1 queries (targets)."""
        return torch.stack([self.indices, self.row_index()])

    def to_scipy(self, values: Tensor | None = None) -> Any:
        """scipy ``csr_array`` of shape [num_nodes, num_cols]; ``values`` [E] default to ones."""
        import scipy.sparse as sp

        data = np.ones(self.num_edges) if values is None else values.detach().cpu().numpy()
        return sp.csr_array((data, self.indices.cpu().numpy(), self.indptr.cpu().numpy()),
                            shape=(self.num_nodes, self.num_cols))

    def to_networkx(self) -> Any:
        """A ``networkx.MultiDiGraph`` with an edge key -> query for every pattern entry."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from(range(max(self.num_nodes, self.num_cols)))
        g.add_edges_from(self.to_edge_index().t().tolist())
        return g

    def to_pyg(self) -> Any:
        """A PyG ``Data`` (requires the ``pyg`` extra)."""
        try:
            from torch_geometric.data import Data
        except ImportError as err:
            raise ImportError("to_pyg needs PyTorch Geometric: pip install 'sparsegt[pyg]'") from err
        fields = {name: t for name, t in self.node_data.items()}
        fields.update({name: t for name, t in self.edge_data.items()})
        fields.update({name: t for name, t in self.graph_data.items()})
        return Data(edge_index=self.to_edge_index(), num_nodes=self.num_nodes, **fields)


def _batch_label_level(data: Any, y: Tensor, ptr: Tensor) -> str:
    """"node" or "graph": what the rows of a batch's ``y`` are (`Graph.from_pyg`)."""
    num_nodes, num_graphs = int(ptr[-1]), ptr.numel() - 1
    rows = y.shape[0] if y.dim() else 1
    slices = getattr(data, "_slice_dict", None)
    y_rows = slices.get("y") if isinstance(slices, Mapping) else None  # per-graph y rows, set by PyG's collate
    if y_rows is not None and torch.as_tensor(y_rows).numel() == num_graphs + 1:
        per_graph = torch.as_tensor(y_rows).diff().to(ptr.device)
        if bool((per_graph == 1).all()) and rows == num_graphs:
            return "graph"
        if torch.equal(per_graph, ptr.diff()):
            return "node"
    elif rows == num_graphs:
        return "graph"
    elif rows == num_nodes:
        return "node"
    raise ValueError(f"y has shape {tuple(y.shape)}: neither one row per graph ({num_graphs}) nor one row per "
                     f"node ({num_nodes}), graph by graph")
