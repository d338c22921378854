"""GatedGCN's fused CPU aggregation against its torch version: values and every gradient on nasty graphs
(empty, isolated rows, self-loops, duplicate edges, hubs, rectangular), per-edge and shared edge terms,
with and without a per-edge gate r (EquivStableLapPE), float32 and float64, gradcheck; and the layer on top
of it (fused batch norm, ReLU and residual; a DummyEdge row; the gate)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegt import Graph
from sparsegt.nn import GatedGCNConv
from sparsegt.nn.batch_norm_relu import batch_norm_relu_torch
from sparsegt.nn.gatedgcn import gated_aggregation, gated_aggregation_torch

from .strategies import patterns

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=2e-5)}


def inputs(g, channels, per_edge, dtype, seed=0, scaled=False):
    """[d, e, b, c] and, when ``scaled``, a gate r [E, 1] in (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(g.num_nodes, channels, dtype=dtype, generator=gen) * 3
    e, b = (torch.randn(g.num_cols, channels, dtype=dtype, generator=gen) * 3 for _ in range(2))
    c = torch.randn(g.num_edges if per_edge else 1, channels, dtype=dtype, generator=gen)
    scale = [torch.rand(g.num_edges, 1, dtype=dtype, generator=gen)] if scaled else []
    return [d, e, b, c, *scale]


def run(fn, g, tensors, grad_hat, grad_agg):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    edge_hat, agg = fn(g, *leaves)
    loss = (edge_hat * grad_hat).sum() + (agg * grad_agg).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads, strict=True)]
    return [edge_hat.detach(), agg.detach(), *grads]


@given(patterns(max_rows=12, max_cols=12, max_edges=60), st.booleans(), st.sampled_from([torch.float64, torch.float32]),
       st.booleans())
def test_fused_equals_torch_values_and_gradients(g, per_edge, dtype, scaled):
    tensors = inputs(g, 5, per_edge, dtype, scaled=scaled)
    grad_hat = torch.randn(g.num_edges, 5, dtype=dtype)
    grad_agg = torch.randn(g.num_nodes, 5, dtype=dtype)
    fused = run(gated_aggregation, g, tensors, grad_hat, grad_agg)
    reference = run(gated_aggregation_torch, g, tensors, grad_hat, grad_agg)
    names = ["edge_hat", "agg", "d", "e", "b", "c", "scale"][:len(fused)]
    for name, a, b in zip(names, fused, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@settings(max_examples=10)
@given(patterns(max_rows=12, max_cols=12, max_edges=60), st.booleans(), st.booleans())
def test_half_precision_inputs_run_the_float32_kernels(g, per_edge, scaled):
    """bfloat16 inputs (autocast, train.precision=bf16) give the float32 kernels' results on their upcast values,
    in float32, gradients (cast back to the inputs' dtype by autograd) included."""
    tensors = [t.to(torch.bfloat16) for t in inputs(g, 5, per_edge, torch.float32, scaled=scaled)]
    grad_hat, grad_agg = torch.randn(g.num_edges, 5), torch.randn(g.num_nodes, 5)
    half = run(gated_aggregation, g, tensors, grad_hat, grad_agg)
    upcast = run(gated_aggregation, g, [t.float() for t in tensors], grad_hat, grad_agg)
    assert half[0].dtype == half[1].dtype == torch.float32
    for a, b in zip(half, upcast, strict=True):
        torch.testing.assert_close(a.float(), b.to(a.dtype).float())


@settings(max_examples=6)
@given(patterns(max_rows=5, max_cols=5, max_edges=12), st.booleans(), st.booleans())
def test_gradcheck(g, per_edge, scaled):
    tensors = [t.requires_grad_() for t in inputs(g, 3, per_edge, torch.float64, seed=1, scaled=scaled)]
    assert torch.autograd.gradcheck(lambda *t: gated_aggregation(g, *t), tensors)


def test_only_the_aggregate_or_only_the_edges_get_a_gradient():
    g = Graph.from_edge_index(torch.randint(0, 20, (2, 90), generator=torch.Generator().manual_seed(3)), 20)
    for pick in (0, 1):
        results = []
        for fn in (gated_aggregation, gated_aggregation_torch):
            leaves = [t.requires_grad_() for t in inputs(g, 4, True, torch.float64, seed=2, scaled=True)]
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


@pytest.mark.parametrize("training", [True, False])
def test_layer_fused_path_equals_the_torch_ops_in_train_and_eval_mode(monkeypatch, training):
    """The whole layer (fused aggregation, batch norm + ReLU + residual, DummyEdge row, gate) against the same
    layer on torch's ops: outputs, every parameter's gradient and the running statistics, float64."""
    g = Graph.from_edge_index(torch.randint(0, 40, (2, 300), generator=torch.Generator().manual_seed(1)), 40)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 6, dtype=torch.float64, generator=gen)
    dummy = torch.randn(6, dtype=torch.float64, generator=gen)
    gate = torch.rand(g.num_edges, 1, dtype=torch.float64, generator=gen)
    for edge_kind in ("features", "dummy", "none"):
        results = []
        for fused in (True, False):
            torch.manual_seed(0)
            layer = GatedGCNConv(6).double().train(training)
            row = dummy.clone().requires_grad_()
            edge_attr = {"features": torch.randn(g.num_edges, 6, dtype=torch.float64, generator=torch.Generator()
                                                 .manual_seed(3)),
                         "dummy": row.expand(g.num_edges, 6), "none": None}[edge_kind]
            if not fused:
                monkeypatch.setattr("sparsegt.nn.gatedgcn.gated_aggregation", gated_aggregation_torch)
                monkeypatch.setattr("sparsegt.nn.gatedgcn.batch_norm_relu", batch_norm_relu_torch)
            out_x, out_e = layer(x, g, edge_attr, edge_scale=gate)
            monkeypatch.undo()
            (out_x.square().sum() + out_e.sin().sum()).backward()
            grads = [p.grad for p in layer.parameters()] + ([row.grad] if edge_kind == "dummy" else [])
            results.append([out_x, out_e, *grads, *layer.norm_x.running_var, *layer.norm_e.running_mean])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])
