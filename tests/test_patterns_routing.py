"""Routing, bi-level routing and XAttention block selection select what their definitions say."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparsegt import Graph
from sparsegt.patterns import (
    RoutingPattern,
    antidiagonal_block_mass,
    bilevel_routing,
    block_select,
    full,
    grid_regions,
    routing,
    select_blocks,
)


def dense(p: Graph) -> torch.Tensor:
    p.validate()
    key = p.row_index() * max(p.num_cols, 1) + p.indices
    assert bool((key[1:] > key[:-1]).all()), "sorted CSR without duplicates"
    m = torch.zeros(p.num_nodes, p.num_cols, dtype=torch.bool)
    m[p.row_index(), p.indices] = True
    return m


def clustered(n: int, centres: torch.Tensor, noise: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, len(centres), (n,), generator=gen)
    x = centres[label] + noise * torch.randn(n, centres.shape[1], generator=gen, dtype=centres.dtype)
    return x, label


def test_routing_same_cluster_with_given_and_learned_centroids():
    centres = torch.eye(4, dtype=torch.float64)[:3] * 3
    q, q_label = clustered(20, centres, 0.1, 0)
    k, k_label = clustered(25, centres, 0.1, 1)
    expect = q_label[:, None] == k_label[None, :]
    unit = centres / centres.norm(dim=1, keepdim=True)
    p = routing(q, k, 3, centroids=unit)
    p.validate()
    assert torch.equal(dense(p), expect)
    learned = routing(q, k, 3)        # spherical k-means on the fly finds the same partition
    assert torch.equal(dense(learned), expect)


def test_routing_max_keys_keeps_closest_and_batch_stays_inside_graphs():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.5], [1.0, 0.05], [1.0, 0.2], [0.1, 1.0]])
    centroids = torch.eye(2)
    p = routing(q, k, 2, centroids=centroids, max_keys_per_cluster=2)
    assert p.indices.tolist() == [1, 2, 3]     # the two keys closest to centroid 0; key 3 for query 1
    batch = Graph.batch([Graph.empty(3), Graph.empty(4)])
    x = torch.randn(7, 2, 4)
    pb = routing(x, x, 2, batch=batch)
    assert not bool((dense(pb) & ~dense(full(batch))).any())
    assert torch.equal(pb.ptr, batch.ptr)


def test_routing_module_updates_centroids_only_in_training():
    module = RoutingPattern(2, 4, decay=0.5, seed=0)
    assert "centroids" in module.state_dict()
    x = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.9, 0.1]])[:, None, :]
    before = module.centroids.clone()
    module.eval()
    module(x, x)
    assert torch.equal(module.centroids, before)
    module.train()
    for _ in range(30):
        pattern = module(x, x)
    assert torch.allclose(module.centroids.norm(dim=1), torch.ones(2))
    # after training both groups sit in distinct clusters: tokens 0,1 see each other, 2,3 likewise
    m = dense(pattern)
    assert bool(m[0, 1] and m[2, 3] and not m[0, 2])


def bilevel_oracle(q, k, region, top_r):
    n_reg = int(region.max()) + 1
    qf, kf = q.reshape(len(q), -1), k.reshape(len(k), -1)
    qr = torch.stack([qf[region == r].mean(0) for r in range(n_reg)])
    kr = torch.stack([kf[region == r].mean(0) for r in range(n_reg)])
    aff = qr @ kr.T
    m = torch.zeros(len(q), len(k), dtype=torch.bool)
    for t in range(len(q)):
        a = int(region[t])
        best = sorted(range(n_reg), key=lambda b: -float(aff[a, b]))[:top_r]
        for b in best:
            m[t, region == b] = True
    return m


@pytest.mark.parametrize("regions,top_r", [(4, 2), (5, 1), (3, 3)])
def test_bilevel_routing_sequence_regions(regions, top_r):
    gen = torch.Generator().manual_seed(regions)
    q, k = torch.randn(17, 2, 3, generator=gen, dtype=torch.float64), torch.randn(17, 2, 3, generator=gen,
                                                                                   dtype=torch.float64)
    p = bilevel_routing(q, k, regions, top_r)
    p.validate()
    region = torch.arange(17) // regions
    assert torch.equal(dense(p), bilevel_oracle(q, k, region, top_r))


def test_bilevel_routing_image_regions_and_own_region():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(36, 4, generator=gen, dtype=torch.float64)
    region = grid_regions(6, 6, 3, 3)
    assert region.tolist()[:7] == [0, 0, 0, 1, 1, 1, 0]
    p = bilevel_routing(q, q.flip(0), region, 1)
    assert torch.equal(dense(p), bilevel_oracle(q, q.flip(0), region, 1))
    own = bilevel_routing(q, q.flip(0), region, 1, include_own_region=True)
    assert bool(dense(own)[region[:, None] == region[None, :]].all())


def mass_oracle(q, k, block, stride, causal=False):
    L = q.shape[0]
    s = torch.einsum("ihd,jhd->ij", q, k).double() / q.shape[1] * q.shape[2] ** -0.5
    G = -(-L // block) * block // stride
    a = torch.full((G, G), -torch.inf, dtype=torch.float64)
    for x, y in itertools.product(range(G), range(G)):
        if y * stride >= L or (causal and y > x):
            continue
        a[x, y] = sum(float(s[x * stride + t, y * stride + stride - 1 - t]) for t in range(stride)
                      if x * stride + t < L and y * stride + stride - 1 - t < L)
    prob = torch.softmax(a, 1).nan_to_num(0.0)
    prob[torch.arange(G) * stride >= L] = 0
    nb, per = G * stride // block, block // stride
    mass = prob.reshape(nb, per, nb, per).sum((1, 3))
    return mass / mass.sum(1, keepdim=True)


@pytest.mark.parametrize("L,causal", [(32, False), (29, False), (32, True)])
def test_block_mass_equals_antidiagonal_oracle(L, causal):
    gen = torch.Generator().manual_seed(L)
    q, k = torch.randn(L, 2, 4, generator=gen), torch.randn(L, 2, 4, generator=gen)
    mass = antidiagonal_block_mass(q, k, 8, 4, causal=causal, rows_per_chunk=3)
    assert torch.allclose(mass, mass_oracle(q, k, 8, 4, causal), atol=1e-6)


def test_select_blocks_is_minimal_set_reaching_threshold():
    gen = torch.Generator().manual_seed(3)
    mass = torch.softmax(torch.randn(6, 6, generator=gen, dtype=torch.float64) * 2, 1)
    for threshold in (0.3, 0.6, 0.9, 1.0):
        keep = select_blocks(mass, threshold)
        for row in range(6):
            ranked = torch.sort(mass[row], descending=True).values
            needed = int((torch.cumsum(ranked, 0) < threshold - 1e-12).sum()) + 1
            assert int(keep[row].sum()) == min(needed, 6)
            dropped = mass[row][~keep[row]]
            if dropped.numel():
                assert float(mass[row][keep[row]].min()) >= float(dropped.max())


def test_block_select_token_pattern():
    gen = torch.Generator().manual_seed(5)
    L, block = 40, 8
    q, k = torch.randn(L, 2, 4, generator=gen), torch.randn(L, 2, 4, generator=gen)
    p = block_select(q, k, block, 4, 0.7)
    p.validate()
    keep = select_blocks(antidiagonal_block_mass(q, k, block, 4), 0.7)
    expect = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)[:L, :L]
    assert torch.equal(dense(p), expect)
    c = block_select(q, k, block, 4, 0.7, causal=True, keep_diagonal=True)
    assert not bool(dense(c).triu(1).any())
    assert bool(dense(c).diagonal().all())
    assert block_select(q[:0], k[:0], block, 4, 0.9).num_edges == 0
    assert block_select(q[:1], k[:1], block, 4, 0.9).num_edges == 1
    with pytest.raises(ValueError, match="multiple"):
        block_select(q, k, 6, 4, 0.9)


# ---------------------------------------------------------------- block_select on a batch of sequences
@pytest.mark.parametrize("causal", [False, True])
def test_block_select_batch_equals_each_sequence_alone(causal):
    gen = torch.Generator().manual_seed(9)
    lengths = [40, 0, 17, 64, 1, 33, 40, 8]       # empty, one token, not a multiple of the block, equal lengths
    total = sum(lengths)
    q = torch.randn(total, 2, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(total, 2, 4, generator=gen, dtype=torch.float64)
    for rows_per_chunk in (256, 3):               # whole sequences at once, and one query block a chunk
        p = block_select(q, k, 8, 4, 0.7, lengths=lengths, causal=causal, keep_diagonal=causal,
                         rows_per_chunk=rows_per_chunk)
        m = dense(p)
        assert p.ptr.tolist() == [0, 40, 40, 57, 121, 122, 155, 195, 203]
        expect = torch.zeros(total, total, dtype=torch.bool)
        start = 0
        for L in lengths:
            alone = block_select(q[start:start + L], k[start:start + L], 8, 4, 0.7, causal=causal,
                                 keep_diagonal=causal)
            assert alone.ptr is None
            expect[start:start + L, start:start + L] = dense(alone)
            start += L
        assert torch.equal(m, expect)
        seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        assert bool((seq[p.row_index()] == seq[p.indices]).all()), "a key from another sequence"
        if causal:
            assert not bool(m.triu(1).any())


def test_block_select_batch_blocks_start_at_each_sequence():
    # two sequences of 12 with blocks of 8: blocks are [0, 8), [8, 12) and [12, 20), [20, 24), not [8, 16)
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(24, 4, generator=gen), torch.randn(24, 4, generator=gen)
    p = block_select(q, k, 8, 4, 1.0, lengths=torch.tensor([12, 12]))
    expect = torch.zeros(24, 24, dtype=torch.bool)
    expect[:12, :12] = expect[12:, 12:] = True               # threshold 1: every block with mass
    assert torch.equal(dense(p), expect)
    keep = select_blocks(antidiagonal_block_mass(q[12:], k[12:], 8, 4), 0.5)
    half = block_select(q, k, 8, 4, 0.5, lengths=[12, 12])
    assert torch.equal(dense(half)[12:, 12:], keep.repeat_interleave(8, 0).repeat_interleave(8, 1)[:12, :12])
    with pytest.raises(ValueError, match="sum to"):
        block_select(q, k, 8, 4, 0.9, lengths=[12, 11])
    with pytest.raises(ValueError, match=">= 0"):
        block_select(q, k, 8, 4, 0.9, lengths=[30, -6])
    assert block_select(q[:0], k[:0], 8, 4, 0.9, lengths=[0, 0]).ptr.tolist() == [0, 0, 0]


def test_bilevel_routing_affinity_in_chunks_matches_oracle(monkeypatch):
    import sparsegt.patterns.routes as routes

    monkeypatch.setattr(routes, "AFFINITY_CHUNK", 5)        # two region rows at a time, never R x R
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(23, 2, 3, generator=gen, dtype=torch.float64), torch.randn(23, 2, 3, generator=gen,
                                                                                   dtype=torch.float64)
    region = torch.tensor([0, 0, 2, 2, 2, 4, 4, 1, 1, 1, 1, 3, 3, 3, 0, 2, 4, 4, 1, 3, 3, 0, 0])   # interleaved
    p = bilevel_routing(q, k, region, 2)
    assert torch.equal(dense(p), bilevel_oracle(q, k, region, 2))
