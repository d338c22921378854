"""Content-based patterns select what their definition says, on hand-made q/k."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.patterns import causal, full, threshold_topk, topk


def dense(p: Graph) -> torch.Tensor:
    m = torch.zeros(p.num_nodes, p.num_cols, dtype=torch.bool)
    m[p.row_index(), p.indices] = True
    return m


def test_topk_picks_largest_scores_per_row():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(9, 3, 4, generator=gen, dtype=torch.float64)
    cand = Graph.from_edge_index(torch.randint(0, 9, (2, 40), generator=gen).flip(0).flip(0), 9,
                                 remove_duplicates=True)
    cand = Graph(cand.indptr[:8], cand.indices[: int(cand.indptr[7])], 9)
    score = torch.einsum("ihd,jhd->ij", q, k) / 3
    p = topk(q, k, cand, 2)
    p.validate()
    c = dense(cand)
    expect = torch.zeros_like(c)
    for i in range(7):
        cols = c[i].nonzero().flatten()
        best = cols[torch.argsort(score[i, cols], descending=True)[:2]]
        expect[i, best] = True
    assert torch.equal(dense(p), expect)


def topk_oracle(q, k, cand, keep):
    score = torch.einsum("ihd,jhd->ij", q, k)
    c = dense(cand)
    expect = torch.zeros_like(c)
    for i in range(c.shape[0]):
        cols = c[i].nonzero().flatten()
        expect[i, cols[torch.argsort(score[i, cols], descending=True)[:keep]]] = True
    return expect


def test_topk_uneven_rows_use_the_sort_path_and_agree():
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(300, 2, 3, generator=gen, dtype=torch.float64)
    k = torch.randn(300, 2, 3, generator=gen, dtype=torch.float64)
    hub = torch.stack([torch.arange(300), torch.zeros(300, dtype=torch.long)])        # row 0 sees all keys
    ring = torch.stack([torch.arange(300), (torch.arange(300) + 1) % 300])
    cand = Graph.from_edge_index(torch.cat([hub, ring, ring.flip(0)], 1), 300, remove_duplicates=True)
    assert 300 * int(cand.degree().max()) > 2 * cand.num_edges + 4096     # the padded table would be too big
    for keep in (1, 2, 5):
        assert torch.equal(dense(topk(q, k, cand, keep)), topk_oracle(q, k, cand, keep))


def test_topk_all_keys_and_candidates_agree():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(11, 8, generator=gen), torch.randn(13, 8, generator=gen)
    a = topk(q, k, None, 4)
    cand = Graph(full(Graph.empty(13)).indptr[:12], full(Graph.empty(13)).indices[: 11 * 13], 13)
    b = topk(q, k, cand, 4)
    assert torch.equal(dense(a), dense(b))
    assert a.degree().tolist() == [4] * 11


def test_topk_hand_made():
    # query 0 aligns with key 2 then key 0; query 1 with key 1
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.5, 0.0], [0.0, 3.0], [2.0, 0.0]])
    p = topk(q, k, None, 2)
    assert p.indices.tolist()[:2] == [0, 2]
    assert 1 in p.indices.tolist()[2:]


def test_topk_respects_causal_candidates_and_empty_rows():
    q = torch.randn(5, 2, 3)
    cand = causal(full(Graph.empty(5)))
    p = topk(q, q, cand, 2)
    assert bool((dense(p) <= dense(cand)).all())
    assert p.degree().tolist() == [1, 2, 2, 2, 2]
    assert topk(q[:0], q[:0], Graph.empty(0), 3).num_edges == 0
    assert topk(q[:1], q[:1], None, 3).num_edges == 1


def test_topk_no_gradient_and_bad_shapes():
    q = torch.randn(4, 2, 3, requires_grad=True)
    p = topk(q, q, None, 2)
    assert not p.indices.requires_grad
    with pytest.raises(ValueError, match="candidates"):
        topk(q, q, Graph.empty(3), 2)
    with pytest.raises(ValueError, match="q must be"):
        topk(q, torch.randn(4, 3, 3), None, 2)


def test_threshold_topk_keeps_about_k_and_the_max():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(64, 16, generator=gen)
    k = torch.randn(512, 16, generator=gen)
    cand = Graph(full(Graph.empty(512)).indptr[:65], full(Graph.empty(512)).indices[: 64 * 512], 512)
    p = threshold_topk(q, k, cand, 32)
    deg = p.degree().double()
    assert 20 < float(deg.mean()) < 45
    score = q @ k.T
    best = score.argmax(1)
    assert bool(dense(p)[torch.arange(64), best].all())
    # every kept key scores at least as high as every dropped key of its row (a threshold)
    m = dense(p)
    lowest_kept = torch.where(m, score, torch.inf).min(1).values
    highest_dropped = torch.where(~m, score, -torch.inf).max(1).values
    assert bool((lowest_kept >= highest_dropped).all())
    # rows with fewer candidates than k keep all
    small = threshold_topk(q, k, causal(Graph(cand.indptr, cand.indices, 512)), 32)
    assert small.degree()[:32].tolist() == list(range(1, 33))


@pytest.mark.parametrize("n", [0, 1])
def test_content_patterns_valid_on_empty_and_one_token(n):
    from sparsegt.patterns import bilevel_routing, block_select, routing

    q = torch.randn(n, 2, 4)
    cand = full(Graph.empty(n))
    built = (topk(q, q, cand, 3), threshold_topk(q, q, cand, 3), routing(q, q, 2),
             bilevel_routing(q, q, 4, 2), block_select(q, q, 8, 4, 0.9))
    for p in built:
        p.validate()
        assert p.num_nodes == n and p.num_edges == n     # one token sees itself (or nothing to see)


def test_edge_scores_chunks_and_paths_agree_with_direct_products(monkeypatch):
    import sparsegt.patterns.content as content
    from sparsegt.patterns import edge_scores, random, union, window

    gen = torch.Generator().manual_seed(7)
    q = torch.randn(200, 2, 5, generator=gen, dtype=torch.float64)
    k = torch.randn(200, 2, 5, generator=gen, dtype=torch.float64)
    pattern = union(window(200, 3), random(200, 4, seed=1))   # banded chunks and scattered chunks
    expect = (q[pattern.row_index()] * k[pattern.indices]).sum((1, 2)) / 2
    for block_edges, chunk_elements in ((1 << 18, 1 << 20), (50, 7), (1, 1)):
        monkeypatch.setattr(content, "BLOCK_EDGES", block_edges)
        monkeypatch.setattr(content, "CHUNK_ELEMENTS", chunk_elements)
        assert torch.allclose(edge_scores(q, k, pattern), expect, atol=1e-12)


# ---------------------------------------------------------------- threshold_topk: count bounds on hand-made scores
def hand_made_scores(kind: str, rows: int, cols: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(rows, cols, generator=gen, dtype=torch.float64)
    if kind == "uniform":
        return u
    if kind == "gaussian":
        return torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    if kind == "bimodal":       # 30% of the keys in a far mode: Spark's Gaussian estimate misses badly
        far = torch.rand(rows, cols, generator=gen) < 0.3
        return torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 0.3 + 6.0 * far
    if kind == "heavy":         # Cauchy: a few huge outliers stretch mean and sigma
        return torch.tan(torch.pi * (u - 0.5))
    if kind == "narrow":        # tiny spread around a large offset (relative precision)
        return 1e3 + 1e-3 * u
    raise AssertionError(kind)


def score_pattern(score: torch.Tensor):
    """q, k, candidates whose edge scores are exactly ``score`` (one-hot keys)."""
    rows, cols = score.shape
    f = full(Graph.empty(cols))
    cand = Graph(f.indptr[: rows + 1], f.indices[: rows * cols], cols)
    return score, torch.eye(cols, dtype=torch.float64), cand


def assert_threshold_contract(p: Graph, score: torch.Tensor, cand: Graph, k_keep: int, most: int) -> None:
    p.validate()
    m, c = dense(p), dense(cand)
    assert bool((m <= c).all())
    kept, n = m.sum(1), c.sum(1)
    lowest_kept = torch.where(m, score, torch.inf).min(1).values
    highest_dropped = torch.where(c & ~m, score, -torch.inf).max(1).values
    assert bool((lowest_kept > highest_dropped).all()), "a threshold: every kept score beats every dropped one"
    assert bool((kept >= torch.clamp(n, max=k_keep)).all()), "at least k (or every candidate)"
    ties = (torch.where(m, score, torch.inf) == lowest_kept[:, None]).sum(1)
    assert bool(((kept <= most) | (n <= most) | (kept - ties < k_keep)).all()), "at most `most`, unless ties"
    assert bool((kept[n <= most] == n[n <= most]).all())


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "bimodal", "heavy", "narrow"])
@pytest.mark.parametrize("k_keep", [1, 8, 40])
def test_threshold_topk_keeps_between_k_and_slack_k(kind, k_keep):
    score = hand_made_scores(kind, 48, 600, seed=k_keep)
    q, k, cand = score_pattern(score)
    p = threshold_topk(q, k, cand, k_keep)
    assert_threshold_contract(p, score, cand, k_keep, int(1.5 * k_keep))
    assert bool((torch.sort(score, 1).values.diff(dim=1) > 0).all())       # distinct scores: no ties to excuse
    kept = p.degree()
    assert int(kept.min()) >= k_keep and int(kept.max()) <= max(k_keep, int(1.5 * k_keep))


@pytest.mark.parametrize("kind", ["uniform", "bimodal", "heavy"])
def test_threshold_topk_slack_one_is_exact_topk(kind):
    score = hand_made_scores(kind, 20, 300, seed=3)
    q, k, cand = score_pattern(score)
    assert torch.equal(dense(threshold_topk(q, k, cand, 7, slack=1.0)), dense(topk(q, k, cand, 7)))


def test_threshold_topk_ties_uneven_rows_and_few_rows_in_question():
    gen = torch.Generator().manual_seed(11)
    score = torch.randn(64, 200, generator=gen, dtype=torch.float64)
    score[0] = 1.0                                        # one value: all tie
    score[1] = torch.arange(200, dtype=torch.float64) // 50   # four plateaus of 50
    score[2, :] = torch.rand(200, generator=gen, dtype=torch.float64)   # one uniform row among Gaussian ones
    q, k, _ = score_pattern(score)
    # uneven candidate rows, some shorter than k, one empty
    keep = torch.rand(64, 200, generator=gen) < torch.linspace(0.0, 1.0, 64)[:, None]
    keep[:3] = True
    keep[5] = False
    row, col = keep.nonzero(as_tuple=True)
    indptr = torch.zeros(65, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=64), 0)
    cand = Graph(indptr, col, 200)
    for k_keep, slack in ((10, 1.5), (10, 3.0), (30, 1.2)):
        most = max(k_keep, int(slack * k_keep))
        p = threshold_topk(q, k, cand, k_keep, slack=slack)
        assert_threshold_contract(p, score, cand, k_keep, most)
        assert int(p.degree()[0]) == 200                 # all tied
        assert int(p.degree()[1]) == 50                  # the top plateau, whole
    assert int(threshold_topk(q, k, cand, 10).degree()[5]) == 0
    with pytest.raises(ValueError, match="slack"):
        threshold_topk(q, k, cand, 10, slack=0.5)


def test_threshold_topk_extreme_magnitudes():
    huge = torch.tensor([1e308, -1e308, 0.0, 1.0, 2.0, 5.0, -3.0, 3.0] * 4, dtype=torch.float64)
    tiny = torch.arange(32, dtype=torch.float64) * 1e-310                  # subnormal spacing
    score = torch.stack([huge, tiny, tiny.flip(0) * 1e-13])
    q, k, cand = score_pattern(score)
    p = threshold_topk(q, k, cand, 3)
    assert_threshold_contract(p, score, cand, 3, 4)
    assert p.degree().tolist()[1:] == [3, 3]
