"""Static sequence and image patterns equal dense boolean masks built independently here."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.patterns import (
    bigbird,
    block_diagonal,
    causal,
    causal_sequence,
    dilated,
    global_tokens,
    grid2d,
    intersect,
    random,
    strided,
    union,
    window,
)

LENGTHS = [0, 1, 2, 7, 12]


def dense(p: Graph) -> torch.Tensor:
    m = torch.zeros(p.num_nodes, p.num_cols, dtype=torch.bool)
    m[p.row_index(), p.indices] = True
    return m


def assert_sorted_csr(p: Graph) -> None:
    p.validate()
    key = p.row_index() * max(p.num_cols, 1) + p.indices
    assert bool((key[1:] > key[:-1]).all())


def oracle(L: int, rule) -> torch.Tensor:
    """Dense [L, L] mask from a rule(i, j) -> bool written with plain Python."""
    rows = [[bool(rule(i, j, L)) for j in range(L)] for i in range(L)]
    return torch.tensor(rows, dtype=torch.bool).reshape(L, L)


def block_of(lengths, rule) -> torch.Tensor:
    n = sum(lengths)
    m = torch.zeros(n, n, dtype=torch.bool)
    s = 0
    for L in lengths:
        m[s:s + L, s:s + L] = oracle(L, rule)
        s += L
    return m


CASES = [
    ("window", lambda n: window(n, 2), lambda i, j, L: abs(i - j) <= 2),
    ("window_causal", lambda n: window(n, 3, causal=True), lambda i, j, L: 0 <= i - j <= 3),
    ("dilated", lambda n: dilated(n, 2, 3), lambda i, j, L: (i - j) % 3 == 0 and abs(i - j) <= 6),
    ("dilated_causal", lambda n: dilated(n, 1, 2, causal=True), lambda i, j, L: i - j in (0, 2)),
    ("strided", lambda n: strided(n, 3), lambda i, j, L: (i - j) % 3 == 0),
    ("strided_causal", lambda n: strided(n, 4, causal=True), lambda i, j, L: (i - j) % 4 == 0 and j <= i),
    ("causal_sequence", lambda n: causal_sequence(n), lambda i, j, L: j <= i),
    ("causal_int", lambda n: causal(n), lambda i, j, L: j <= i),
    ("global", lambda n: global_tokens(n, 2), lambda i, j, L: i < 2 or j < 2),
    ("block_diagonal", lambda n: block_diagonal(n, 3), lambda i, j, L: i // 3 == j // 3),
    ("window_zero", lambda n: window(n, 0), lambda i, j, L: i == j),
]


@pytest.mark.parametrize("name,build,rule", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("L", LENGTHS)
def test_single_sequence_equals_dense_mask(name, build, rule, L):
    p = build(L)
    assert_sorted_csr(p)
    assert p.ptr is None
    assert torch.equal(dense(p), oracle(L, rule))


@pytest.mark.parametrize("name,build,rule", CASES, ids=[c[0] for c in CASES])
def test_batch_of_sequences_equals_block_mask(name, build, rule):
    p = build(LENGTHS)
    assert_sorted_csr(p)
    assert p.ptr.tolist() == [0, 0, 1, 3, 10, 22]
    assert torch.equal(dense(p), block_of(LENGTHS, rule))
    assert p.edge_ptr is not None and [g.num_edges for g in p.unbatch()] == [
        int(oracle(L, rule).sum()) for L in LENGTHS]


def test_causal_never_leaks_a_future_key():
    for p in (window(LENGTHS, 3, causal=True), strided(LENGTHS, 2, causal=True),
              random(LENGTHS, 4, seed=1, causal=True), causal(bigbird(LENGTHS, 1, 1, 3))):
        m = dense(p)
        assert not bool((m & ~block_of(LENGTHS, lambda i, j, L: j <= i)).any())


def test_random_within_sequence_seeded_and_batch_independent():
    p = random([5, 40, 40], 6, seed=3)
    assert_sorted_csr(p)
    m = dense(p)
    assert not bool((m & ~block_of([5, 40, 40], lambda i, j, L: True)).any())
    assert int(p.degree().max()) <= 6 and int(p.degree().min()) >= 1
    parts = p.unbatch()
    assert torch.equal(parts[1].indices, parts[2].indices)  # depends on (seed, length, i), not position
    alone = random(40, 6, seed=3)
    assert torch.equal(alone.indices, parts[1].indices)
    assert not torch.equal(random(40, 6, seed=4).indices, alone.indices)
    # roughly uniform: every key of a long sequence gets drawn about equally often
    counts = torch.bincount(random(200, 50, seed=0).indices, minlength=200).double()
    assert float(counts.std() / counts.mean()) < 0.3


def test_bigbird_is_union_of_its_parts():
    p = bigbird(30, 2, 1, 3, seed=5)
    expect = dense(window(30, 2)) | dense(global_tokens(30, 1)) | dense(random(30, 3, seed=5))
    assert torch.equal(dense(p), expect)
    assert torch.equal(dense(union(window(30, 2), window(30, 1))), dense(window(30, 2)))


def grid_oracle(h, w, rule) -> torch.Tensor:
    pos = [(r, c) for r in range(h) for c in range(w)]
    rows = [[bool(rule(a, b)) for b in pos] for a in pos]
    return torch.tensor(rows, dtype=torch.bool).reshape(h * w, h * w)


@pytest.mark.parametrize("h,w", [(0, 0), (1, 1), (3, 4), (5, 5)])
def test_grid2d_kinds(h, w):
    sq = grid2d(h, w, radius=1)
    assert_sorted_csr(sq)
    chebyshev = lambda a, b: max(abs(a[0] - b[0]), abs(a[1] - b[1])) <= 1
    assert torch.equal(dense(sq), grid_oracle(h, w, chebyshev))
    cr = grid2d(h, w, radius=2, kind="cross")
    assert torch.equal(dense(cr), grid_oracle(h, w, lambda a, b: abs(a[0] - b[0]) + abs(a[1] - b[1]) <= 2))
    sv = grid2d(h, w, kind="svga", svga_k=2)
    assert_sorted_csr(sv)
    rule = lambda a, b: (a[0] == b[0] and (a[1] - b[1]) % 2 == 0) or (a[1] == b[1] and (a[0] - b[0]) % 2 == 0)
    assert torch.equal(dense(sv), grid_oracle(h, w, rule))


def test_grid2d_batch_of_images_and_bad_kind():
    p = grid2d(3, 3, num_images=2)
    assert p.ptr.tolist() == [0, 9, 18]
    one = dense(grid2d(3, 3))
    assert torch.equal(dense(p), torch.block_diag(one, one))
    with pytest.raises(ValueError, match="kind"):
        grid2d(3, 3, kind="hex")


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="w"):
        window(5, -1)
    with pytest.raises(ValueError, match="lengths"):
        window([3, -1], 1)
    with pytest.raises(ValueError, match="stride"):
        strided(5, 0)


def test_builders_are_linear_in_memory():
    # 200k tokens with a window of 4: a dense mask would be 40 GB; the pattern is ~1.8M entries
    p = window(200_000, 4)
    assert p.num_edges == 200_000 * 9 - 2 * (1 + 2 + 3 + 4)
    n = 100_000
    assert bigbird(n, 2, 1, 2, seed=0).num_edges <= n * (5 + 1 + 2) + n
    assert block_diagonal(n, 4).num_edges == n * 4
    assert dilated(n, 2, 8).num_edges <= n * 5


# ---------------------------------------------------------------- union / intersect against dense OR / AND
def random_pattern(num_rows: int, num_cols: int, density: float, seed: int, shuffle_rows: bool = False,
                   duplicates: bool = False) -> Graph:
    """A random pattern; ``shuffle_rows`` permutes the keys inside each row and ``duplicates``
    repeats some entries (both legal for a user-built Graph, neither produced by the builders)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_rows, num_cols, generator=gen) < density
    row, col = mask.nonzero(as_tuple=True)
    if duplicates and row.numel():
        again = torch.randint(0, row.numel(), (row.numel() // 3 + 1,), generator=gen)
        row, col = torch.cat([row, row[again]]), torch.cat([col, col[again]])
    order = torch.argsort(row * (num_cols + 1) + (torch.rand(row.numel(), generator=gen) * num_cols if shuffle_rows
                                                  else col), stable=True)
    row, col = row[order], col[order]
    indptr = torch.zeros(num_rows + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return Graph(indptr, col.contiguous(), num_cols)


UNION_SHAPES = [(0, 0), (0, 5), (5, 0), (1, 1), (7, 7), (9, 23), (31, 4)]


@pytest.mark.parametrize("num_rows,num_cols", UNION_SHAPES)
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("messy", [False, True])
@pytest.mark.parametrize("path", ["merge", "sort"])
def test_union_and_intersect_equal_dense_or_and(num_rows, num_cols, count, messy, path, monkeypatch):
    from sparsegt.patterns import compose

    monkeypatch.setattr(compose, "MERGE_MIN_ENTRIES", 0 if path == "merge" else 1 << 62)
    parts = [random_pattern(num_rows, num_cols, d, seed=10 * count + i, shuffle_rows=messy and i == 0,
                            duplicates=messy and i == count - 1)
             for i, d in enumerate([0.3, 0.0, 0.6][:count])]
    either = torch.zeros(num_rows, num_cols, dtype=torch.bool)
    every = torch.ones(num_rows, num_cols, dtype=torch.bool)
    for p in parts:
        either |= dense(p)
        every &= dense(p)
    u, sources, positions = union(*parts, return_sources=True, return_positions=True)
    assert_sorted_csr(u)
    assert (u.num_nodes, u.num_cols) == (num_rows, num_cols)
    assert torch.equal(dense(u), either)
    for p, src, pos in zip(parts, sources, positions, strict=True):
        assert pos.shape == (p.num_edges,)
        assert torch.equal(u.row_index()[pos], p.row_index()) and torch.equal(u.indices[pos], p.indices)
        present = dense(p)[u.row_index(), u.indices]
        assert torch.equal(src, present)
    inter = intersect(*parts)
    assert_sorted_csr(inter)
    assert torch.equal(dense(inter), every)


def test_union_linear_merge_agrees_with_the_sort_path(monkeypatch):
    from sparsegt.patterns import compose

    monkeypatch.setattr(compose, "MERGE_MIN_ENTRIES", 0)
    parts = (window(50, 2), random(50, 3, seed=4), global_tokens(50, 1), random_pattern(50, 50, 0.1, 5))
    merged = compose._merge(parts)                 # CPU: merge of row-sorted inputs
    by_sort = compose._merge_by_sort(parts)        # what other devices run
    assert torch.equal(merged[0], by_sort[0]) and torch.equal(merged[1], by_sort[1])
    for a, b in zip(merged[2], by_sort[2], strict=True):
        assert torch.equal(a, b)


def test_union_keeps_a_shared_batch_and_drops_a_mixed_one():
    a, b = window([3, 5], 1), random([3, 5], 2, seed=1)
    u = union(a, b)
    assert torch.equal(u.ptr, a.ptr) and torch.equal(u.edge_ptr, u.indptr[u.ptr])
    assert torch.equal(intersect(a, b).ptr, a.ptr)
    assert union(a, window(8, 1)).ptr is None
