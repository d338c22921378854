"""The ranges backend (rows that are runs of consecutive keys) against the torch reference and the dense
oracle: values, every gradient, dropout, lse, nasty run patterns, many chunks, determinism, refusals and
auto's choice."""

import numba
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsegt import Graph, sparse_attention
from sparsegt.attention import ranges
from sparsegt.attention.ranges import is_runs, ranges_attention
from sparsegt.patterns import full, window

from .attention_checks import assert_equals_dense_oracle, assert_gradcheck, assert_same, auto_backend, outputs_and_grads
from .strategies import random_qkv, run_patterns


def run(backend, g, q, k, v, bias=None, dropout_p=0.0, seed=None, grad_out=None, grad_lse=None, score_clamp=None):
    def attention(q, k, v, bias):
        return sparse_attention(q, k, v, g, bias=bias, dropout_p=dropout_p, dropout_seed=seed, return_lse=True,
                                backend=backend, score_clamp=score_clamp)

    return outputs_and_grads(attention, (q, k, v, bias), grad_out, grad_lse)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a row or two, so that one call runs many chunks whose column spans overlap."""
    monkeypatch.setattr(ranges, "CHUNK_WORK", 3)


@given(run_patterns(), st.sampled_from([1.0, 1e4]), st.booleans(), st.sampled_from([0.0, 0.4]), st.booleans(),
       st.booleans())
def test_values_and_gradients_match_reference_fp64(g, logit_scale, with_bias, dropout_p, same_dims, with_lse_grad):
    dv = 3 if same_dims else 5
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale, value_dim=dv)
    grad_out = torch.randn(g.num_nodes, 2, dv, dtype=torch.float64)
    grad_lse = torch.randn(g.num_nodes, 2, dtype=torch.float64) if with_lse_grad else None
    args = (g, q, k, v, bias if with_bias else None, dropout_p, 123)
    ours = run("ranges", *args, grad_out=grad_out, grad_lse=grad_lse)
    assert_same(ours, run("torch", *args, grad_out=grad_out, grad_lse=grad_lse), torch.float64)
    empty = g.degree() == 0
    assert (ours[0][empty] == 0).all() and torch.isneginf(ours[1][empty]).all()


@given(run_patterns(), st.sampled_from([0.3, 2.0]), st.booleans(), st.sampled_from([0.0, 0.4]),
       st.sampled_from([torch.float64, torch.float32]))
def test_score_clamp_matches_reference(g, bound, with_bias, dropout_p, dtype):
    """GT's clamp: scores limited to [-c, c] before the bias; no gradient to q and k through a cut score,
    all of it to the bias (scores of scale ~3 against bounds 0.3 and 2: most rows have both kinds)."""
    q, k, v, bias, _ = (t.to(dtype) for t in random_qkv(g, heads=2, dim=3, logit_scale=3.0))
    grad_out = torch.randn(g.num_nodes, 2, 3, dtype=dtype)
    grad_lse = torch.randn(g.num_nodes, 2, dtype=dtype)
    args = (g, q, k, v, bias if with_bias else None, dropout_p, 11)
    ours = run("ranges", *args, grad_out=grad_out, grad_lse=grad_lse, score_clamp=bound)
    assert_same(ours, run("torch", *args, grad_out=grad_out, grad_lse=grad_lse, score_clamp=bound), dtype)
    if dtype == torch.float64:  # the oracle's tolerance is float64's; its scale 1/sqrt(D)
        out, lse = ranges_attention(q, k, v, g, bias, None, 3 ** -0.5, 0.0, None, score_clamp=bound)
        assert_equals_dense_oracle(out, lse, q, k, v, g, bias, score_clamp=bound)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the patch is constant
@given(run_patterns(max_rows=24, max_cols=24, max_run=24), st.sampled_from([0.0, 0.2]))
def test_many_chunks_match_reference_fp32(small_chunks, g, dropout_p):
    q, k, v, bias, _ = (t.float() for t in random_qkv(g, heads=3, dim=8, seed=4))
    grad_out, grad_lse = torch.randn(g.num_nodes, 3, 8), torch.randn(g.num_nodes, 3)
    args = (g, q, k, v, bias, dropout_p, 7)
    assert_same(run("ranges", *args, grad_out=grad_out, grad_lse=grad_lse),
                run("torch", *args, grad_out=grad_out, grad_lse=grad_lse), torch.float32)


@given(run_patterns())
def test_equals_dense_oracle(g):
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=4, seed=5)
    out, lse = ranges_attention(q, k, v, g, bias, None, 0.5, 0.0, None)
    assert_equals_dense_oracle(out, lse, q, k, v, g, bias)


@settings(max_examples=8)
@given(run_patterns(max_rows=6, max_cols=6, max_run=6))
def test_gradcheck_with_bias_dropout_and_lse(g):
    q, k, v, bias, _ = (t.requires_grad_() for t in random_qkv(g, heads=2, dim=2, seed=2, value_dim=3))
    assert_gradcheck(lambda q, k, v, bias: ranges_attention(q, k, v, g, bias, None, 0.7, 0.3, 99), (q, k, v, bias))


def test_windows_and_full_per_graph_with_masked_rows_match_reference(small_chunks):
    batch = Graph.batch([Graph.empty(n) for n in (5, 0, 1, 17, 9)])
    for g in (window(70, 6), window(70, 6, causal=True), full(batch)):
        q, k, v, bias, _ = (t.float() for t in random_qkv(g, heads=2, dim=4, seed=1))
        bias[g.row_index() == 3] = -torch.inf  # a row whose every score is masked: an empty row
        grad_out, grad_lse = torch.randn(g.num_nodes, 2, 4), torch.randn(g.num_nodes, 2)
        args = (g, q, k, v, bias, 0.5, 3)
        ours = run("ranges", *args, grad_out=grad_out, grad_lse=grad_lse)
        assert_same(ours, run("torch", *args, grad_out=grad_out, grad_lse=grad_lse), torch.float32)
        assert (ours[0][3] == 0).all() and torch.isneginf(ours[1][3]).all()


def test_results_do_not_depend_on_the_thread_count():
    g = full(Graph.batch([Graph.empty(n) for n in (40, 75, 3, 120)]))
    q, k, v, bias, _ = (t.float() for t in random_qkv(g, heads=4, dim=16, seed=8))
    grad_out = torch.randn(g.num_nodes, 4, 16)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            torch.set_num_threads(threads)
            results.append(run("ranges", g, q, k, v, bias, 0.3, 5, grad_out=grad_out))
    finally:
        torch.set_num_threads(previous)
    (out1, lse1, grads1), (out2, lse2, grads2) = results
    assert torch.equal(out1, out2) and torch.equal(lse1, lse2)
    assert all(torch.equal(a, b) for a, b in zip(grads1, grads2, strict=True))


def test_nan_inputs_give_nan_rows_not_garbage():
    g = window(12, 2)
    q, k, v, _, _ = (t.float() for t in random_qkv(g, heads=1, dim=4, seed=0))
    k[5, 0, 0] = torch.nan
    out = ranges_attention(q, k, v, g, None, None, 0.5, 0.0, None)[0]
    assert torch.isnan(out[3:8]).all() and torch.isfinite(out[:3]).all() and torch.isfinite(out[8:]).all()


def test_runs_are_detected_and_other_patterns_refused_with_a_message():
    assert is_runs(window(30, 3)) and is_runs(full(Graph.batch([Graph.empty(4), Graph.empty(0)])))
    assert is_runs(Graph.empty(3, 5)) and is_runs(Graph.empty(0, 0))
    gap = Graph(torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1]), num_cols=3)  # row 0: keys 0 and 2
    duplicate = Graph(torch.tensor([0, 2]), torch.tensor([1, 1]), num_cols=2)
    unsorted = Graph(torch.tensor([0, 2]), torch.tensor([1, 0]), num_cols=2)
    for g in (gap, duplicate, unsorted):
        assert not is_runs(g)
        q = torch.randn(g.num_nodes, 1, 4)
        k = torch.randn(g.num_cols, 1, 4)
        with pytest.raises(ValueError, match="consecutive and increasing"):
            sparse_attention(q, k, k, g, backend="ranges")
    g = window(40, 3)
    q = torch.randn(40, 1, 4)
    with pytest.raises(ValueError, match="gate"):
        sparse_attention(q, q, q, g, gate=torch.ones(g.num_edges, 1, 4), backend="ranges")
    with pytest.raises(ValueError, match="float32 and float64.*bfloat16"):
        sparse_attention(q.bfloat16(), q.bfloat16(), q.bfloat16(), g, backend="ranges")


def test_auto_takes_ranges_for_long_runs_of_narrow_heads():
    batch = full(Graph.batch([Graph.empty(100)] * 8))
    assert auto_backend(torch.zeros(1, 4, 16), batch, None) == "ranges"
    assert auto_backend(torch.zeros(1, 4, 64), batch, None) == "cpu"  # wide heads: the per-edge kernel
    assert auto_backend(torch.zeros(1, 4, 16), batch, torch.ones(1)) == "cpu"  # a gate
    assert auto_backend(torch.zeros(1, 4, 16), window(500, 4), None) == "cpu"  # runs of 9 keys
    gap = Graph(torch.tensor([0, 40]), torch.arange(0, 80, 2), num_cols=80)
    assert auto_backend(torch.zeros(1, 4, 16), gap, None) == "cpu"
