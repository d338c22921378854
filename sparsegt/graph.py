"""`Graph`: a sparse query -> key pattern in CSR form, with optional node, edge and graph tensors.

Every attention pattern in sparsegt is a `Graph`. Row ``i`` lists the keys query ``i`` attends to:
``indices[indptr[i]:indptr[i + 1]]``. Rows are queries (``num_nodes`` of them), columns are keys
(``num_cols``; a rectangular pattern is legal: cross-attention, virtual nodes, codebooks).

Edge-index convention (the one PyG uses for message passing, ``flow="source_to_target"``):
``edge_index[0]`` is the source (the key, the node a message comes from) and ``edge_index[1]`` the
target (the query, the node that aggregates). For undirected graphs stored in both directions this
makes no difference. As a sparse matrix, the pattern is ``A[query, key]``.

Tensors carried along:

- ``node_data``: name -> tensor whose first dimension is ``num_nodes`` (``x`` [N, F], node labels, PEs);
- ``edge_data``: name -> tensor whose first dimension is ``num_edges``, **aligned with CSR order**
  (``edge_attr`` [E, F], RRWP, SPD);
- ``graph_data``: name -> tensor whose first dimension is the number of graphs (graph labels).

A batch (`Graph.batch`) is a disjoint union without padding; ``ptr`` [B+1], ``col_ptr`` [B+1] and
``edge_ptr`` [B+1] hold the node, key and edge offsets of each graph.

Plans: what code precomputes from a pattern (its transpose, a backend's work plan) is kept on the
`Graph` through one call, `Graph.plan`, under a kind named in `PLAN_KINDS`, and lives as long as the
`Graph` (see `Graph.plan` for the lifetime).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["Graph", "PLAN_KINDS", "INFERRED_NODES_LIMIT", "inferred_nodes_problem", "ptr_from_batch"]

T = TypeVar("T")

# A node count read off the largest index (no ``num_nodes`` given) is believed up to this many nodes, or up to
# 4 per edge when there are more edges: past that, the pattern is almost all isolated nodes, which is a typo or a
# hostile file far more often than a graph, and ``indptr`` alone takes 8 bytes a node (an index of 2**40 would
# ask for 8.8 TB). An explicit ``num_nodes`` is never bounded here.
INFERRED_NODES_LIMIT = 2**24

# Every kind of plan kept on a Graph (`Graph.plan`), what it holds and who builds it. A new kind is one line here.
PLAN_KINDS: Mapping[str, str] = MappingProxyType({
    "row_index": "Graph.row_index: [E] the query of every edge",
    "bounds": "attention.api: '' once indptr and indices were found in range for the kernels, else what is wrong",
    "batch_index": "Graph.batch_index: [N] the graph of every node",
    "csc": "Graph.csc: the transposed pattern (col_indptr, row_indices, edge_id)",
    "segments": "attention.cpu, key (side 'rows' or 'cols', piece): cpu_primitives.SegmentPlan, the rows "
                "(or columns) cut into segments and chunks",
    "runs": "attention.ranges: lo [N], the first key of every row's run (empty when the rows are not runs)",
    "run_plan": "attention.ranges: ranges.RunPlan, the chunks of rows and their column spans",
    "tile_counts": "attention.tile_plan, key (tile_rows, block_cols): [T] column blocks per row tile",
    "tile_plan": "attention.tile_plan, key (tile_rows, block_cols): tile_plan.TilePlan",
    "triton_segments": "attention.triton_backend, key (side 'rows' or 'cols', piece): triton_backend.Segments, "
                       "rows (or columns) cut into runs of at most piece edges",
    "row_chunks": "nn.grit, key (chunks): numba_runtime.row_chunks bounds of the fused layer kernels",
})


class _Offered:
    """A builder a pattern function left for a plan it knows more cheaply (`Graph.offer_plan`)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build


def inferred_nodes_problem(num_nodes: int, num_edges: int) -> str | None:
    """Why ``num_nodes`` (1 + the largest node id, inferred) is not believed for ``num_edges`` edges, or None.

    See `INFERRED_NODES_LIMIT`; the data readers (`sparsegt.data.user`) apply the same rule to ids read
    from files."""
    limit = max(INFERRED_NODES_LIMIT, 4 * num_edges)
    if num_nodes <= limit:
        return None
    return (f"the largest node id is {num_nodes - 1:,}, so {num_nodes:,} nodes would be allocated for "
            f"{num_edges:,} edges (more than {limit:,}, the most inferred from ids)")


def _as_count(value: Any, name: str) -> int:
    """``value`` as a count (a non-negative integer), or a ValueError naming ``name``."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype.is_floating_point:
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _first_bad(mask: Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def _as_index_tensor(value: Any, name: str) -> Tensor:
    t = torch.as_tensor(value)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.long()


def _check_finite(name: str, t: Tensor) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        where = ", ".join(str(i) for i in bad)
        raise ValueError(f"{name}[{where}] = {t[tuple(bad)].item()}: features must be finite")


class Graph:
    """A CSR attention pattern with optional node/edge/graph tensors.

    Args:
        indptr: [N+1] int64 row offsets (queries).
        indices: [E] int64 column indices (keys), sorted by row.
        num_cols: number of keys; defaults to ``N`` (square pattern).
        x: [N, F] node features (stored as ``node_data["x"]``).
        edge_attr: [E, ...] edge features in CSR order (``edge_data["edge_attr"]``).
        y: labels; node-level if ``y_level="node"``, graph-level if ``"graph"``; inferred when None.
        node_data, edge_data, graph_data: further named tensors.
        ptr, col_ptr, edge_ptr: [B+1] node/key/edge offsets of the graphs of a batch.
        validate: check every invariant (set False only for internally built, known-good patterns).
    """

    def __init__(
        self,
        indptr: Tensor,
        indices: Tensor,
        num_cols: int | None = None,
        *,
        x: Tensor | None = None,
        edge_attr: Tensor | None = None,
        y: Tensor | None = None,
        y_level: str | None = None,
        node_data: Mapping[str, Tensor] | None = None,
        edge_data: Mapping[str, Tensor] | None = None,
        graph_data: Mapping[str, Tensor] | None = None,
        ptr: Tensor | None = None,
        col_ptr: Tensor | None = None,
        edge_ptr: Tensor | None = None,
        validate: bool = True,
    ) -> None:
        self.indptr = indptr
        self.indices = indices
        self.num_nodes = int(indptr.numel()) - 1 if isinstance(indptr, Tensor) else len(indptr) - 1
        self.num_cols = self.num_nodes if num_cols is None else _as_count(num_cols, "num_cols")
        self.node_data: dict[str, Tensor] = dict(node_data or {})
        self.edge_data: dict[str, Tensor] = dict(edge_data or {})
        self.graph_data: dict[str, Tensor] = dict(graph_data or {})
        if x is not None:
            self.node_data["x"] = torch.as_tensor(x)
        if edge_attr is not None:
            self.edge_data["edge_attr"] = torch.as_tensor(edge_attr)
        if y is not None:
            y = torch.as_tensor(y)
            level = y_level or self._infer_label_level(y)
            if level not in ("node", "graph"):
                raise ValueError(f"y_level must be 'node' or 'graph', got {y_level!r}")
            (self.node_data if level == "node" else self.graph_data)["y"] = y
        self.ptr = ptr
        self.col_ptr = col_ptr if col_ptr is not None else (ptr if num_cols is None else None)
        self.edge_ptr = edge_ptr
        self._plans: dict[tuple[str, Hashable], Any] = {}  # (kind, key) -> plan, or an _Offered builder
        if validate:
            self.validate()

    # ------------------------------------------------------------------ basic properties
    @property
    def num_edges(self) -> int:
        return int(self.indices.numel())

    @property
    def num_graphs(self) -> int:
        return 1 if self.ptr is None else int(self.ptr.numel()) - 1

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    @property
    def x(self) -> Tensor | None:
        return self.node_data.get("x")

    @property
    def edge_attr(self) -> Tensor | None:
        return self.edge_data.get("edge_attr")

    @property
    def y(self) -> Tensor | None:
        return self.node_data.get("y", self.graph_data.get("y"))

    @property
    def batch_index(self) -> Tensor:
        """[N] index of the graph each node (row) belongs to (PyG's ``batch`` vector)."""
        def build() -> Tensor:
            ptr = self._ptr_or_single()
            counts = ptr[1:] - ptr[:-1]
            return torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts,
                                           output_size=self.num_nodes)

        return self.plan("batch_index", build)

    def _ptr_or_single(self) -> Tensor:
        if self.ptr is not None:
            return self.ptr
        return torch.tensor([0, self.num_nodes], device=self.device)

    def _infer_label_level(self, y: Tensor) -> str:
        if y.dim() >= 1 and y.shape[0] == self.num_nodes and self.num_nodes != 1:
            return "node"
        if y.dim() == 0 or y.shape[0] == 1:
            return "graph"
        raise ValueError(
            f"y has {y.shape[0]} rows but the graph has {self.num_nodes} nodes: pass y_level='node' "
            "or 'graph' to say which it is"
        )

    def row_index(self) -> Tensor:
        """[E] the query (row) of every edge, in CSR order."""
        # output_size: the length is known without reading the data (torch.compile traces it)
        return self.plan("row_index", lambda: torch.repeat_interleave(
            torch.arange(self.num_nodes, device=self.device), self.indptr.diff(), output_size=self.num_edges))

    def degree(self, kind: str = "row") -> Tensor:
        """[N] number of keys per query (``kind="row"``) or [num_cols] queries per key (``"col"``)."""
        if kind == "row":
            return self.indptr.diff()
        if kind == "col":
            return torch.bincount(self.indices, minlength=self.num_cols)
        raise ValueError(f"kind must be 'row' or 'col', got {kind!r}")

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the first broken invariant."""
        indptr, indices = self.indptr, self.indices
        for name, t in (("indptr", indptr), ("indices", indices)):
            if not isinstance(t, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != torch.int64:
                raise ValueError(f"{name} must be int64, got {t.dtype}")
            if t.dim() != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
        if indptr.numel() < 1:
            raise ValueError("indptr must have at least one entry (num_nodes + 1)")
        if int(indptr[0]) != 0:
            raise ValueError(f"indptr[0] = {int(indptr[0])} but must be 0")
        if int(indptr[-1]) != indices.numel():
            raise ValueError(f"indptr[-1] = {int(indptr[-1])} but indices has {indices.numel()} entries")
        step = indptr.diff()
        if step.numel() and bool((step < 0).any()):
            i = _first_bad(step < 0)
            raise ValueError(f"indptr must be non-decreasing: indptr[{i + 1}] = {int(indptr[i + 1])} < "
                             f"indptr[{i}] = {int(indptr[i])}")
        if self.num_cols < 0:
            raise ValueError(f"num_cols = {self.num_cols} must be >= 0")
        if indices.numel():
            if bool((indices < 0).any()):
                e = _first_bad(indices < 0)
                raise ValueError(f"indices[{e}] = {int(indices[e])} is negative")
            if bool((indices >= self.num_cols).any()):
                e = _first_bad(indices >= self.num_cols)
                raise ValueError(f"indices[{e}] = {int(indices[e])} but the pattern has {self.num_cols} columns")
        for store, size, what in ((self.node_data, self.num_nodes, "nodes"),
                                  (self.edge_data, self.num_edges, "edges")):
            for name, t in store.items():
                if not isinstance(t, Tensor):
                    raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
                if t.dim() == 0 or t.shape[0] != size:
                    raise ValueError(f"{name} has shape {tuple(t.shape)} but the graph has {size} {what}")
                _check_finite(name, t)
        for name, t in self.graph_data.items():
            if t.dim() == 0 or t.shape[0] != self.num_graphs:
                raise ValueError(f"{name} has shape {tuple(t.shape)} but the batch has {self.num_graphs} graphs")
        for name, offsets, total in (("ptr", self.ptr, self.num_nodes), ("col_ptr", self.col_ptr, self.num_cols),
                                     ("edge_ptr", self.edge_ptr, self.num_edges)):
            if offsets is None:
                continue
            if offsets.dim() != 1 or offsets.numel() != self.num_graphs + 1:
                raise ValueError(f"{name} must have num_graphs + 1 = {self.num_graphs + 1} entries")
            if int(offsets[0]) != 0 or int(offsets[-1]) != total or bool((offsets.diff() < 0).any()):
                raise ValueError(f"{name} must rise from 0 to {total}, got {offsets.tolist()[:8]}...")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, num_nodes: int = 0, num_cols: int | None = None, **kwargs: Any) -> Graph:
        """A pattern with ``num_nodes`` rows and no edges."""
        num_nodes = _as_count(num_nodes, "num_nodes")
        return cls(torch.zeros(num_nodes + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                   num_cols, **kwargs)

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
        edge_index = _as_index_tensor(edge_index, "edge_index")
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
            _check_finite(name, t)  # before sorting, so the message names the caller's edge position
        if num_edges and bool((edge_index < 0).any()):
            r, e = (edge_index < 0).nonzero()[0].tolist()
            raise ValueError(f"edge_index[{r}, {e}] = {int(edge_index[r, e])} is negative")
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if num_edges else 0
            problem = inferred_nodes_problem(num_nodes, num_edges)
            if problem:
                raise ValueError(f"edge_index: {problem}; pass num_nodes= (and num_cols=) if so many nodes are "
                                 "meant, or renumber the node ids 0..n-1")
        num_nodes = _as_count(num_nodes, "num_nodes")
        cols = num_nodes if num_cols is None else _as_count(num_cols, "num_cols")
        for r, limit, what in ((1, num_nodes, "nodes"), (0, cols, "nodes" if num_cols is None else "columns")):
            if num_edges and bool((edge_index[r] >= limit).any()):
                e = _first_bad(edge_index[r] >= limit)
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
        edge_index = _as_index_tensor(edge_index, "edge_index")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        ptr = getattr(data, "ptr", None)
        if ptr is None:
            ptr = ptr_from_batch(data.batch)
        else:  # the batch's own offsets say how many nodes it has (PyG's num_nodes is inferred from x)
            ptr = _as_index_tensor(ptr, "ptr")
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
                e = _first_bad(crossing)
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

    # ------------------------------------------------------------------ converters
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

    # ------------------------------------------------------------------ structure
    def csc(self) -> tuple[Tensor, Tensor, Tensor]:
        """The transposed pattern, cached: ``(col_indptr [num_cols+1], row_indices [E], edge_id [E])``.

        ``edge_id[t]`` is the CSR position of the t-th CSC entry; entries are sorted by key, then by
        query, so backward passes can walk keys without atomics. A pattern builder that knows the
        transpose without a sort offers it (``offer_plan("csc", build)``, as `patterns.full` does).
        """
        def build() -> tuple[Tensor, Tensor, Tensor]:
            order = torch.sort(self.indices, stable=True).indices
            col_indptr = torch.zeros(self.num_cols + 1, dtype=torch.long, device=self.device)
            col_indptr[1:] = torch.cumsum(torch.bincount(self.indices, minlength=self.num_cols), 0)
            return col_indptr, self.row_index()[order].contiguous(), order

        return self.plan("csc", build)

    # ------------------------------------------------------------------ plans
    def plan(self, kind: str, build: Callable[[], T], key: Hashable = None) -> T:
        """The plan ``kind`` (at ``key``) of this pattern: ``build()`` on the first request, kept after.

        A plan is anything precomputed from the pattern alone (``indptr``, ``indices``, ``num_cols``,
        ``ptr``/``col_ptr``) that later calls reuse: the transpose, a backend's tile or run plan, the row
        chunks of a fused kernel. ``kind`` is one of `PLAN_KINDS` (which says what each holds and who
        builds it); ``key`` tells plans of one kind apart (a tile shape, a chunk count).

        Lifetime: a plan lives as long as this `Graph`. `pattern` shares the plans (both see what either
        builds), `with_data` copies those built so far, `to` and every other new `Graph` start without.
        Plans assume the pattern tensors are never changed in place (no sparsegt code does): build a new
        `Graph` for a new pattern. If a pattern function offered a builder (`offer_plan`), the first
        request runs that one instead of ``build``.
        """
        if kind not in PLAN_KINDS:
            raise ValueError(f"unknown plan kind {kind!r}; the kinds are {sorted(PLAN_KINDS)} (graph.PLAN_KINDS)")
        slot = (kind, key)
        value = self._plans.get(slot)
        if value is None or isinstance(value, _Offered):
            value = (build if value is None else value.build)()
            self._plans[slot] = value
        return value

    def offer_plan(self, kind: str, build: Callable[[], Any], key: Hashable = None) -> None:
        """Leave ``build`` to make the plan ``kind`` (at ``key``) when it is first asked for: for a pattern
        function that knows a plan more cheaply than its general builder (`patterns.full` knows its
        transpose without a sort). ``build`` should hold no reference to the `Graph` (no cycle)."""
        if kind not in PLAN_KINDS:
            raise ValueError(f"unknown plan kind {kind!r}; the kinds are {sorted(PLAN_KINDS)} (graph.PLAN_KINDS)")
        self._plans.setdefault((kind, key), _Offered(build))

    def plans(self) -> dict[tuple[str, Hashable], Any]:
        """The plans built so far, ``{(kind, key): plan}`` (a snapshot; for inspection and tests)."""
        return {slot: value for slot, value in self._plans.items() if not isinstance(value, _Offered)}

    def transpose(self) -> Graph:
        """The key -> query pattern (``num_cols`` rows); edge tensors follow their edges."""
        col_indptr, rows, order = self.csc()
        edge_data = {name: t[order] for name, t in self.edge_data.items()}
        return Graph(col_indptr, rows, self.num_nodes, edge_data=edge_data, ptr=self.col_ptr,
                     col_ptr=self.ptr, edge_ptr=None if self.ptr is None else self._edge_ptr_transposed(),
                     validate=False)

    def _edge_ptr_transposed(self) -> Tensor | None:
        if self.col_ptr is None:
            return None
        col_indptr = self.csc()[0]
        return col_indptr[self.col_ptr]

    def with_data(self, *, node_data: Mapping[str, Tensor] | None = None,
                  edge_data: Mapping[str, Tensor] | None = None,
                  graph_data: Mapping[str, Tensor] | None = None, validate: bool = True) -> Graph:
        """A copy sharing the pattern with extra (or replaced) named tensors, and a copy of the plans built
        so far (`plan`). ``validate=False`` skips checking the new tensors (the caller made them right)."""
        out = Graph(self.indptr, self.indices, self.num_cols, node_data={**self.node_data, **(node_data or {})},
                    edge_data={**self.edge_data, **(edge_data or {})},
                    graph_data={**self.graph_data, **(graph_data or {})}, ptr=self.ptr, col_ptr=self.col_ptr,
                    edge_ptr=self.edge_ptr, validate=validate)
        out._plans = dict(self._plans)
        return out

    def pattern(self) -> Graph:
        """The bare pattern (no tensors), sharing indptr/indices, ptr and the plans (`plan`)."""
        out = Graph(self.indptr, self.indices, self.num_cols, ptr=self.ptr, col_ptr=self.col_ptr,
                    edge_ptr=self.edge_ptr, validate=False)
        out._plans = self._plans
        return out

    def to(self, device: torch.device | str) -> Graph:
        def move(store: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {name: t.to(device) for name, t in store.items()}

        mv = lambda t: None if t is None else t.to(device)
        return Graph(self.indptr.to(device), self.indices.to(device), self.num_cols,
                     node_data=move(self.node_data), edge_data=move(self.edge_data),
                     graph_data=move(self.graph_data), ptr=mv(self.ptr), col_ptr=mv(self.col_ptr),
                     edge_ptr=mv(self.edge_ptr), validate=False)

    # ------------------------------------------------------------------ batching
    @staticmethod
    def batch(graphs: Sequence[Graph]) -> Graph:
        """Disjoint union of graphs (no padding). Every graph must carry the same named tensors."""
        if len(graphs) == 0:
            raise ValueError("Graph.batch needs at least one graph")
        keys = [(sorted(g.node_data), sorted(g.edge_data), sorted(g.graph_data)) for g in graphs]
        for i, k in enumerate(keys):
            if k != keys[0]:
                raise ValueError(f"graph {i} carries tensors {k} but graph 0 carries {keys[0]}; "
                                 "every graph in a batch needs the same fields")
        dev = graphs[0].device
        node_counts = torch.tensor([g.num_nodes for g in graphs], device=dev)
        col_counts = torch.tensor([g.num_cols for g in graphs], device=dev)
        edge_counts = torch.tensor([g.num_edges for g in graphs], device=dev)
        offsets = lambda c: torch.cat([c.new_zeros(1), torch.cumsum(c, 0)])
        ptr, col_ptr, edge_ptr = offsets(node_counts), offsets(col_counts), offsets(edge_counts)
        indices = torch.cat([g.indices + col_ptr[i] for i, g in enumerate(graphs)])
        indptr = torch.cat([graphs[0].indptr[:1]] + [g.indptr[1:] + edge_ptr[i] for i, g in enumerate(graphs)])
        cat = lambda store: {name: torch.cat([getattr(g, store)[name] for g in graphs])
                             for name in getattr(graphs[0], store)}
        return Graph(indptr, indices, int(col_ptr[-1]), node_data=cat("node_data"), edge_data=cat("edge_data"),
                     graph_data=cat("graph_data"), ptr=ptr, col_ptr=col_ptr, edge_ptr=edge_ptr,
                     validate=False)

    def unbatch(self) -> list[Graph]:
        """Split a batch back into its graphs."""
        ptr = self._ptr_or_single().tolist()
        col_ptr = (self.col_ptr if self.col_ptr is not None else torch.tensor([0, self.num_cols])).tolist()
        edge_ptr = (self.edge_ptr if self.edge_ptr is not None else
                    self.indptr[self._ptr_or_single()]).tolist()
        out = []
        for b in range(self.num_graphs):
            n0, n1, c0, c1, e0, e1 = ptr[b], ptr[b + 1], col_ptr[b], col_ptr[b + 1], edge_ptr[b], edge_ptr[b + 1]
            out.append(Graph(self.indptr[n0:n1 + 1] - e0, self.indices[e0:e1] - c0, c1 - c0,
                             node_data={k: t[n0:n1] for k, t in self.node_data.items()},
                             edge_data={k: t[e0:e1] for k, t in self.edge_data.items()},
                             graph_data={k: t[b:b + 1] for k, t in self.graph_data.items()}, validate=False))
        return out

    def __repr__(self) -> str:
        parts = [f"num_nodes={self.num_nodes}", f"num_edges={self.num_edges}"]
        if self.num_cols != self.num_nodes:
            parts.append(f"num_cols={self.num_cols}")
        if self.ptr is not None:
            parts.append(f"num_graphs={self.num_graphs}")
        for store in (self.node_data, self.edge_data, self.graph_data):
            parts += [f"{k}={list(t.shape)}" for k, t in store.items()]
        return f"Graph({', '.join(parts)})"


def ptr_from_batch(batch: Any, num_graphs: int | None = None, num_nodes: int | None = None) -> Tensor:
    """[B+1] node offsets of the graphs of a batch from PyG's ``batch`` vector [N] (graph of every node).

    The nodes of a graph must be contiguous and the graphs in order (as PyG batches are). ``num_graphs``
    (default: 1 + the largest entry) keeps trailing empty graphs; ``num_nodes`` checks the length.
    """
    batch = _as_index_tensor(batch, "batch")
    if batch.dim() != 1:
        raise ValueError(f"batch must be 1-D [N] (the graph of every node), got shape {tuple(batch.shape)}")
    if num_nodes is not None and batch.numel() != num_nodes:
        raise ValueError(f"batch has {batch.numel()} entries but there are {num_nodes} nodes")
    if batch.numel():
        if bool((batch < 0).any()):
            i = _first_bad(batch < 0)
            raise ValueError(f"batch[{i}] = {int(batch[i])} is negative")
        step = batch.diff()
        if bool((step < 0).any()):
            i = _first_bad(step < 0)
            raise ValueError(f"batch must be sorted (the nodes of each graph contiguous, graphs in order): "
                             f"batch[{i + 1}] = {int(batch[i + 1])} < batch[{i}] = {int(batch[i])}")
    largest = int(batch[-1]) + 1 if batch.numel() else 0
    num_graphs = largest if num_graphs is None else int(num_graphs)
    if num_graphs < largest:
        raise ValueError(f"num_graphs = {num_graphs} but batch names graph {largest - 1}")
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    ptr[1:] = torch.cumsum(torch.bincount(batch, minlength=num_graphs), 0)
    return ptr


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
