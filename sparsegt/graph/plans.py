"""Plans: what code precomputes from a pattern alone (its transpose, a backend's work plan, the row chunks of
a fused kernel), kept on the `Graph` through one call, `Graph.plan`, under a kind named in `PLAN_KINDS`. A plan
lives as long as its `Graph` (see `PlanCache.plan` for the lifetime).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = ["PLAN_KINDS", "PlanCache"]

T = TypeVar("T")

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


class PlanCache:
    """The plans of a pattern (`Graph`'s share of this module; `Graph.__init__` makes ``_plans`` empty).

    ``_plans``: ``{(kind, key): plan}``, or an `_Offered` builder where a pattern function left one."""

    _plans: dict[tuple[str, Hashable], Any]

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
