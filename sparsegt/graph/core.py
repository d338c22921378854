"""`Graph`: a sparse query -> key pattern in CSR form, with optional node, edge and graph tensors.

Every attention pattern in sparsegt is a `Graph`. Row ``i`` lists the keys query ``i`` attends to:
``indices[indptr[i]:indptr[i + 1]]``. Rows are queries (``num_nodes`` of them), columns are keys
(``num_cols``; a rectangular pattern is legal: cross-attention, virtual nodes, codebooks). As a sparse
matrix, the pattern is ``A[query, key]``.

Tensors carried along:

- ``node_data``: name -> tensor whose first dimension is ``num_nodes`` (``x`` [N, F], node labels, PEs);
- ``edge_data``: name -> tensor whose first dimension is ``num_edges``, **aligned with CSR order**
  (``edge_attr`` [E, F], RRWP, SPD);
- ``graph_data``: name -> tensor whose first dimension is the number of graphs (graph labels).

This module holds the container and what follows from the pattern itself (degrees, the transpose, copies
that share the pattern). `Graph` takes the rest from one module each: building from and converting to other
formats (`convert`), batches (`batch`), precomputed plans (`plans`), and its invariants (`validate`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from torch import Tensor

from .batch import Batching
from .convert import Converters
from .plans import PlanCache
from .validate import as_count, validate_graph

__all__ = ["Graph"]


class Graph(PlanCache, Converters, Batching):
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
        self.num_cols = self.num_nodes if num_cols is None else as_count(num_cols, "num_cols")
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
        self._plans: dict[tuple[str, Hashable], Any] = {}  # (kind, key) -> plan, or an offered builder (plans.py)
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
        """Raise ValueError naming the first broken invariant (`validate.validate_graph`)."""
        validate_graph(self)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, num_nodes: int = 0, num_cols: int | None = None, **kwargs: Any) -> Graph:
        """A pattern with ``num_nodes`` rows and no edges."""
        num_nodes = as_count(num_nodes, "num_nodes")
        return cls(torch.zeros(num_nodes + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                   num_cols, **kwargs)

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

    def __repr__(self) -> str:
        parts = [f"num_nodes={self.num_nodes}", f"num_edges={self.num_edges}"]
        if self.num_cols != self.num_nodes:
            parts.append(f"num_cols={self.num_cols}")
        if self.ptr is not None:
            parts.append(f"num_graphs={self.num_graphs}")
        for store in (self.node_data, self.edge_data, self.graph_data):
            parts += [f"{k}={list(t.shape)}" for k, t in store.items()]
        return f"Graph({', '.join(parts)})"
