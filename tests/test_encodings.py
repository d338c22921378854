"""Encodings: LapPE, RWSE, RRWP, SPD, degree, encoders, cache — against closed forms and dense oracles."""

from __future__ import annotations

import itertools
import math
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from sparsegt import Graph
from sparsegt.encodings import (
    LapPEEncoder,
    RRWPLinearEncoder,
    RWSEEncoder,
    SPDBias,
    add_encodings,
    degree_features,
    laplacian_pe,
    log_degree,
    normalized_laplacian,
    precompute,
    random_walk_matrix,
    relative,
    rrwp,
    rrwp_node,
    rwse,
    rwse_estimate,
    shortest_path_distance,
)
from sparsegt.encodings.adjacency import adjacency
from sparsegt.encodings.laplacian import laplacian_pe_sparse


def nx_graph(g: nx.Graph, weights: bool = False, seed: int = 0) -> Graph:
    graph = Graph.from_networkx(g)
    if weights:  # symmetric random weights: same weight on (i, j) and (j, i)
        rng = np.random.default_rng(seed)
        row, col = graph.row_index().numpy(), graph.indices.numpy()
        lo, hi = np.minimum(row, col), np.maximum(row, col)
        table = rng.uniform(0.1, 3.0, size=(graph.num_nodes, graph.num_nodes))
        graph = graph.with_data(edge_data={"edge_weight": torch.from_numpy(table[lo, hi])})
    return graph


def dense_walk(graph: Graph) -> np.ndarray:
    a = adjacency(graph).toarray()
    d = a.sum(1, keepdims=True)
    return np.divide(a, d, out=np.zeros_like(a), where=d > 0)


def disconnected_graph() -> Graph:
    """A path, a triangle, two isolated nodes and a node with only a self-loop (nodes interleaved)."""
    g = nx.Graph()
    g.add_nodes_from(range(11))
    g.add_edges_from([(0, 3), (3, 5), (5, 8), (1, 4), (4, 7), (7, 1), (10, 10)])
    return Graph.from_networkx(g)


# ---------------------------------------------------------------------------------------------- LapPE
@pytest.mark.parametrize("n", [6, 9, 40])
def test_laplacian_eigenvalues_closed_forms(n):
    k = min(n, 12)
    cases = {
        "cycle": (nx.cycle_graph(n), 1 - np.cos(2 * np.pi * np.arange(n) / n)),
        "path": (nx.path_graph(n), 1 - np.cos(np.pi * np.arange(n) / (n - 1))),
        "complete": (nx.complete_graph(n), np.r_[0.0, np.full(n - 1, n / (n - 1))]),
    }
    for name, (g, expected) in cases.items():
        vec, val, mask = laplacian_pe(nx_graph(g), k)
        np.testing.assert_allclose(val[0].numpy(), np.sort(expected)[:k], atol=1e-5, err_msg=name)
        assert (val == val[0]).all() and mask.all()
        lap = normalized_laplacian(nx_graph(g)).toarray()
        v = vec.double().numpy()
        np.testing.assert_allclose(lap @ v, v * val[0].double().numpy(), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-5, err_msg=name)


def test_laplacian_sparse_solver_matches_closed_form_and_dense():
    n = 300
    g = nx_graph(nx.cycle_graph(n))
    vec, val, count = laplacian_pe_sparse(adjacency(g), 5, dense_max_nodes=0)
    np.testing.assert_allclose(val, np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))[:5], atol=1e-7)
    assert count == 5
    rnd = nx_graph(nx.gnp_random_graph(200, 0.05, seed=3), weights=True)
    s_vec, s_val, s_count = laplacian_pe_sparse(adjacency(rnd), 6, dense_max_nodes=0)
    d_vec, d_val, d_mask = laplacian_pe(rnd, 6)
    np.testing.assert_allclose(s_val, d_val[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(s_vec, d_vec.numpy(), atol=1e-3)  # canonical signs: same vectors
    lap = normalized_laplacian(rnd).toarray()  # weighted eigen-equation
    np.testing.assert_allclose(lap @ s_vec, s_vec * s_val, atol=1e-6)
    assert s_count == 6 and d_mask.all()


def test_laplacian_padding_mask_and_no_nan():
    tiny = nx_graph(nx.path_graph(3))
    vec, val, mask = laplacian_pe(tiny, 5)
    assert mask[:, :3].all() and not mask[:, 3:].any()
    assert (vec[:, 3:] == 0).all() and (val[:, 3:] == 0).all()
    vec, val, mask = laplacian_pe(tiny, 5, skip_trivial=True)
    assert mask[:, :2].all() and not mask[:, 2:].any()
    np.testing.assert_allclose(val[0, :2].numpy(), [1.0, 2.0], atol=1e-6)
    for k in (1, 4, 20):
        out = laplacian_pe(Graph.empty(1), k)
        assert all(torch.isfinite(t.float()).all() for t in out)


def test_laplacian_disconnected_canonical_null_space_dense_and_sparse():
    g = disconnected_graph()
    # components by first node: {0,3,5,8}, {1,4,7}, {2}, {6}, {9}, {10 (self-loop only)}
    vec, val, mask = laplacian_pe(g, 8)
    assert torch.isfinite(vec).all() and mask.all()
    np.testing.assert_allclose(val[0, :6].numpy(), 0.0, atol=1e-7)
    assert (val[0, 6:] > 0.1).all()
    deg = np.array([1, 2, 0, 2, 2, 2, 0, 2, 1, 0, 0], dtype=float)
    first = np.sqrt(deg[[0, 3, 5, 8]]) / np.linalg.norm(np.sqrt(deg[[0, 3, 5, 8]]))
    np.testing.assert_allclose(vec[[0, 3, 5, 8], 0].numpy(), first, atol=1e-6)
    np.testing.assert_allclose(vec[[1, 4, 7], 1].numpy(), np.full(3, 1 / math.sqrt(3)), atol=1e-6)
    for col, node in zip((2, 3, 4, 5), (2, 6, 9, 10), strict=True):
        assert vec[node, col] == 1 and vec[:, col].abs().sum() == 1
    s_vec, s_val, s_count = laplacian_pe_sparse(adjacency(g), 8, dense_max_nodes=0)
    np.testing.assert_allclose(s_val, val[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(s_vec[:, :6], vec[:, :6].numpy(), atol=1e-6)
    _, val_nt, mask_nt = laplacian_pe(g, 8, skip_trivial=True)
    assert mask_nt[0].sum() == 11 - 6 and (val_nt[0, :5] > 0.1).all()


def test_combinatorial_laplacian_dense_sparse_and_eigen_equation():
    """normalization="none": L = D - A (GraphGPS's laplacian_norm: none); trivial vector 1/sqrt(n) per component."""
    rnd = nx_graph(nx.gnp_random_graph(60, 0.1, seed=5), weights=True)
    a = adjacency(rnd).toarray()
    lap = np.diag(a.sum(1)) - a
    vec, val, mask = laplacian_pe(rnd, 7, normalization="none")
    expected = np.linalg.eigvalsh(lap)[:7]
    np.testing.assert_allclose(val[0].numpy(), expected, atol=1e-4, rtol=1e-5)
    v = vec.double().numpy()
    np.testing.assert_allclose(lap @ v, v * val[0].double().numpy(), atol=1e-3)
    s_vec, s_val, _ = laplacian_pe_sparse(adjacency(rnd), 7, dense_max_nodes=0, normalization="none")
    np.testing.assert_allclose(s_val, expected, atol=1e-6)
    np.testing.assert_allclose(s_vec, v, atol=1e-3)  # canonical signs: same vectors
    g = disconnected_graph()
    vec, val, _ = laplacian_pe(g, 8, normalization="none")
    np.testing.assert_allclose(vec[[1, 4, 7], 1].numpy(), np.full(3, 1 / math.sqrt(3)), atol=1e-6)
    np.testing.assert_allclose(vec[[0, 3, 5, 8], 0].numpy(), np.full(4, 0.5), atol=1e-6)
    s_vec, s_val, _ = laplacian_pe_sparse(adjacency(g), 8, dense_max_nodes=0, normalization="none")
    np.testing.assert_allclose(s_val, val[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        laplacian_pe(g, 2, normalization="rw")


def test_add_encodings_normalization_is_part_of_the_cache_key(tmp_path):
    graphs = [nx_graph(nx.gnp_random_graph(n, 0.3, seed=n)) for n in (7, 9, 9)]
    sym = add_encodings(graphs, lap_pe=3, rwse=2, cache_key="k", cache_dir=tmp_path)
    none = add_encodings(graphs, lap_pe=3, rwse=2, cache_key="k", cache_dir=tmp_path, lap_normalization="none")
    for g, s_, n_ in zip(graphs, sym, none, strict=True):
        torch.testing.assert_close(n_.node_data["lap_val"], laplacian_pe(g, 3, normalization="none")[1])
        torch.testing.assert_close(s_.node_data["lap_val"], laplacian_pe(g, 3)[1])
        torch.testing.assert_close(n_.node_data["rwse"], s_.node_data["rwse"])  # RWSE does not depend on it


# ---------------------------------------------------------------------------------------------- RWSE
def test_rwse_even_cycle_closed_form():
    n = 10
    out = rwse(nx_graph(nx.cycle_graph(n)), 8)
    expected = [math.comb(t, t // 2) / 2**t if t % 2 == 0 else 0.0 for t in range(1, 9)]
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (n, 1)), atol=1e-6)
    assert (out[:, 0::2] == 0).all()


@pytest.mark.parametrize("method", ["dense", "exact"])
def test_rwse_weighted_is_probability_and_matches_powers(method):
    for directed in (False, True):
        if directed:  # a directed weighted graph with self-loops and a sink
            gen = torch.Generator().manual_seed(1)
            edge_index = torch.randint(0, 25, (2, 90), generator=gen)
            graph = Graph.from_edge_index(edge_index, 26,
                                          edge_data={"edge_weight": torch.rand(90, generator=gen) * 5})
        else:
            graph = nx_graph(nx.gnp_random_graph(30, 0.2, seed=2), weights=True)
        p = dense_walk(graph)
        power = np.eye(graph.num_nodes)
        expected = []
        has_edges = np.asarray(adjacency(graph).sum(1)).ravel() > 0
        for _ in range(9):
            power = power @ p
            if not directed:  # rows of P^t sum to one with edge weights
                np.testing.assert_allclose(power.sum(1)[has_edges], 1.0, atol=1e-12)
            expected.append(np.diag(power))
        out = rwse(graph, 9, method=method)
        np.testing.assert_allclose(out.numpy(), np.stack(expected, 1), atol=1e-6)
        assert out.min() >= 0 and out.max() <= 1


def test_random_walk_matrix_rows_sum_to_one_with_weights():
    graph = nx_graph(nx.gnp_random_graph(40, 0.15, seed=4), weights=True)
    p = random_walk_matrix(adjacency(graph)).toarray()
    has = adjacency(graph).toarray().sum(1) > 0
    np.testing.assert_allclose(np.linalg.matrix_power(p, 7).sum(1)[has], 1.0, atol=1e-12)


def test_rwse_estimate_within_its_standard_error():
    graph = nx_graph(nx.random_regular_graph(6, 400, seed=0))
    exact = rwse(graph, 8, method="exact").double().numpy()
    est, stderr = rwse_estimate(adjacency(graph), 8, num_probes=256, seed=1)
    np.testing.assert_allclose(est[:, :4], exact[:, :4], atol=1e-6)  # exact columns (t <= 4 via P^2)
    assert (stderr[:, :4] == 0).all() and (stderr[:, 4:] > 0).all()
    z = np.abs(est[:, 4:] - exact[:, 4:]) / np.maximum(stderr[:, 4:], 1e-12)
    assert (z < 4).mean() > 0.99
    assert np.abs(est - exact).mean() < 0.01
    gen = torch.Generator().manual_seed(3)  # directed, weighted: the exact short-walk columns still exact
    directed = Graph.from_edge_index(torch.randint(0, 60, (2, 300), generator=gen), 60,
                                     edge_data={"edge_weight": torch.rand(300, generator=gen)})
    est, stderr = rwse_estimate(adjacency(directed), 6, num_probes=8)
    np.testing.assert_allclose(est[:, :4], rwse(directed, 6, method="dense")[:, :4].numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------- add_encodings
def test_add_encodings_matches_single_graph_functions_and_cache(tmp_path, monkeypatch):
    graphs = [nx_graph(nx.gnp_random_graph(n, 0.3, seed=n), weights=(n % 2 == 0))
              for n in (3, 12, 12, 25, 26)]
    graphs += [disconnected_graph(), Graph.empty(2)]
    gen = torch.Generator().manual_seed(0)
    graphs.append(Graph.from_edge_index(torch.randint(0, 15, (2, 40), generator=gen), 15))  # directed
    out = add_encodings(graphs, lap_pe=6, rwse=7, cache_key="unit", cache_dir=tmp_path)
    for g, o in zip(graphs, out, strict=True):
        vec, val, mask = laplacian_pe(g, 6)
        torch.testing.assert_close(o.node_data["lap_vec"], vec, atol=1e-5, rtol=0)
        torch.testing.assert_close(o.node_data["lap_val"], val, atol=1e-5, rtol=0)
        assert torch.equal(o.node_data["lap_mask"], mask)
        torch.testing.assert_close(o.node_data["rwse"], rwse(g, 7), atol=1e-6, rtol=0)
        assert o.node_data["lap_vec"].dtype == torch.float32 and o.node_data["rwse"].shape == (g.num_nodes, 7)
    monkeypatch.setattr(precompute, "_compute", lambda *a, **k: (_ for _ in ()).throw(AssertionError("miss")))
    again = add_encodings(graphs, lap_pe=6, rwse=7, cache_key="unit", cache_dir=tmp_path)
    for a, b in zip(out, again, strict=True):
        for name in ("lap_vec", "lap_val", "lap_mask", "rwse"):
            assert torch.equal(a.node_data[name], b.node_data[name])
    with pytest.raises(AssertionError, match="miss"):  # other parameters: another cache entry
        add_encodings(graphs, lap_pe=5, rwse=7, cache_key="unit", cache_dir=tmp_path)


def test_add_encodings_sparse_paths_match_dense_paths():
    graphs = [nx_graph(nx.gnp_random_graph(n, 0.3, seed=n), weights=True) for n in (12, 25, 26)]
    loose = disconnected_graph()
    ones = torch.ones(loose.num_edges, dtype=torch.float64)
    graphs.append(loose.with_data(edge_data={"edge_weight": ones}))
    gen = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, 15, (2, 40), generator=gen)
    weight = torch.rand(40, generator=gen, dtype=torch.float64)
    graphs.append(Graph.from_edge_index(edge_index, 15, edge_data={"edge_weight": weight}))
    dense = add_encodings(graphs, lap_pe=5, rwse=6)
    sparse = add_encodings(graphs, lap_pe=5, rwse=6, dense_max_nodes=10)  # Lanczos + numba for n > 10
    for d, s in zip(dense, sparse, strict=True):
        torch.testing.assert_close(s.node_data["lap_val"], d.node_data["lap_val"], atol=1e-5, rtol=0)
        torch.testing.assert_close(s.node_data["lap_vec"], d.node_data["lap_vec"], atol=1e-3, rtol=0)
        assert torch.equal(s.node_data["lap_mask"], d.node_data["lap_mask"])
        torch.testing.assert_close(s.node_data["rwse"], d.node_data["rwse"], atol=1e-6, rtol=0)


def test_laplacian_pe_of_a_batch_is_per_graph():
    graphs = [nx_graph(nx.cycle_graph(5)), nx_graph(nx.path_graph(4))]
    vec, val, mask = laplacian_pe(Graph.batch(graphs), 3)
    parts = [laplacian_pe(g, 3) for g in graphs]
    torch.testing.assert_close(vec, torch.cat([p[0] for p in parts]))
    torch.testing.assert_close(val, torch.cat([p[1] for p in parts]))


def test_add_encodings_cache_key_reused_for_other_graphs_recomputes(tmp_path):
    a = [nx_graph(nx.cycle_graph(8))]
    b = [nx_graph(nx.path_graph(8))]
    add_encodings(a, rwse=4, cache_key="k", cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = add_encodings(b, rwse=4, cache_key="k", cache_dir=tmp_path)
    assert any("different graphs" in str(w.message) for w in caught)
    torch.testing.assert_close(out[0].node_data["rwse"], rwse(b[0], 4))


def test_add_encodings_bad_input():
    g = nx_graph(nx.cycle_graph(5))
    with pytest.raises(ValueError, match="batch"):
        add_encodings([Graph.batch([g, g])], lap_pe=2)
    with pytest.raises(ValueError, match="square"):
        add_encodings([Graph.empty(3, 4)], rwse=2)
    with pytest.raises(ValueError, match="negative"):
        add_encodings([g.with_data(edge_data={"edge_weight": -torch.ones(g.num_edges)})], rwse=2)
    with pytest.raises(ValueError, match=">= 0"):
        add_encodings([g], lap_pe=-1)


# ---------------------------------------------------------------------------------------------- SPD, RRWP
def full_pattern(batch: Graph) -> Graph:
    from sparsegt.patterns import full

    return full(batch)


def random_batch(seed: int = 0) -> list[Graph]:
    graphs = [nx_graph(nx.gnp_random_graph(n, p, seed=seed + n), weights=True)
              for n, p in ((7, 0.4), (12, 0.2), (1, 0.0), (20, 0.12))]
    loose = disconnected_graph()
    ones = torch.ones(loose.num_edges, dtype=torch.float64)
    graphs.append(loose.with_data(edge_data={"edge_weight": ones}))
    return graphs


def test_spd_matches_networkx_on_a_batch():
    graphs = random_batch()
    batch = Graph.batch([g.pattern() for g in graphs])
    pattern = full_pattern(batch)
    out = shortest_path_distance(batch, pattern, max_distance=4).numpy()
    rows, cols = pattern.row_index().numpy(), pattern.indices.numpy()
    reference = dict(nx.all_pairs_shortest_path_length(nx.Graph(batch.to_networkx())))
    expected = [min(reference[i].get(j, 4), 4) for i, j in zip(rows, cols, strict=True)]
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int64


def test_spd_follows_csr_direction_and_rejects_bad_input():
    # row i lists keys i -> j: the chain 0 -> 1 -> 2
    chain = Graph.from_edge_index(torch.tensor([[1, 2], [0, 1]]), 3)
    pattern = Graph.from_edge_index(torch.tensor([[2, 0], [0, 2]]), 3)
    out = shortest_path_distance(chain, pattern, 5)
    # pattern rows: query 0 -> key 2 (distance 2), query 2 -> key 0 (unreachable -> 5)
    assert out.tolist() == [2, 5]
    with pytest.raises(ValueError, match="same nodes"):
        shortest_path_distance(chain, Graph.empty(4), 3)
    with pytest.raises(ValueError, match="max_distance"):
        shortest_path_distance(chain, pattern, 0)


@pytest.mark.parametrize("sparse_walk", [False, True])
def test_rrwp_equals_dense_matrix_powers_on_a_batch(sparse_walk, monkeypatch):
    if sparse_walk:
        monkeypatch.setattr(relative, "_DENSE_MAX_NODES", 0)
    graphs = random_batch(seed=5)
    batch = Graph.batch(graphs)
    for pattern in (full_pattern(batch), Graph.batch([g.pattern() for g in graphs])):
        out = rrwp(batch, pattern, 6).double().numpy()
        p = dense_walk(batch)
        powers = [np.linalg.matrix_power(p, t) for t in range(6)]
        rows, cols = pattern.row_index().numpy(), pattern.indices.numpy()
        expected = np.stack([m[rows, cols] for m in powers], 1)
        np.testing.assert_allclose(out, expected, atol=1e-5)
    diag = rrwp_node(batch, 6).double().numpy()
    np.testing.assert_allclose(diag, np.stack([np.diag(m) for m in powers], 1), atol=1e-5)


def test_rrwp_cross_graph_entries_are_zero():
    g = nx_graph(nx.cycle_graph(4))
    batch = Graph.batch([g, g])
    everything = Graph.from_edge_index(torch.cartesian_prod(torch.arange(8), torch.arange(8)).t(), 8)
    out = rrwp(batch, everything, 4)
    rows, cols = everything.row_index(), everything.indices
    cross = (rows < 4) != (cols < 4)
    assert (out[cross] == 0).all() and (out[~cross].sum(1) > 0).all()


# ---------------------------------------------------------------------------------------------- degree
def test_degree_features_and_log_degree():
    chain = Graph.from_edge_index(torch.tensor([[1, 2, 2], [0, 1, 0]]), 3)  # edges 1->0, 2->1, 2->0
    in_degree, out_degree = degree_features(chain)
    assert in_degree.tolist() == [2, 1, 0] and out_degree.tolist() == [0, 1, 2]
    torch.testing.assert_close(log_degree(chain), torch.log(torch.tensor([[3.0], [2.0], [1.0]])))


# ---------------------------------------------------------------------------------------------- encoders
def test_lappe_sign_flip_only_in_training_and_mask_ignored():
    torch.manual_seed(0)
    k = 3
    graph = nx_graph(nx.cycle_graph(7))
    vec, val, mask = laplacian_pe(graph, k)
    for kind in ("linear", "deepset"):
        enc = LapPEEncoder(k, 5, kind=kind).eval()
        ref = enc(vec, val, mask)
        torch.testing.assert_close(enc(vec, val, mask), ref)
        flipped = {}
        for signs in itertools.product((-1.0, 1.0), repeat=k):
            flipped[signs] = enc(vec * torch.tensor(signs), val, mask)
        enc.train()
        seen = set()
        for _ in range(30):
            out = enc(vec, val, mask)
            match = [s for s, f in flipped.items() if torch.allclose(out, f, atol=1e-6)]
            assert match, "training output is not a sign flip of the eval output"
            seen.add(match[0])
        assert len(seen) > 1
    # masked (padded) entries do not matter
    tiny = nx_graph(nx.path_graph(2))
    vec, val, mask = laplacian_pe(tiny, 4)
    enc = LapPEEncoder(4, 3, kind="deepset").eval()
    torch.testing.assert_close(enc(vec, val, mask), enc(vec + (~mask) * 7.0, val - (~mask) * 3.0, mask))


def test_lappe_per_graph_signs_with_batch_index():
    torch.manual_seed(1)
    enc = LapPEEncoder(2, 4, sign_flip="graph")
    vec = torch.ones(60, 2)
    batch = torch.arange(60) // 3
    signs = enc.random_signs(vec, batch)
    assert (signs.view(20, 3, 2) == signs.view(20, 3, 2)[:, :1]).all() and signs.abs().eq(1).all()
    assert (signs[::3] != signs[0]).any()  # graphs differ
    per_batch = LapPEEncoder(2, 4, sign_flip="batch").random_signs(vec, batch)
    assert (per_batch == per_batch[0]).all()  # GT / GraphGPS: one sign per eigenvector for the batch


def test_lappe_encoders_compute_gt_and_graphgps_formulas():
    torch.manual_seed(2)
    vec, val = torch.randn(5, 3), torch.rand(5, 3)
    mask = torch.tensor([[True, True, False]] * 5)
    gt = LapPEEncoder(3, 4, kind="linear").eval()  # GT: Linear of the eigenvectors only
    torch.testing.assert_close(gt(vec, val, mask), gt.linear(vec * mask))
    torch.testing.assert_close(gt(vec, val + 5, mask), gt(vec, val, mask))
    gps = LapPEEncoder(3, 16, kind="deepset").eval()  # GraphGPS DeepSet: 2 -> 32 -> 16, ReLU after each
    shapes = [tuple(m.weight.shape) for m in gps.pair_mlp if isinstance(m, torch.nn.Linear)]
    assert shapes == [(32, 2), (16, 32)]
    pairs = torch.stack([vec, val], dim=2)[:, :2]
    first, _, second, _ = gps.pair_mlp
    expected = torch.relu(second(torch.relu(first(pairs)))).sum(1)
    torch.testing.assert_close(gps(vec, val, mask), expected)


def test_other_encoders_shapes():
    assert RWSEEncoder(16, 8)(torch.rand(10, 16)).shape == (10, 8)
    assert RWSEEncoder(16, 8, kind="mlp")(torch.rand(10, 16)).shape == (10, 8)
    bias = SPDBias(5, 4)
    out = bias(torch.tensor([0, 3, 9]))
    assert out.shape == (3, 4)
    with pytest.raises(ValueError, match="negative"):
        bias(torch.tensor([-1]))
    assert RRWPLinearEncoder(21, 16)(torch.rand(30, 21)).shape == (30, 16)
    with pytest.raises(ValueError, match="lap_vec"):
        LapPEEncoder(4, 8)(torch.rand(3, 5), torch.rand(3, 5), torch.ones(3, 5, dtype=torch.bool))


def test_add_encodings_accepts_empty_and_one_node_graphs():
    graphs = [Graph.empty(0), Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2), Graph.empty(1)]
    out = add_encodings(graphs, lap_pe=4, rwse=3)
    assert [g.node_data["lap_vec"].shape for g in out] == [(0, 4), (2, 4), (1, 4)]
    assert [g.node_data["rwse"].shape for g in out] == [(0, 3), (2, 3), (1, 3)]
    assert all(torch.isfinite(g.node_data["lap_vec"]).all() for g in out)
