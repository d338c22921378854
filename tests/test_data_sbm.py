"""PATTERN / CLUSTER against the published statistics and a plain-loop simulation of the notebooks.

The simulation below follows generate_SBM_PATTERN.ipynb / generate_SBM_CLUSTER.ipynb line by line
(python loops, one Bernoulli draw per node pair), independently of the vectorised generator.
"""

import random

import numpy as np
import pytest
import torch

from sparsegt.data import load_dataset, sbm
from sparsegt.data.sbm import ClusterConfig, PatternConfig, generate_cluster, generate_pattern


# ----------------------------------------------------------------------------- notebook simulation (loops)
def block_model(rand, c, p, q):
    n = len(c)
    W = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            prob = p if c[i] == c[j] else q
            if rand.random() < prob:  # np.random.binomial(1, prob) == 1
                W[i][j] = W[j][i] = 1
    return W


def unbalanced_block_model(rand, nb_of_clust, size_min, size_max, p, q):
    c = []
    for r in range(nb_of_clust):
        c += [r] * rand.randrange(size_min, size_max)  # np.random.randint(min, max): max exclusive
    return block_model(rand, c, p, q), c


def random_pattern(rand, n, p):
    W = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if rand.random() < p:
                W[i][j] = W[j][i] = 1
    return W


def notebook_pattern_graph(rand, W0, u0):
    W, c = unbalanced_block_model(rand, 5, 5, 35, 0.5, 0.35)
    u = [rand.randrange(3) for _ in range(len(c))]
    n, n0 = len(W), len(W0)
    V = [[1 if rand.random() < 0.5 else 0 for _ in range(n)] for _ in range(n0)]  # add_pattern, q_pattern
    W_new = [W[i] + [V[k][i] for k in range(n0)] for i in range(n)] + [V[k] + W0[k] for k in range(n0)]
    c = c + [5] * n0
    u = u + u0
    idx = list(range(n + n0))
    rand.shuffle(idx)
    W_new = [[W_new[i][j] for j in idx] for i in idx]
    target = [int(c[i] == 5) for i in idx]
    return sum(map(sum, W_new)), target


def simulate_pattern(seed, num_patterns, per_pattern):
    rand = random.Random(seed)
    nodes, edges, positives = [], [], []
    for _ in range(num_patterns):
        size = rand.randrange(5, 35)
        W0, u0 = random_pattern(rand, size, 0.5), [rand.randrange(3) for _ in range(size)]
        for _ in range(per_pattern):
            num_edges, target = notebook_pattern_graph(rand, W0, u0)
            nodes.append(len(target))
            edges.append(num_edges)
            positives.append(sum(target))
    return np.array(nodes), np.array(edges), np.array(positives)


def simulate_cluster(seed, count):
    rand = random.Random(seed)
    nodes, edges = [], []
    for _ in range(count):
        W, c = unbalanced_block_model(rand, 6, 5, 35, 0.55, 0.25)
        nodes.append(len(c))
        edges.append(sum(map(sum, W)))
    return np.array(nodes), np.array(edges)


# ------------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def pattern_graphs():
    # many pattern instances, few graphs each: the pattern size (5..34) varies per instance, so the
    # mean edge count converges with the number of instances
    return generate_pattern(PatternConfig(num_patterns=500, train_per_pattern=2, eval_per_pattern=1), seed=3)


@pytest.fixture(scope="module")
def cluster_graphs():
    return generate_cluster(ClusterConfig(num_train=600, num_val=100, num_test=100), seed=3)


def test_pattern_matches_published_statistics_and_notebook_simulation(pattern_graphs):
    graphs = pattern_graphs["train"] + pattern_graphs["val"] + pattern_graphs["test"]
    assert len(graphs) == 500 * 4
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.num_edges for g in graphs])
    positive = np.array([int(g.node_data["y"].sum()) for g in graphs])
    # hard bounds of the procedure (5 blocks of 5..34 + a pattern of 5..34) and the published 44-190
    assert nodes.min() >= 30 and nodes.max() <= 204
    assert np.mean((nodes >= 44) & (nodes <= 190)) > 0.99
    assert abs(nodes.mean() - 117) < 4
    sim_nodes, sim_edges, sim_positive = simulate_pattern(seed=11, num_patterns=300, per_pattern=2)
    assert abs(edges.mean() / sim_edges.mean() - 1) < 0.05
    assert abs(nodes.mean() / sim_nodes.mean() - 1) < 0.05
    # label balance: fraction of pattern nodes (~1/6), as in the original
    assert abs(positive.sum() / nodes.sum() - sim_positive.sum() / sim_nodes.sum()) < 0.02
    assert 0.13 < positive.sum() / nodes.sum() < 0.20


def test_pattern_graph_structure():
    cfg = PatternConfig(num_patterns=2, train_per_pattern=15, eval_per_pattern=2)
    graphs = generate_pattern(cfg, seed=0)["train"]
    for g in graphs:
        g.validate()
        dense = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.long)
        dense[g.row_index(), g.indices] = 1
        assert torch.equal(dense, dense.T), "edges are stored in both directions"
        assert int(dense.diagonal().sum()) == 0, "no self-loops"
        assert g.x.dtype == torch.int64 and g.x.shape == (g.num_nodes, 1)
        assert set(g.x.flatten().tolist()) <= {0, 1, 2}
        assert set(g.y.tolist()) <= {0, 1} and g.y.dtype == torch.int64
    # the 15 train graphs of one pattern instance share the planted pattern (same W0, same features)
    def planted(g):
        members = (g.y == 1).nonzero().flatten()
        dense = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.long)
        dense[g.row_index(), g.indices] = 1
        sub = dense[members][:, members]
        return len(members), int(sub.sum()), sorted(g.x[members, 0].tolist()), sorted(sub.sum(1).tolist())
    first = [planted(g) for g in graphs[:15]]
    assert all(p == first[0] for p in first)
    assert planted(graphs[15]) != first[0] or planted(graphs[16]) != first[0]


def test_cluster_matches_published_statistics_and_notebook_simulation(cluster_graphs):
    graphs = cluster_graphs["train"] + cluster_graphs["val"] + cluster_graphs["test"]
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.num_edges for g in graphs])
    assert nodes.min() >= 30 and nodes.max() <= 204
    assert abs(nodes.mean() - 117) < 4
    sim_nodes, sim_edges = simulate_cluster(seed=5, count=400)
    assert abs(edges.mean() / sim_edges.mean() - 1) < 0.05
    labels = torch.cat([g.y for g in graphs])
    balance = torch.bincount(labels, minlength=6).double() / labels.numel()
    assert torch.allclose(balance, torch.full((6,), 1 / 6, dtype=torch.double), atol=0.02)
    for g in graphs[:100]:
        x = g.x[:, 0]
        # exactly one node per cluster r carries feature r + 1, and that node is in cluster r
        for r in range(6):
            assert int((x == r + 1).sum()) == 1
            assert int(g.y[x == r + 1]) == r
        assert int((x == 0).sum()) == g.num_nodes - 6


def test_named_variants_sizes_and_specs(tmp_path):
    pattern = load_dataset("pattern-tiny", root=tmp_path)
    assert (len(pattern.train), len(pattern.val), len(pattern.test)) == (64, 16, 16)
    assert pattern.task.level == "node" and pattern.task.num_outputs == 2
    assert pattern.task.metric == "weighted_accuracy"
    assert pattern.node_features.cardinalities == (3,)
    cluster = load_dataset("CLUSTER-tiny", root=tmp_path)
    assert (len(cluster.train), len(cluster.val), len(cluster.test)) == (64, 16, 16)
    assert cluster.task.num_outputs == 6 and cluster.node_features.cardinalities == (7,)
    assert sbm.PATTERN_SIZES["full"] == (100, 100, 20)  # 10,000 / 2,000 / 2,000
    assert sbm.CLUSTER_SIZES["full"] == (10_000, 1_000, 1_000)
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("pattern-tiny", root=tmp_path, p_inside=0.3)


def test_pattern_edges_labels_the_edges_inside_the_planted_pattern(tmp_path):
    """pattern-edges: PATTERN's graphs, an edge labelled 1 exactly when both ends are pattern nodes, the node
    labels gone; an edge-level task whose foreground density varies from graph to graph."""
    nodes = load_dataset("pattern-tiny", root=tmp_path)
    edges = load_dataset("pattern-edges-tiny", root=tmp_path)
    assert edges.task.level == "edge" and edges.task.num_outputs == 2 and edges.name == "pattern-edges-tiny"
    densities = []
    for a, b in zip(nodes.train, edges.train, strict=True):
        assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.x, b.x) and "y" not in b.node_data
        y = a.node_data["y"].bool()
        want = y[a.row_index()] & y[a.indices]
        assert torch.equal(b.edge_data["y"], want.long())
        densities.append(float(want.float().mean()))
    assert 0 < min(densities) < 0.02 and max(densities) > 0.1


def test_cache_roundtrip_and_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGT_CACHE", str(tmp_path))
    first = load_dataset("cluster-tiny")
    files = list(tmp_path.glob("cluster-*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as npz:  # plain arrays, no pickles
        assert "train.indices" in npz.files

    def refuse(*args, **kwargs):
        raise AssertionError("the cached file should have been read")

    monkeypatch.setattr(sbm, "generate_cluster", refuse)
    again = load_dataset("cluster-tiny")
    for a, b in zip(first.train + first.test, again.train + again.test, strict=True):
        assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        b.validate()
    monkeypatch.undo()
    other = load_dataset("cluster-tiny", root=tmp_path / "other", seed=1)
    assert not all(torch.equal(a.y, b.y) for a, b in zip(first.train, other.train, strict=True))


def test_lazy_cached_splits_behave_like_lists(tmp_path):
    from sparsegt.data import DataLoader
    from sparsegt.data.cache import LazyGraphs

    d = load_dataset("pattern-tiny", root=tmp_path)
    train = d.train
    assert isinstance(train, LazyGraphs) and len(train) == 64
    assert train[3] is train[3] and train[-1] is train[63]
    assert [g.num_nodes for g in train[2:5]] == [train[i].num_nodes for i in (2, 3, 4)]
    with pytest.raises(IndexError):
        train[64]
    both = d.val + d.test
    assert isinstance(both, list) and len(both) == 32 and both[16] is d.test[0]
    assert len([train[0]] + d.val) == 17
    eager = list(train)
    for a, b in zip(DataLoader(train, 16, shuffle=True), DataLoader(eager, 16, shuffle=True), strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.y, b.y)
    relabelled = train.with_graph_data(flag=torch.arange(64)[:, None])
    assert int(relabelled[7].graph_data["flag"]) == 7 and "flag" not in train[7].graph_data
    with pytest.raises(ValueError, match="rows"):
        train.with_graph_data(flag=torch.zeros(3))
