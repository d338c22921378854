"""TEDDY's edge trimming: the score against a plain-Python reading of the paper's formula, exactly the
target fraction kept per graph, deterministic ties, tensors carried along (issue #19)."""

from __future__ import annotations

import math

import pytest
import torch

from sparsegt import Graph
from sparsegt.patterns import kept_edge_counts, teddy_edge_scores, trim_edges


def undirected(pairs: list[tuple[int, int]], n: int, **kwargs) -> Graph:
    both = pairs + [(v, u) for u, v in pairs if u != v]
    return Graph.from_edge_index(torch.tensor(both).T, n, **kwargs)


def random_graph(n: int, p: float, seed: int, loops: bool = False) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    pairs = [(u, v) for u in range(n) for v in range(u + 1, n) if torch.rand(1, generator=gen) < p]
    pairs += [(u, u) for u in range(n) if loops and u % 3 == 0]
    x = torch.randn(n, 3, generator=gen)
    g = undirected(pairs or [(0, 1)], n)
    return g.with_data(node_data={"x": x}, edge_data={"edge_attr": torch.arange(g.num_edges).float()[:, None]})


def python_scores(g: Graph) -> list[float]:
    """T_uv = g_u g_v with g_v = (1/d_v^2) sum_{u in N(v)} d_u^-1/2, written edge by edge."""
    rows, cols = g.row_index().tolist(), g.indices.tolist()
    neighbours: dict[int, list[int]] = {v: [] for v in range(g.num_nodes)}
    for r, c in zip(rows, cols, strict=True):
        if r != c:
            neighbours[r].append(c)
    deg = {v: len(ns) for v, ns in neighbours.items()}
    gv = {v: (sum(deg[u] ** -0.5 for u in ns) / deg[v] ** 2 if deg[v] else 0.0) for v, ns in neighbours.items()}
    return [math.inf if r == c else gv[r] * gv[c] for r, c in zip(rows, cols, strict=True)]


def test_scores_equal_the_formula_edge_by_edge():
    g = random_graph(12, 0.3, seed=1, loops=True)
    assert torch.allclose(teddy_edge_scores(g), torch.tensor(python_scores(g), dtype=torch.float64))


def test_low_degree_edges_score_higher_than_hub_edges():
    # a star (hub 0 with 5 leaves) and a separate path 6-7-8: the path's edges outrank the hub's
    g = undirected([(0, i) for i in range(1, 6)] + [(6, 7), (7, 8)], 9)
    score = teddy_edge_scores(g)
    hub = (g.row_index() == 0) | (g.indices == 0)
    assert float(score[~hub].min()) > float(score[hub].max())


@pytest.mark.parametrize("keep_fraction", [0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
def test_keeps_exactly_the_target_fraction_of_every_graph(keep_fraction):
    graphs = [random_graph(n, 0.35, seed=n, loops=n % 2 == 0) for n in (5, 9, 14, 20)]
    batch = Graph.batch(graphs)
    out = trim_edges(batch, keep_fraction)
    out.validate()
    want = [math.floor(keep_fraction * g.num_edges + 0.5) for g in graphs]
    assert kept_edge_counts(batch, keep_fraction).tolist() == want
    assert out.indptr[out.ptr].diff().tolist() == want
    assert torch.equal(out.ptr, batch.ptr)


def test_each_graph_keeps_its_best_scores_and_batching_changes_nothing():
    graphs = [random_graph(n, 0.4, seed=10 + n, loops=True) for n in (8, 11)]
    out = trim_edges(Graph.batch(graphs), 0.6).unbatch()
    for g, kept in zip(graphs, out, strict=True):
        alone = trim_edges(g, 0.6)
        assert torch.equal(alone.indptr, kept.indptr) and torch.equal(alone.indices, kept.indices)
        score = teddy_edge_scores(g)
        keys = g.row_index() * g.num_nodes + g.indices
        is_kept = torch.isin(keys, kept.row_index() * g.num_nodes + kept.indices)
        assert float(score[is_kept].min()) >= float(score[~is_kept].max())


def test_ties_are_broken_by_node_pair_then_position_and_the_result_is_deterministic():
    # a cycle: every edge has the same score; the kept ones are the smallest node pairs, both directions
    n = 6
    g = undirected([(i, (i + 1) % n) for i in range(n)], n)
    out = trim_edges(g, 4 / 12)
    kept = sorted(zip(out.row_index().tolist(), out.indices.tolist(), strict=True))
    assert kept == [(0, 1), (0, 5), (1, 0), (5, 0)]
    again = trim_edges(g, 4 / 12)
    assert torch.equal(again.indices, out.indices) and torch.equal(again.indptr, out.indptr)


def test_self_loops_go_first_and_tensors_follow():
    g = random_graph(10, 0.5, seed=3, loops=True)
    loops = int((g.row_index() == g.indices).sum())
    out = trim_edges(g, (loops + 1) / g.num_edges)
    assert int((out.row_index() == out.indices).sum()) == loops
    assert torch.equal(out.x, g.x)
    # edge_attr holds each entry's original CSR position: it must still name the same (row, col)
    position = out.edge_attr[:, 0].long()
    assert torch.equal(g.row_index()[position], out.row_index()) and torch.equal(g.indices[position], out.indices)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", True])
def test_a_bad_fraction_is_a_value_error(bad):
    with pytest.raises(ValueError, match="keep_fraction"):
        trim_edges(random_graph(5, 0.5, seed=0), bad)


def test_a_rectangular_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="square"):
        teddy_edge_scores(Graph.from_edge_index(torch.tensor([[0, 2], [0, 1]]), 2, num_cols=3))
