"""Scatterbrain: exact merge of partial attentions, FAVOR+ complement, no double counting."""

from __future__ import annotations

import torch

from sparsegt import Graph, sparse_attention
from sparsegt.attention import dense_attention
from sparsegt.patterns import (
    favor_features,
    lowrank_complement,
    merge_partial_attention,
    random_features_projection,
    scatterbrain_attention,
    window,
)


def dense(p: Graph) -> torch.Tensor:
    m = torch.zeros(p.num_nodes, p.num_cols, dtype=torch.bool)
    m[p.row_index(), p.indices] = True
    return m


def qkv(n, h=2, d=4, seed=0, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, h, d, generator=gen, dtype=torch.float64) * s for s in (spread, spread, 1.0))


def test_merge_sparse_with_exact_complement_equals_dense():
    q, k, v = qkv(12)
    # rows with no entries, rows with every key, and rows in between
    keys = [0, 1, 2, 5, 7, 3] + list(range(12))
    queries = [0, 0, 1, 4, 4, 6] + [9] * 12
    pattern = Graph.from_edge_index(torch.tensor([keys, queries]), 12, remove_duplicates=True)
    sparse = sparse_attention(q, k, v, pattern, return_lse=True, backend="torch")
    mask = dense(pattern)
    complement = dense_attention(q, k, v, ~mask)
    out, lse = merge_partial_attention([sparse, complement])
    ref_out, ref_lse = dense_attention(q, k, v, torch.ones_like(mask))
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(lse, ref_lse, atol=1e-12)


def test_merge_empty_everywhere_gives_zeros_and_minus_inf():
    out = torch.zeros(3, 2, 4)
    lse = torch.full((3, 2), -torch.inf)
    merged, merged_lse = merge_partial_attention([(out, lse), (out + torch.nan, lse)])
    assert bool((merged == 0).all()) and bool(torch.isneginf(merged_lse).all())


def test_favor_features_estimate_exponential_kernel():
    q, k, _ = qkv(6, d=4, spread=0.5)
    proj = random_features_projection(20000, 4, seed=0, dtype=torch.float64)
    fq, cq = favor_features(q, proj, True)
    fk, ck = favor_features(k, proj, False)
    estimate = torch.einsum("ihm,jhm->ijh", fq, fk) * torch.exp(cq[:, None, :] + ck[None, None, :])
    exact = torch.exp(torch.einsum("ihd,jhd->ijh", q, k))
    relative = (estimate / exact - 1).abs()
    assert float(relative.max()) < 0.15 and float(relative.mean()) < 0.04


def test_lowrank_complement_counts_sparse_entries_once():
    q, k, v = qkv(10, spread=0.4, seed=2)
    pattern = window(10, 1)
    proj = random_features_projection(20000, 4, seed=1, dtype=torch.float64)
    out_c, lse_c = lowrank_complement(q, k, v, pattern, proj, backend="torch")
    exact_out, exact_lse = dense_attention(q, k, v, ~dense(pattern))
    assert torch.allclose(lse_c, exact_lse, atol=0.05)
    assert torch.allclose(out_c, exact_out, atol=0.05)


def test_scatterbrain_beats_sparse_alone_and_has_gradients():
    q, k, v = qkv(64, h=2, d=8, spread=0.5, seed=3)
    q.requires_grad_(True)
    pattern = window(64, 3)
    ref, _ = dense_attention(q, k, v, torch.ones(64, 64, dtype=torch.bool))
    sparse_only = sparse_attention(q, k, v, pattern, backend="torch")
    sb = scatterbrain_attention(q, k, v, pattern, num_features=256, seed=0, backend="torch")
    err_sparse = float((sparse_only - ref).detach().abs().mean())
    err_sb = float((sb - ref).detach().abs().mean())
    assert err_sb < 0.5 * err_sparse
    sb.sum().backward()
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())
