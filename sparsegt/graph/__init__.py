"""`Graph`: a sparse query -> key pattern in CSR form, with optional node, edge and graph tensors.

Every attention pattern in sparsegt is a `Graph`: row ``i`` lists the keys query ``i`` attends to,
``indices[indptr[i]:indptr[i + 1]]``. One concept a module:

- `core`: the `Graph` container (CSR pattern, node/edge/graph tensors), degrees, the transpose, copies;
- `convert`: from and to an edge index, scipy, networkx, PyG (``Graph.from_edge_index``, ``Graph.to_pyg``);
- `batch`: disjoint unions without padding (``Graph.batch``, ``Graph.unbatch``, `ptr_from_batch`);
- `plans`: what code precomputes from a pattern, kept on it (``Graph.plan``, `PLAN_KINDS`);
- `validate`: the invariants, as ValueErrors that name the problem (``Graph.validate``).

Imports point down that list (``core`` -> ``convert`` -> ``batch`` -> ``validate``; ``plans`` stands alone).
"""

from .batch import ptr_from_batch
from .core import Graph
from .plans import PLAN_KINDS
from .validate import INFERRED_NODES_LIMIT, inferred_nodes_problem

__all__ = ["Graph", "PLAN_KINDS", "INFERRED_NODES_LIMIT", "inferred_nodes_problem", "ptr_from_batch"]
