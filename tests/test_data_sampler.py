"""k-hop neighbour sampling (`NeighborSampler`) and its loader (`NeighborLoader`): fan-outs, edges, relabelling,
determinism, resumption, evaluation chunks; checked against the input graph and a plain-Python level count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegt.data.hash_random import derive_key
from sparsegt.data.neighbor_loader import NeighborLoader
from sparsegt.data.neighbor_sampler import NeighborSampler
from sparsegt.data.node_splits import split_views
from sparsegt.data.spec import TARGET_MASK
from sparsegt.graph import Graph


def random_graph(n=300, e=3000, isolated=(), seed=0):
    """A directed multigraph-free graph with skewed degrees, edge features = their CSR position, some isolated."""
    rng = np.random.default_rng(seed)
    src = (rng.pareto(1.5, size=e) * 5).astype(np.int64) % n
    dst = rng.integers(0, n, size=e)
    keep = ~np.isin(src, isolated) & ~np.isin(dst, isolated) & (src != dst)
    pairs = np.unique(np.stack([src[keep], dst[keep]], 1), axis=0)
    g = Graph.from_edge_index(torch.from_numpy(pairs.T.copy()), n,
                              node_data={"x": torch.arange(n, dtype=torch.float32)[:, None],
                                         "y": torch.from_numpy(rng.integers(0, 3, n))})
    return g.with_data(edge_data={"edge_attr": torch.arange(g.num_edges, dtype=torch.float64)[:, None]})


def levels(sample, hops):
    """Hop at which each local node was first reached, recomputed from the CSR (seeds: 0)."""
    g, level, reached = sample.graph, np.full(sample.graph.num_nodes, -1), sample.num_seeds
    level[:sample.num_seeds] = 0
    indptr, cols = g.indptr.numpy(), g.indices.numpy()
    for row in range(g.num_nodes):
        for c in cols[indptr[row]:indptr[row + 1]]:
            if level[c] < 0:
                assert c == reached, "new nodes are numbered in the order they are reached"
                level[c] = level[row] + 1
                reached += 1
    assert reached == g.num_nodes and level.max() <= hops
    return level


@pytest.mark.parametrize("fanouts", [[3], [4, 2], [2, 2, 2], [-1, 3], [0, 5]])
def test_sample_is_a_relabelled_subgraph_within_the_fanouts(fanouts):
    g = random_graph(isolated=(7, 11))
    seeds = np.array([7, 0, 5, 11, 42, 1])
    sample = NeighborSampler(g).sample(seeds, fanouts, derive_key(3))
    sub, ids, eids = sample.graph, sample.node_ids.numpy(), sample.edge_ids.numpy()
    assert sample.num_seeds == len(seeds) and (ids[:len(seeds)] == seeds).all()
    assert len(np.unique(ids)) == len(ids)
    assert torch.equal(sub.x, g.x[sample.node_ids]) and torch.equal(sub.y, g.y[sample.node_ids])
    # every sampled edge is the original CSR entry edge_ids[e]: same endpoints, same features
    rows = np.repeat(np.arange(sub.num_nodes), np.diff(sub.indptr.numpy()))
    original_rows = np.repeat(np.arange(g.num_nodes), np.diff(g.indptr.numpy()))
    assert (original_rows[eids] == ids[rows]).all()
    assert (g.indices.numpy()[eids] == ids[sub.indices.numpy()]).all()
    assert torch.equal(sub.edge_attr, g.edge_attr[sample.edge_ids])
    assert len(np.unique(eids)) == len(eids)
    # fan-outs exactly: min(degree, fanout) per expanded node, nothing for nodes of the last hop
    level, degree = levels(sample, len(fanouts)), g.degree().numpy()
    taken = np.diff(sub.indptr.numpy())
    for local, node in enumerate(ids):
        if level[local] == len(fanouts):
            assert taken[local] == 0
        else:
            f = fanouts[level[local]]
            assert taken[local] == (degree[node] if f < 0 else min(degree[node], f))
    # isolated seeds are kept, with no edges
    for s in (7, 11):
        assert taken[list(ids).index(s)] == 0


def test_whole_neighbourhood_when_degree_fits_the_fanout():
    g = random_graph()
    degree = g.degree().numpy()
    small = np.flatnonzero((degree > 0) & (degree <= 4))[:5]
    sample = NeighborSampler(g).sample(small, [4], derive_key(1))
    for local, node in enumerate(small):
        row = sample.graph.indices[sample.graph.indptr[local]:sample.graph.indptr[local + 1]]
        got = sorted(sample.node_ids[row].tolist())
        assert got == sorted(g.indices[g.indptr[node]:g.indptr[node + 1]].tolist())


def test_deterministic_by_key_and_independent_of_history():
    g = random_graph()
    seeds = np.arange(20)
    sampler = NeighborSampler(g)
    first = sampler.sample(seeds, [5, 3], derive_key(9, 1))
    sampler.sample(np.arange(50, 90), [5, 3], derive_key(9, 2))  # something else in between
    again = NeighborSampler(g).sample(seeds, [5, 3], derive_key(9, 1))
    assert torch.equal(first.node_ids, again.node_ids) and torch.equal(first.edge_ids, again.edge_ids)
    other = sampler.sample(seeds, [5, 3], derive_key(9, 3))
    assert not torch.equal(first.edge_ids, other.edge_ids)


def test_choice_is_uniform_without_replacement():
    # edges i -> 0: row 0 of the CSR (node 0's keys) holds 1..10
    star = Graph.from_edge_index(torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)]), 11)
    sampler, counts = NeighborSampler(star), np.zeros(11)
    for k in range(2000):
        sample = sampler.sample([0], [3], derive_key(5, k))
        picked = sample.node_ids[sample.graph.indices].numpy()
        assert len(set(picked.tolist())) == 3
        counts[picked] += 1
    frequency = counts[1:] / 2000
    assert np.abs(frequency - 0.3).max() < 0.05  # binomial sd ~0.01 per neighbour


def test_bad_inputs_are_named_errors():
    sampler = NeighborSampler(random_graph())
    with pytest.raises(ValueError, match="given twice"):
        sampler.sample([1, 2, 1], [2], derive_key(0))
    sampler.sample([1, 2], [2], derive_key(0))  # the scratch was reset after the error
    with pytest.raises(ValueError, match="outside 0..299"):
        sampler.sample([300], [2], derive_key(0))
    with pytest.raises(ValueError, match=r"fanouts\[1\]"):
        sampler.sample([1], [2, -2], derive_key(0))
    with pytest.raises(ValueError, match="empty"):
        sampler.sample([1], [], derive_key(0))


def one_graph_split(n=300, seed=0):
    g = random_graph(n, seed=seed)
    split = np.random.default_rng(seed).choice([0, 0, 1, 2, -1], size=n)
    return g, split, split_views(g, split)


def test_loader_epoch_covers_each_seed_once_and_resumes_exactly():
    g, split, (train, val, test) = one_graph_split()
    loader = NeighborLoader([train], 16, fanouts=[4, 2], shuffle=True, seed=3)
    batches = list(loader.batches(2))
    assert len(batches) == len(loader) == int(np.ceil((split == 0).sum() / 16))
    seeds = torch.cat([b.x[b.node_data[TARGET_MASK], 0] for b in batches]).long().numpy()
    assert sorted(seeds.tolist()) == np.flatnonzero(split == 0).tolist()
    for b in batches:
        mask = b.node_data[TARGET_MASK]
        assert mask[:int(mask.sum())].all()  # seeds first
    resumed = list(loader.batches(2, start=3))
    for a, b in zip(batches[3:], resumed, strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    assert not torch.equal(list(loader.batches(3))[0].x, batches[0].x)  # another epoch, another order


def test_loader_ranks_are_disjoint_and_evaluation_covers_every_target_once():
    g, split, (train, val, test) = one_graph_split()
    ranks = [NeighborLoader([train], 8, fanouts=[3], shuffle=True, rank=r, world_size=2, drop_last=True)
             for r in range(2)]
    seen = [set(np.concatenate([ld.indices(0)]).tolist()) for ld in ranks]
    assert not seen[0] & seen[1] and len(ranks[0]) == len(ranks[1])
    loader = ranks[0]
    for graph, s in ((val, 1), (test, 2)):
        chunks = [list(loader.evaluation_batches([graph], 10, rank, 2)) for rank in range(2)]
        targets = [int(v) for rank in chunks for b in rank for v in b.x[b.node_data[TARGET_MASK], 0]]
        assert sorted(targets) == np.flatnonzero(split == s).tolist()
        again = list(loader.evaluation_batches([graph], 10, 0, 2))
        assert all(torch.equal(a.indices, b.indices) for a, b in zip(chunks[0], again, strict=True))
    with pytest.raises(ValueError, match="one graph"):
        NeighborLoader([train, val], 8, fanouts=[3])
