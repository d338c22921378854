import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegt import Graph, sparse_attention
from sparsegt.attention import dense_attention, densify

from .strategies import patterns, random_qkv


def dense_oracle(q, k, v, g, bias=None, gate=None, score_clamp=None):
    mask, dense_bias = densify(g, bias, heads=q.shape[1])
    dense_gate = None
    if gate is not None:
        dense_gate = torch.zeros(g.num_nodes, g.num_cols, *gate.shape[1:], dtype=gate.dtype)
        dense_gate[g.row_index(), g.indices] = gate
    return dense_attention(q, k, v, mask, dense_bias, dense_gate, score_clamp=score_clamp)


@given(patterns(), st.sampled_from([1.0, 1e4]), st.booleans())
def test_reference_equals_dense_oracle(g, logit_scale, with_bias):
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale)
    bias = bias if with_bias else None
    out, lse = sparse_attention(q, k, v, g, bias=bias, return_lse=True, backend="torch")
    ref_out, ref_lse = dense_oracle(q, k, v, g, bias)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, ref_lse, atol=1e-6, rtol=1e-6)
    empty = g.degree() == 0
    assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all()


@given(patterns(allow_duplicates=False))
def test_reference_with_gate_equals_dense_oracle(g):
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=3, seed=1)
    out = sparse_attention(q, k, v, g, bias=bias, gate=gate, backend="torch")
    ref_out, _ = dense_oracle(q, k, v, g, bias, gate)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-6)


@settings(max_examples=15)
@given(patterns(max_rows=6, max_cols=6, max_edges=20))
def test_reference_gradcheck(g):
    q, k, v, bias, gate = (t.requires_grad_() for t in random_qkv(g, heads=2, dim=3, seed=2))

    def f(q, k, v, bias, gate):
        out, lse = sparse_attention(q, k, v, g, bias=bias, gate=gate, return_lse=True, backend="torch")
        # lse is -inf on empty rows: feed only its finite part to the check
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(f, (q, k, v, bias, gate))


def test_empty_rows_have_finite_gradients_even_through_lse():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [0, 0]]), 3)  # rows 1 and 2 are empty
    q, k, v, bias, _ = (t.requires_grad_() for t in random_qkv(g, 2, 4))
    out, lse = sparse_attention(q, k, v, g, bias=bias, return_lse=True, backend="torch")
    merged = torch.logaddexp(lse, torch.zeros_like(lse))  # merge with a second partial attention
    (out.sum() + merged.sum()).backward()
    for t in (q, k, v, bias):
        assert torch.isfinite(t.grad).all()


def test_batch_equals_each_graph_alone():
    gen = torch.Generator().manual_seed(0)
    graphs = [Graph.from_edge_index(torch.randint(0, n, (2, 3 * n), generator=gen), n) for n in (5, 1, 9)]
    graphs.insert(1, Graph.empty(0))
    batch = Graph.batch(graphs)
    q, k, v, bias, _ = random_qkv(batch, 2, 4)
    out = sparse_attention(q, k, v, batch, bias=bias, backend="torch")
    for b, g in enumerate(graphs):
        n0, n1 = batch.ptr[b], batch.ptr[b + 1]
        e0, e1 = batch.edge_ptr[b], batch.edge_ptr[b + 1]
        alone = sparse_attention(q[n0:n1], k[n0:n1], v[n0:n1], g, bias=bias[e0:e1], backend="torch")
        torch.testing.assert_close(out[n0:n1], alone)


def test_dropout_is_reproducible_and_unbiased():
    g = Graph.from_edge_index(torch.randint(0, 50, (2, 2000), generator=torch.Generator().manual_seed(0)), 50)
    q, k, v, _, _ = random_qkv(g, 2, 4)
    a = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=7, backend="torch")
    b = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=7, backend="torch")
    c = sparse_attention(q, k, v, g, dropout_p=0.3, dropout_seed=8, backend="torch")
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = sparse_attention(q, k, v, g, dropout_p=0.3, backend="torch")
    torch.manual_seed(3)
    e = sparse_attention(q, k, v, g, dropout_p=0.3, backend="torch")
    assert torch.equal(d, e)
    from sparsegt.attention.dropout import keep_mask

    kept = keep_mask(123, 200_000, 4, 0.3, torch.device("cpu")).double().mean().item()
    assert abs(kept - 0.7) < 0.005


@pytest.mark.parametrize("kwargs, message", [
    (dict(q=torch.zeros(3, 2)), r"q must be a tensor of shape \[N, H, D\]"),
    (dict(q=torch.zeros(4, 2, 3)), "q has 4 rows but the pattern has 3 queries"),
    (dict(k=torch.zeros(4, 2, 3)), "k has 4 and v has 3 rows but the pattern has 3 keys"),
    (dict(bias=torch.zeros(5, 2)), r"bias must have shape \[E, H\] = \[2, 2\]"),
    (dict(gate=torch.zeros(2, 2, 4)), r"gate must have shape \[E, H, D\] = \[2, 2, 3\]"),
    (dict(dropout_p=1.0), r"dropout_p must be in \[0, 1\)"),
    (dict(backend="gpu"), "backend must be one of"),
])
def test_bad_inputs_raise_clear_errors(kwargs, message):
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 3)
    args = dict(q=torch.zeros(3, 2, 3), k=torch.zeros(3, 2, 3), v=torch.zeros(3, 2, 3), pattern=g)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sparse_attention(**args)
