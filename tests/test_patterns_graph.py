"""Graph patterns and composition against dense boolean masks built independently here."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.patterns import (
    add_self_loops,
    causal,
    expander,
    full,
    intersect,
    khop,
    subsample,
    union,
    virtual_nodes,
    virtual_token_graph,
)


def dense(p: Graph) -> torch.Tensor:
    m = torch.zeros(p.num_nodes, p.num_cols, dtype=torch.bool)
    m[p.row_index(), p.indices] = True
    return m


def assert_sorted_csr(p: Graph) -> None:
    p.validate()
    row = p.row_index()
    key = row * max(p.num_cols, 1) + p.indices
    assert bool((key[1:] > key[:-1]).all()), "entries must be sorted and unique"


def random_graph(n: int, m: int, seed: int) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    if n == 0:
        return Graph.empty(0)
    ei = torch.randint(0, n, (2, m), generator=gen)
    ei = torch.cat([ei, ei.flip(0)], 1)
    return Graph.from_edge_index(ei, n, remove_duplicates=True)


def make_batch(sizes=(3, 5, 1, 4), seed=0) -> Graph:
    return Graph.batch([random_graph(n, 2 * n, seed + i) for i, n in enumerate(sizes)])


def block_mask(sizes) -> torch.Tensor:
    n = sum(sizes)
    m = torch.zeros(n, n, dtype=torch.bool)
    start = 0
    for s in sizes:
        m[start:start + s, start:start + s] = True
        start += s
    return m


def test_full_matches_block_diagonal_ones():
    sizes = (3, 5, 1, 4)
    b = make_batch(sizes)
    p = full(b)
    assert_sorted_csr(p)
    assert torch.equal(dense(p), block_mask(sizes))
    assert torch.equal(p.ptr, b.ptr) and p.edge_ptr.tolist() == [0, 9, 34, 35, 51]
    assert [g.num_edges for g in p.unbatch()] == [9, 25, 1, 16]


@pytest.mark.parametrize("n", [0, 1])
def test_full_empty_and_single(n):
    p = full(Graph.empty(n))
    assert_sorted_csr(p)
    assert p.num_edges == n * n


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khop_equals_dense_matrix_powers(k):
    b = make_batch((6, 7, 2), seed=3)
    a = dense(b).double()
    reach = torch.zeros_like(a)
    power = torch.eye(a.shape[0], dtype=torch.float64)
    hop = torch.full(a.shape, -1, dtype=torch.long)
    for step in range(1, k + 1):
        power = power @ a
        new = (power > 0) & (reach == 0)
        hop[new] = step
        reach = reach + (power > 0).double()
    p = khop(b, k)
    assert_sorted_csr(p)
    assert torch.equal(dense(p), reach > 0)
    assert torch.equal(p.edge_data["hop"], hop[p.row_index(), p.indices])
    assert torch.equal(p.ptr, b.ptr)
    assert int((dense(p) & ~block_mask((6, 7, 2))).sum()) == 0


def test_khop_rejects_bad_k():
    with pytest.raises(ValueError, match="k"):
        khop(make_batch(), 0)


def assert_same_pattern(a: Graph, b: Graph) -> None:
    for name in ("indptr", "indices", "ptr", "col_ptr", "edge_ptr"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y), name
    assert sorted(a.edge_data) == sorted(b.edge_data)
    for name in a.edge_data:
        assert torch.equal(a.edge_data[name], b.edge_data[name])


def test_builders_take_pyg_edge_index_batch_and_ptr():
    b = make_batch((6, 0, 7, 1, 2), seed=5)
    edge_index, batch_vector = b.to_edge_index(), b.batch_index
    assert_same_pattern(full(batch_vector), full(b))
    assert_same_pattern(full(ptr=b.ptr), full(b))
    assert_same_pattern(full(batch=batch_vector), full(b))
    assert_same_pattern(expander(batch_vector, 4, seed=2), expander(b, 4, seed=2))
    assert_same_pattern(expander(None, 4, ptr=b.ptr), expander(b, 4))
    assert_same_pattern(khop(edge_index, 2, batch=batch_vector), khop(b, 2))
    assert_same_pattern(khop(edge_index.flip(1), 2, ptr=b.ptr), khop(b, 2))  # edge order does not matter
    one = random_graph(5, 8, 1)
    assert_same_pattern(khop(one.to_edge_index(), 3, num_nodes=5), khop(one, 3))


def test_builders_name_what_is_wrong_with_pyg_inputs():
    b = make_batch((3, 4))
    with pytest.raises(ValueError, match="batch must be sorted"):
        full(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"edge \(0 -> 4\) joins graph 0 and graph 1"):
        khop(torch.tensor([[0], [4]]), 2, batch=b.batch_index)
    with pytest.raises(ValueError, match="khop needs the edges"):
        khop(b.batch_index, 2)
    with pytest.raises(ValueError, match="batch \\[N\\] or ptr \\[B\\+1\\], not both"):
        full(b.batch_index, ptr=b.ptr)
    with pytest.raises(ValueError, match="got a Graph and PyG's batch"):
        full(b, ptr=b.ptr)


def test_expander_regular_within_graph_and_batch_independent():
    sizes = (10, 30, 1, 30, 2)
    b = make_batch(sizes)
    p = expander(b, 4, seed=7)
    assert_sorted_csr(p)
    m = dense(p)
    assert torch.equal(m, m.T), "both directions"
    assert not bool(m.diagonal().any()), "no self-loops"
    assert int((m & ~block_mask(sizes)).sum()) == 0, "never across graphs"
    assert int(p.degree().max()) <= 4
    parts = p.unbatch()
    # graph 1 and graph 3 have the same size: same expander, whatever their position
    assert torch.equal(parts[1].indices, parts[3].indices)
    alone = expander(Graph.empty(30), 4, seed=7)
    assert torch.equal(alone.indices, parts[1].indices) and torch.equal(alone.indptr, parts[1].indptr)
    # a large graph is (nearly) 4-regular
    big = expander(Graph.empty(500), 4, seed=1)
    assert float((big.degree() == 4).float().mean()) > 0.95
    assert not torch.equal(expander(Graph.empty(30), 4, seed=8).indices, alone.indices)


def test_expander_rejects_odd_degree():
    with pytest.raises(ValueError, match="even"):
        expander(make_batch(), 3)


@pytest.mark.parametrize("nv", [1, 2])
def test_virtual_nodes_layout(nv):
    sizes = (3, 1, 4)
    b = make_batch(sizes)
    p = virtual_nodes(b, nv)
    assert_sorted_csr(p)
    n, total = sum(sizes), sum(sizes) + len(sizes) * nv
    expect = torch.zeros(total, total, dtype=torch.bool)
    start = 0
    for g, s in enumerate(sizes):
        v = slice(n + g * nv, n + (g + 1) * nv)
        expect[start:start + s, v] = True
        expect[v, start:start + s] = True
        expect[v, v] = True
        start += s
    assert torch.equal(dense(p), expect)
    virtual = [g for g in range(3) for _ in range(nv)]
    assert virtual_token_graph(b, nv).tolist() == [0, 0, 0, 1, 2, 2, 2, 2] + virtual


def test_union_sources_and_intersect():
    b = make_batch((5, 6))
    a, e = b, expander(b, 2, seed=1)
    u, (src_a, src_e) = union(a, e, return_sources=True)
    assert_sorted_csr(u)
    assert torch.equal(dense(u), dense(a) | dense(e))
    um = torch.zeros_like(dense(u))
    um[u.row_index()[src_a], u.indices[src_a]] = True
    assert torch.equal(um, dense(a))
    um.zero_()
    um[u.row_index()[src_e], u.indices[src_e]] = True
    assert torch.equal(um, dense(e))
    assert torch.equal(u.ptr, b.ptr) and u.edge_ptr is not None
    # positions carry edge features onto the union entries
    feat = torch.arange(a.num_edges, dtype=torch.float64)[:, None] + 1
    u2, positions = union(a, e, return_positions=True)
    carried = torch.zeros(u2.num_edges, 1, dtype=torch.float64).index_add(0, positions[0], feat)
    assert torch.equal(u2.row_index()[positions[0]], a.row_index())
    assert torch.equal(u2.indices[positions[0]], a.indices)
    assert torch.equal(carried[src_a], feat) and bool((carried[~src_a] == 0).all())
    _, both_sources, both_positions = union(a, e, return_sources=True, return_positions=True)
    assert torch.equal(both_sources[1], src_e) and torch.equal(both_positions[1], positions[1])
    inter = intersect(a, e)
    assert_sorted_csr(inter)
    assert torch.equal(dense(inter), dense(a) & dense(e))


def test_union_removes_duplicates_and_rejects_shapes():
    dup = Graph.from_edge_index(torch.tensor([[0, 0, 1], [1, 1, 0]]), 2)
    assert union(dup).num_edges == 2
    with pytest.raises(ValueError, match="shape"):
        union(Graph.empty(2), Graph.empty(3))


def test_add_self_loops_and_causal():
    b = make_batch((4, 5))
    looped = add_self_loops(b)
    assert torch.equal(dense(looped), dense(b) | torch.eye(9, dtype=torch.bool))
    c = causal(full(b))
    expect = block_mask((4, 5)) & torch.ones(9, 9, dtype=torch.bool).tril()
    assert torch.equal(dense(c), expect)
    # a non-batched rectangular pattern: keep j <= i
    rect = Graph.from_edge_index(torch.tensor([[0, 3, 2, 1], [1, 0, 2, 2]]), 3, num_cols=4)
    assert torch.equal(dense(causal(rect)), dense(rect) & torch.ones(3, 4, dtype=torch.bool).tril())


def test_causal_never_leaks_across_graphs():
    # a pattern whose entries cross graphs: causal keeps only same-graph, non-future keys
    b = make_batch((3, 3))
    crossing = Graph(full(Graph.empty(6)).indptr, full(Graph.empty(6)).indices, ptr=b.ptr)
    c = causal(crossing)
    assert torch.equal(dense(c), block_mask((3, 3)) & torch.ones(6, 6, dtype=torch.bool).tril())


def test_subsample_keeps_fraction_and_self_loops():
    p = add_self_loops(full(Graph.empty(60)))
    s = subsample(p, 0.25, seed=0)
    assert_sorted_csr(s)
    assert bool((dense(s) <= dense(p)).all())
    assert bool(dense(s).diagonal().all())
    frac = (s.num_edges - 60) / (p.num_edges - 60)
    assert 0.2 < frac < 0.3
    assert torch.equal(subsample(p, 0.25, seed=0).indices, s.indices)
    with pytest.raises(ValueError, match="p"):
        subsample(p, 0.0)
