"""GatedGCN's fused CPU aggregation against its torch version: values and every gradient on nasty graphs
(empty, isolated rows, self-loops, duplicate edges, hubs, rectangular), per-edge and shared edge terms,
float32 and float64, gradcheck; and the layer on top of it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegt import Graph
from sparsegt.nn import GatedGCNConv
from sparsegt.nn.gatedgcn import gated_aggregation, gated_aggregation_torch

from .strategies import patterns

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=2e-5)}


def inputs(g, channels, per_edge, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(g.num_nodes, channels, dtype=dtype, generator=gen) * 3
    e, b = (torch.randn(g.num_cols, channels, dtype=dtype, generator=gen) * 3 for _ in range(2))
    c = torch.randn(g.num_edges if per_edge else 1, channels, dtype=dtype, generator=gen)
    return d, e, b, c


def run(fn, g, tensors, grad_hat, grad_agg):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    edge_hat, agg = fn(g, *leaves)
    loss = (edge_hat * grad_hat).sum() + (agg * grad_agg).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * 4
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads, strict=True)]
    return [edge_hat.detach(), agg.detach(), *grads]


@given(patterns(max_rows=12, max_cols=12, max_edges=60), st.booleans(), st.sampled_from([torch.float64, torch.float32]))
def test_fused_equals_torch_values_and_gradients(g, per_edge, dtype):
    tensors = inputs(g, 5, per_edge, dtype)
    grad_hat = torch.randn(g.num_edges, 5, dtype=dtype)
    grad_agg = torch.randn(g.num_nodes, 5, dtype=dtype)
    fused = run(gated_aggregation, g, tensors, grad_hat, grad_agg)
    reference = run(gated_aggregation_torch, g, tensors, grad_hat, grad_agg)
    for name, a, b in zip(["edge_hat", "agg", "d", "e", "b", "c"], fused, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@settings(max_examples=6)
@given(patterns(max_rows=5, max_cols=5, max_edges=12), st.booleans())
def test_gradcheck(g, per_edge):
    tensors = [t.requires_grad_() for t in inputs(g, 3, per_edge, torch.float64, seed=1)]
    assert torch.autograd.gradcheck(lambda *t: gated_aggregation(g, *t), tensors)


def test_only_the_aggregate_or_only_the_edges_get_a_gradient():
    g = Graph.from_edge_index(torch.randint(0, 20, (2, 90), generator=torch.Generator().manual_seed(3)), 20)
    for pick in (0, 1):
        results = []
        for fn in (gated_aggregation, gated_aggregation_torch):
            leaves = [t.requires_grad_() for t in inputs(g, 4, True, torch.float64, seed=2)]
            fn(g, *leaves)[pick].square().sum().backward()
            results.append([torch.zeros_like(t) if t.grad is None else t.grad for t in leaves])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_layer_matches_the_torch_aggregation_and_rejects_bad_edge_terms(monkeypatch):
    g = Graph.from_edge_index(torch.randint(0, 30, (2, 150), generator=torch.Generator().manual_seed(0)), 30)
    torch.manual_seed(0)
    layer = GatedGCNConv(8).eval()
    x, edge_attr = torch.randn(30, 8), torch.randn(g.num_edges, 8)
    for attr in (edge_attr, None):
        fused = layer(x, g, attr)
        monkeypatch.setattr("sparsegt.nn.gatedgcn.gated_aggregation", gated_aggregation_torch)
        reference = layer(x, g, attr)
        monkeypatch.undo()
        for a, b in zip(fused, reference, strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float32])
    with pytest.raises(ValueError, match=r"c must have shape \[E, C\]"):
        gated_aggregation(g, x, x, x, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"e must have shape \[30, C\] \(C = 8"):
        gated_aggregation(g, x, x[:, :4], x, edge_attr)
    with pytest.raises(ValueError, match=r"b must have shape \[30, C\]"):
        gated_aggregation(g, x, x, x[:20], edge_attr)
