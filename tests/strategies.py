"""Hypothesis strategies for attention patterns, including the nasty ones.

Empty graphs, isolated rows, self-loops, duplicate edges, one huge row, rectangular patterns.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from sparsegt import Graph


@st.composite
def patterns(draw, max_rows: int = 12, max_cols: int = 12, max_edges: int = 60, rectangular: bool = True,
             allow_duplicates: bool = True) -> Graph:
    num_rows = draw(st.integers(0, max_rows))
    num_cols = draw(st.integers(0, max_cols)) if rectangular else num_rows
    if num_rows == 0 or num_cols == 0:
        return Graph.empty(num_rows, num_cols)
    shape = draw(st.sampled_from(["random", "hub", "self_loops", "isolated"]))
    if shape == "hub":  # one row with many edges, the others almost none
        hub = draw(st.integers(0, num_rows - 1))
        rows = [hub] * draw(st.integers(1, max_edges))
        cols = [draw(st.integers(0, num_cols - 1)) for _ in rows]
    else:
        n = draw(st.integers(0, max_edges))
        rows = draw(st.lists(st.integers(0, num_rows - 1), min_size=n, max_size=n))
        cols = draw(st.lists(st.integers(0, num_cols - 1), min_size=n, max_size=n))
        if shape == "self_loops":
            m = min(num_rows, num_cols)
            rows += list(range(m))
            cols += list(range(m))
        if shape == "isolated":  # leave the upper half of the rows empty
            keep = [i for i, r in enumerate(rows) if r < num_rows // 2]
            rows, cols = [rows[i] for i in keep], [cols[i] for i in keep]
    edge_index = torch.tensor([cols, rows], dtype=torch.long).reshape(2, -1)
    return Graph.from_edge_index(edge_index, num_rows, num_cols=num_cols,
                                 remove_duplicates=not allow_duplicates)


def random_qkv(pattern: Graph, heads: int, dim: int, dtype=torch.float64, seed: int = 0, logit_scale: float = 1.0,
               value_dim: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(pattern.num_nodes, heads, dim, dtype=dtype, generator=gen) * logit_scale
    k = torch.randn(pattern.num_cols, heads, dim, dtype=dtype, generator=gen)
    v = torch.randn(pattern.num_cols, heads, value_dim or dim, dtype=dtype, generator=gen)
    bias = torch.randn(pattern.num_edges, heads, dtype=dtype, generator=gen)
    gate = torch.randn(pattern.num_edges, heads, dim, dtype=dtype, generator=gen)
    return q, k, v, bias, gate


@st.composite
def run_patterns(draw, max_rows: int = 14, max_cols: int = 16, max_run: int = 16) -> Graph:
    """Patterns whose every row is a run of consecutive keys ``lo .. lo+n-1``: empty graphs, empty rows,
    single keys, one row over every key, runs that overlap or not (windows, blocks, full per graph)."""
    num_rows = draw(st.integers(0, max_rows))
    num_cols = draw(st.integers(0, max_cols))
    if num_rows == 0 or num_cols == 0:
        return Graph.empty(num_rows, num_cols)
    rows, cols = [], []
    huge = draw(st.integers(-1, num_rows - 1))  # -1: no row over every key
    for i in range(num_rows):
        if i == huge:
            lo, n = 0, num_cols
        else:
            lo = draw(st.integers(0, num_cols - 1))
            n = draw(st.integers(0, min(max_run, num_cols - lo)))
        rows += [i] * n
        cols += list(range(lo, lo + n))
    edge_index = torch.tensor([cols, rows], dtype=torch.long).reshape(2, -1)
    return Graph.from_edge_index(edge_index, num_rows, num_cols=num_cols)
