"""The fused CPU backend against the torch reference and the dense oracle: values, every gradient,
dropout, and the nasty patterns (hubs, isolated rows, rectangles, duplicates, empty graphs)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegt import Graph, sparse_attention
from sparsegt.attention import cpu_primitives, numba_runtime
from sparsegt.attention.cpu import cpu_attention
from sparsegt.attention.dropout import keep_mask

from .attention_checks import TOL, assert_equals_dense_oracle, assert_gradcheck, assert_same, auto_backend
from .strategies import patterns, random_qkv


def run_both(g, q, k, v, bias=None, gate=None, dropout_p=0.0, seed=None, piece=None, grad_out=None,
             grad_lse=None, score_clamp=None):
    """Forward (and backward, when inputs require grad) through the CPU kernel and the reference."""
    results = []
    for backend in ("cpu", "torch"):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None
                  for t in (q, k, v, bias, gate)]
        scale = q.shape[-1] ** -0.5
        if backend == "cpu":
            out, lse = cpu_attention(*leaves[:3], g, leaves[3], leaves[4], scale, dropout_p, seed,
                                     piece=piece, score_clamp=score_clamp)
        else:
            out, lse = sparse_attention(*leaves[:3], g, bias=leaves[3], gate=leaves[4], dropout_p=dropout_p,
                                        dropout_seed=seed, return_lse=True, score_clamp=score_clamp,
                                        backend="torch")
        grads = None
        if q.requires_grad:
            g_out = torch.ones_like(out) if grad_out is None else grad_out
            loss = (out * g_out).sum()
            if grad_lse is not None:
                loss = loss + torch.where(torch.isfinite(lse), lse * grad_lse, torch.zeros_like(lse)).sum()
            wanted = [t for t in leaves if t is not None]
            grads = torch.autograd.grad(loss, wanted, allow_unused=True) if loss.requires_grad else None
        results.append((out.detach(), lse.detach(), grads))
    return results


# ---------------------------------------------------------------------------------------------- values
@given(patterns(max_rows=14, max_cols=14, max_edges=80), st.sampled_from([1.0, 1e4]), st.booleans(),
       st.booleans(), st.sampled_from([None, 1, 3]))
def test_values_and_gradients_match_reference_fp64(g, logit_scale, with_bias, with_gate, piece):
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale)
    bias = bias.requires_grad_() if with_bias else None
    gate = gate.requires_grad_() if with_gate else None
    for t in (q, k, v):
        t.requires_grad_()
    grad_out = torch.randn(g.num_nodes, 2, 3, dtype=torch.float64)
    grad_lse = torch.randn(g.num_nodes, 2, dtype=torch.float64)
    cpu, ref = run_both(g, q, k, v, bias, gate, piece=piece, grad_out=grad_out, grad_lse=grad_lse)
    assert_same(cpu, ref, torch.float64)
    empty = g.degree() == 0
    assert (cpu[0][empty] == 0).all() and torch.isneginf(cpu[1][empty]).all()


@given(patterns(max_rows=14, max_cols=14, max_edges=80), st.sampled_from([1.0, 1e4]), st.booleans(),
       st.booleans(), st.sampled_from([0.0, 0.3]), st.sampled_from([None, 2]))
def test_score_clamp_matches_reference_fp64(g, logit_scale, with_bias, with_gate, dropout_p, piece):
    """GT's clamp: the dot products limited to [-c, c] (c small enough to cut many), the bias added after;
    no gradient through a clamped product, all of ds into the bias."""
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale, seed=6)
    leaves = [q, k, v, bias if with_bias else None, gate if with_gate else None]
    for t in leaves:
        if t is not None:
            t.requires_grad_()
    grad_out = torch.randn(g.num_nodes, 2, 3, dtype=torch.float64)
    grad_lse = torch.randn(g.num_nodes, 2, dtype=torch.float64)
    cpu, ref = run_both(g, *leaves, dropout_p=dropout_p, seed=11, piece=piece, grad_out=grad_out,
                        grad_lse=grad_lse, score_clamp=0.4)
    assert_same(cpu, ref, torch.float64)


@given(patterns(max_rows=10, max_cols=10, max_edges=40, allow_duplicates=False), st.booleans())
def test_score_clamp_reference_equals_dense_oracle(g, with_gate):
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=3, seed=7, logit_scale=3.0)
    gate = gate if with_gate else None
    out, lse = sparse_attention(q, k, v, g, bias=bias, gate=gate, score_clamp=0.5, return_lse=True,
                                backend="torch")
    assert_equals_dense_oracle(out, lse, q, k, v, g, bias, gate, score_clamp=0.5)


@settings(max_examples=6)
@given(patterns(max_rows=6, max_cols=6, max_edges=16))
def test_score_clamp_gradcheck(g):
    inputs = [t.requires_grad_() for t in random_qkv(g, heads=2, dim=2, seed=8, logit_scale=2.0)]
    assert_gradcheck(lambda q, k, v, bias, gate: cpu_attention(q, k, v, g, bias, gate, 0.7, 0.0, None, score_clamp=0.6),
                     inputs)


def test_score_clamp_is_refused_where_unsupported_and_routed_by_auto():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    q = torch.randn(3, 1, 4)
    with pytest.raises(ValueError, match="does not take a score_clamp"):
        sparse_attention(q, q, q, g, score_clamp=5.0, backend="tiles")
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            sparse_attention(q, q, q, g, score_clamp=bad)
    from sparsegt.patterns import full

    batch = full(Graph.batch([Graph.empty(100)] * 4))
    assert auto_backend(torch.zeros(1, 4, 16), batch, None) == "ranges"
    assert auto_backend(torch.zeros(1, 4, 16), batch, None, 5.0) == "ranges"  # ranges takes GT's clamp


@given(patterns(max_rows=10, max_cols=10, max_edges=60), st.sampled_from([None, 2]))
def test_values_and_gradients_match_reference_fp32(g, piece):
    q, k, v, bias, gate = (t.float() for t in random_qkv(g, heads=3, dim=8, seed=4))
    for t in (q, k, v, bias, gate):
        t.requires_grad_()
    cpu, ref = run_both(g, q, k, v, bias, gate, piece=piece)
    assert_same(cpu, ref, torch.float32)


@given(patterns(allow_duplicates=True))
def test_equals_dense_oracle(g):
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=4, seed=5)
    out, lse = cpu_attention(q, k, v, g, bias, None, 0.5, 0.0, None)
    assert_equals_dense_oracle(out, lse, q, k, v, g, bias)


@settings(max_examples=8)
@given(patterns(max_rows=5, max_cols=5, max_edges=14), st.sampled_from([None, 1]))
def test_gradcheck(g, piece):
    inputs = [t.requires_grad_() for t in random_qkv(g, heads=2, dim=2, seed=2, value_dim=3)]
    assert_gradcheck(lambda q, k, v, bias, gate: cpu_attention(q, k, v, g, bias, gate, 0.7, 0.0, None, piece=piece),
                     inputs)


def test_value_dim_differs_from_key_dim_and_noncontiguous_inputs():
    g = Graph.from_edge_index(torch.randint(0, 30, (2, 300), generator=torch.Generator().manual_seed(1)), 30)
    gen = torch.Generator().manual_seed(0)
    # q, k, v, gate as strided views (transposed storage), bias as a column slice
    q = torch.randn(4, 30, 3, dtype=torch.float64, generator=gen).transpose(0, 1).transpose(1, 2)
    k = torch.randn(30, 4, 3, dtype=torch.float64, generator=gen).transpose(1, 2)
    v = torch.randn(30, 7, 3, dtype=torch.float64, generator=gen).transpose(1, 2)
    bias = torch.randn(g.num_edges, 6, dtype=torch.float64, generator=gen)[:, ::2]
    gate = torch.randn(4, g.num_edges, 3, dtype=torch.float64, generator=gen).permute(1, 2, 0)
    assert not any(t.is_contiguous() for t in (q, k, v, bias, gate))
    assert v.shape[2] != q.shape[2]
    q, k, v, bias, gate = (t.requires_grad_() for t in (q, k, v, bias, gate))
    cpu, ref = run_both(g, q, k, v, bias, gate, piece=7, grad_out=torch.randn(30, 3, 7, dtype=torch.float64))
    assert_same(cpu, ref, torch.float64)


def test_gradient_of_queries_only_skips_the_key_pass():
    g = Graph.from_edge_index(torch.randint(0, 20, (2, 120), generator=torch.Generator().manual_seed(2)), 20)
    q, k, v, bias, _ = random_qkv(g, 2, 4)
    q.requires_grad_()
    out, lse = cpu_attention(q, k, v, g, bias, None, 0.5, 0.0, None)
    (grad_q,) = torch.autograd.grad(out.sum() + lse.sum(), q)
    ref_out, ref_lse = sparse_attention(q, k, v, g, bias=bias, scale=0.5, return_lse=True, backend="torch")
    (ref_grad_q,) = torch.autograd.grad(ref_out.sum() + ref_lse.sum(), q)
    torch.testing.assert_close(grad_q, ref_grad_q, **TOL[torch.float64])
    assert k.grad is None and v.grad is None


# ---------------------------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 12345, 2**62 - 1, -5])
def test_dropout_mask_is_bit_identical_to_keep_mask(seed):
    threshold = int(0.3 * 4294967296.0)
    ours = numba_runtime.keep_table(5000, 3, seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, threshold)
    assert np.array_equal(ours.T.astype(bool), keep_mask(seed, 5000, 3, 0.3, torch.device("cpu")).numpy())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dropout_forward_and_backward_use_the_reference_mask(dtype):
    g = Graph.from_edge_index(torch.randint(0, 40, (2, 900), generator=torch.Generator().manual_seed(0)), 40)
    q, k, v, bias, gate = (t.to(dtype).requires_grad_() for t in random_qkv(g, 3, 4, seed=3))
    cpu, ref = run_both(g, q, k, v, bias, gate, dropout_p=0.4, seed=2**33 + 99, piece=5,
                        grad_out=torch.randn(40, 3, 4, dtype=dtype), grad_lse=torch.randn(40, 3, dtype=dtype))
    assert_same(cpu, ref, dtype)  # the reference's autograd uses one mask for both passes


def test_dropout_is_reproducible_and_seeded():
    g = Graph.from_edge_index(torch.randint(0, 50, (2, 2000), generator=torch.Generator().manual_seed(0)), 50)
    q, k, v, _, _ = random_qkv(g, 2, 4)
    a = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=7, backend="cpu")
    b = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=7, backend="cpu")
    c = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=8, backend="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = sparse_attention(q, k, v, g, dropout_p=0.3, backend="cpu")
    torch.manual_seed(3)
    e = sparse_attention(q, k, v, g, dropout_p=0.3, backend="cpu")
    assert torch.equal(d, e)


# ---------------------------------------------------------------------------------------------- patterns
def test_hub_row_power_law_and_thread_independence():
    gen = torch.Generator().manual_seed(0)
    n = 300
    hub = torch.stack([torch.randint(0, n, (20000,), generator=gen), torch.zeros(20000, dtype=torch.long)])
    rest = torch.randint(0, n, (2, 1500), generator=gen)
    g = Graph.from_edge_index(torch.cat([hub, rest, hub.flip(0)[:, :3000]], 1), n)  # hub row and hub column
    q, k, v, bias, _ = (t.float().requires_grad_() for t in random_qkv(g, 4, 8, seed=9))
    cpu, ref = run_both(g, q, k, v, bias, grad_out=torch.randn(n, 4, 8, generator=gen))
    assert_same(cpu, ref, torch.float32)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(cpu_attention(q, k, v, g, bias, None, 0.3, 0.0, None, piece=512))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("piece", [1, 3, 64])
def test_plan_cuts_long_rows_and_balances_chunks(piece):
    degrees = np.array([0, 1000, 2, 0, 3, 250, 1, 0], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)
    plan = cpu_primitives.plan_segments(indptr, piece)
    seg_row, seg_start, seg_end, seg_slot, chunk_ptr, split_row, split_ptr = plan
    assert (seg_end - seg_start <= piece).all()
    for r in range(len(degrees)):  # every row covered exactly once, in order
        mine = seg_row == r
        assert mine.any()
        starts, ends = seg_start[mine], seg_end[mine]
        assert starts[0] == indptr[r] and ends[-1] == indptr[r + 1] and (starts[1:] == ends[:-1]).all()
        assert (seg_slot[mine] >= 0).all() == (r in split_row)
    assert chunk_ptr[0] == 0 and chunk_ptr[-1] == len(seg_row)
    costs = [int((seg_end[a:b] - seg_start[a:b]).sum()) + cpu_primitives.ROW_COST * (b - a)
             for a, b in zip(chunk_ptr[:-1], chunk_ptr[1:], strict=True)]
    assert max(costs) <= 2 * (piece + cpu_primitives.ROW_COST)  # no chunk holds a whole hub
    assert sorted(split_row.tolist()) == [r for r in range(len(degrees)) if degrees[r] > piece]
    assert split_ptr[-1] == (seg_slot >= 0).sum()


def test_isolated_rows_give_zeros_and_finite_gradients_through_lse():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [0, 0, 3]]), 5)  # rows 1, 2, 4 are empty
    q, k, v, bias, gate = (t.requires_grad_() for t in random_qkv(g, 2, 4))
    out, lse = cpu_attention(q, k, v, g, bias, gate, 0.5, 0.0, None)
    assert (out[[1, 2, 4]] == 0).all() and torch.isneginf(lse[[1, 2, 4]]).all()
    merged = torch.logaddexp(lse, torch.zeros_like(lse))
    (out.sum() + merged.sum()).backward()
    for t in (q, k, v, bias, gate):
        assert torch.isfinite(t.grad).all()


def test_minus_inf_bias_masks_edges_like_the_reference():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 0, 1], [0, 0, 0, 1, 1]]), 3)
    q, k, v, bias, _ = random_qkv(g, 2, 4)
    bias[0] = -torch.inf  # one edge masked in both heads
    bias[3:, 1] = -torch.inf  # row 1, head 1: every edge masked
    for t in (q, k, v, bias):
        t.requires_grad_()
    cpu, ref = run_both(g, q, k, v, bias)
    assert_same(cpu, ref, torch.float64)
    assert torch.isneginf(cpu[1][1, 1])


@pytest.mark.parametrize("rows, cols, edges", [(0, 0, 0), (0, 4, 0), (4, 0, 0), (6, 5, 0)])
def test_empty_graphs(rows, cols, edges):
    g = Graph.empty(rows, cols)
    q, k, v, bias, gate = (t.requires_grad_() for t in random_qkv(g, 2, 3))
    out, lse = cpu_attention(q, k, v, g, bias, gate, 0.5, 0.0, None)
    assert out.shape == (rows, 2, 3) and (out == 0).all() and torch.isneginf(lse).all()
    (out.sum() + torch.where(torch.isfinite(lse), lse, 0.0).sum()).backward()
    assert (q.grad == 0).all() and (k.grad == 0).all() and (v.grad == 0).all()


def test_duplicate_edges_count_twice():
    g = Graph.from_edge_index(torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]]), 2)  # key 1 three times for query 0
    q, k, v, bias, _ = random_qkv(g, 1, 2)
    out, lse = cpu_attention(q, k, v, g, None, None, 2**-0.5, 0.0, None)
    assert_equals_dense_oracle(out, lse, q, k, v, g)


# ---------------------------------------------------------------------------------------------- api
def test_auto_picks_cpu_and_bad_dtypes_raise():
    g = Graph.from_edge_index(torch.tensor([[0], [1]]), 2)
    assert auto_backend(torch.zeros(2, 1, 1), g, torch.zeros(1, 1, 1)) == "cpu"  # a gate: not tiles
    assert auto_backend(torch.zeros(2, 1, 1, dtype=torch.bfloat16), g, None) == "torch"
    q = torch.zeros(2, 1, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="supports float32 and float64.*bfloat16"):
        sparse_attention(q, q, q, g, backend="cpu")
    with pytest.raises(ValueError, match="piece must be a positive"):
        cpu_attention(q.float(), q.float(), q.float(), g, None, None, 1.0, 0.0, None, piece=0)


@pytest.mark.parametrize("backend", ["torch", "cpu", "ranges", "tiles", "auto"])
@pytest.mark.parametrize("where", ["key", "query", "bias"])
def test_nan_propagates_to_exactly_the_rows_that_see_it(backend, where):
    """Issue #14.7: a NaN in one key gave out = 0 on some rows with the cpu kernel (the reference gives NaN)."""
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 1, 3], [1, 0, 1, 2, 2]]), 5, add_self_loops=True)
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(5, 2, 4, generator=gen) for _ in range(3))
    bias = torch.zeros(g.num_edges, 2)
    if where == "key":
        k[1, 0, 0] = float("nan")  # rows attending to key 1 (0, 1, 2) in head 0
    elif where == "query":
        q[2, 1, 3] = float("nan")  # row 2, head 1
    else:
        bias[int(g.indptr[2]), 0] = float("nan")  # the first edge of row 2, head 0
    expected = torch.isnan(sparse_attention(q, k, v, g, bias=bias, backend="torch")).any(-1)
    assert expected.any()
    if backend == "tiles" and where == "key":
        with pytest.raises(ValueError, match="NaN or inf in k or v"):
            sparse_attention(q, k, v, g, bias=bias, backend=backend)
        return
    out, lse = sparse_attention(q, k, v, g, bias=bias, backend=backend, return_lse=True)
    assert torch.equal(torch.isnan(out).any(-1), expected) and torch.equal(torch.isnan(lse), expected)
