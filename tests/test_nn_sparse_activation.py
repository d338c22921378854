"""Activation sparsity (issue #19): exact top-k keeps k, statistical top-k keeps k within its stated tolerance
on Gaussian rows, gradients flow, the FFN option and the per-layer density measurement, and statistical top-k
as the attention's selection rule."""

from __future__ import annotations

import math

import pytest
import torch

from sparsegt import Graph
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, ModelConfig
from sparsegt.nn import (
    FeedForward,
    SparseMultiheadAttention,
    StatisticalTopKReLU,
    TopKReLU,
    activation_density,
    sparsify_feed_forward,
    statistical_topk_threshold,
    topk_mask,
)
from sparsegt.patterns import full, threshold_topk


def test_exact_topk_keeps_exactly_k_even_with_ties():
    x = torch.randn(50, 37, generator=torch.Generator().manual_seed(0))
    x[:10] = 0.0                                   # rows of equal values
    for k in (0, 1, 5, 37, 40):
        mask = topk_mask(x, k)
        assert mask.sum(-1).eq(min(k, 37)).all()
    mask = topk_mask(x[10:], 5)
    kept_min = x[10:].masked_fill(~mask, math.inf).min(-1).values
    dropped_max = x[10:].masked_fill(mask, -math.inf).max(-1).values
    assert bool((kept_min >= dropped_max).all())


def test_topk_relu_is_relu_on_the_top_k_and_gradients_flow():
    x = torch.randn(20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = TopKReLU(4)(x)
    mask = topk_mask(x, 4)
    assert torch.equal(out, torch.where(mask, x.relu(), torch.zeros_like(x)))
    assert (out != 0).sum(-1).le(4).all()
    out.sum().backward()
    assert torch.equal(x.grad, (mask & (x > 0)).to(x.dtype))


def test_statistical_topk_keeps_k_within_its_tolerance_on_gaussian_rows():
    gen = torch.Generator().manual_seed(2)
    for width, k in ((256, 16), (1024, 64), (1024, 300)):
        x = 3.0 * torch.randn(400, width, generator=gen, dtype=torch.float64) - 1.0
        count = (x > statistical_topk_threshold(x, k)).sum(-1).double()
        assert abs(float(count.mean()) - k) <= 0.05 * k, (width, k, float(count.mean()))
        assert float((count - k).abs().max()) <= 5 * math.sqrt(k), (width, k)
        hard = StatisticalTopKReLU(k, soft=False)(x)
        assert torch.equal(hard != 0, (x > statistical_topk_threshold(x, k)) & (x > 0))


def test_statistical_threshold_edges_and_soft_form():
    x = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert statistical_topk_threshold(x, 0).isposinf().all() and statistical_topk_threshold(x, 8).isneginf().all()
    theta = x.mean(-1, keepdim=True) + x.std(-1, unbiased=False, keepdim=True) * torch.special.ndtri(
        torch.tensor(1 - 2 / 8, dtype=torch.float64))
    assert torch.allclose(statistical_topk_threshold(x, 2), theta)
    assert torch.allclose(StatisticalTopKReLU(2)(x), (x - theta).relu())


def test_statistical_topk_gradients_flow_through_the_threshold():
    x = torch.randn(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    assert torch.autograd.gradcheck(StatisticalTopKReLU(3), (x,))
    assert torch.autograd.gradcheck(TopKReLU(3), (x,))


def test_feed_forward_takes_a_sparse_activation_with_unchanged_weights():
    torch.manual_seed(0)
    dense = FeedForward(6)
    sparse = FeedForward(6, activation=TopKReLU(3))
    assert dense.state_dict().keys() == sparse.state_dict().keys()
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(5, 6)
    hidden = dense.lin1(x)
    assert torch.allclose(sparse(x), dense.lin2(hidden.masked_fill(~topk_mask(hidden, 3), 0).relu()))


def tiny_model_and_batches(layer: str = "gt"):
    torch.manual_seed(0)
    config = ModelConfig(layer=layer, num_layers=2, hidden=8, num_heads=2, head_layers=1)
    model = GraphTransformer(config, TaskSpec("graph", "regression", 1, "mae", higher_is_better=False),
                             FeatureSpec("continuous", dim=3))
    gen = torch.Generator().manual_seed(5)
    graphs = []
    for n in (5, 7, 6):
        ei = torch.randint(0, n, (2, 2 * n), generator=gen)
        ei = torch.cat([ei, ei.flip(0)], 1)
        graphs.append(Graph.from_edge_index(ei, n, x=torch.randn(n, 3, generator=gen), remove_duplicates=True))
    return model, [Graph.batch(graphs[:2]), Graph.batch(graphs[2:])]


def test_activation_density_counts_every_ffn_over_all_batches():
    model, batches = tiny_model_and_batches()
    model.train()
    seen = {}

    def record(name):   # an independent count: hooks on lin1, ReLU applied here
        def hook(module, inputs, output):
            fired, total = seen.get(name, (0, 0))
            seen[name] = (fired + int((output > 0).sum()), total + output.numel())
        return hook

    handles = [m.lin1.register_forward_hook(record(n)) for n, m in model.named_modules()
               if isinstance(m, FeedForward)]
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in handles:
        h.remove()
    model.train()
    density = activation_density(model, batches)
    assert list(density) == ["layers.0.feed_forward", "layers.1.feed_forward"]
    assert density == {name: fired / total for name, (fired, total) in seen.items()}
    assert model.training    # the mode is restored


def test_sparsify_feed_forward_bounds_the_measured_density():
    model, batches = tiny_model_and_batches("gps")
    assert sparsify_feed_forward(model, keep=0.25) == 2
    assert all(m.activation.k == 4 for m in model.modules() if isinstance(m, FeedForward))   # 25% of 16
    assert all(d <= 0.25 for d in activation_density(model, batches).values())
    sparsify_feed_forward(model, keep=4, rule="statistical")
    assert all(isinstance(m.activation, StatisticalTopKReLU) for m in model.modules() if isinstance(m, FeedForward))
    with pytest.raises(ValueError, match="rule"):
        sparsify_feed_forward(model, keep=4, rule="sorted")
    with pytest.raises(ValueError, match="no sparsegt.nn.FeedForward"):
        activation_density(torch.nn.Linear(2, 2), batches)


def test_attention_selects_keys_by_statistical_topk():
    torch.manual_seed(0)
    attention = SparseMultiheadAttention(8, 2).double()
    graph = Graph.batch([Graph.empty(30), Graph.empty(25)])
    x = torch.randn(55, 8, dtype=torch.float64)
    candidates = full(graph)
    q, k, _ = attention.project(x)
    chosen = threshold_topk(q.detach(), k.detach(), candidates, 6)
    out = attention(x, pattern=candidates, keep_top=6, keep_top_rule="statistical")
    assert torch.allclose(out, attention(x, pattern=chosen))
    assert not torch.allclose(out, attention(x, pattern=candidates, keep_top=6))   # exact top-k differs here
    with pytest.raises(ValueError, match="keep_top_rule"):
        attention(x, pattern=candidates, keep_top=6, keep_top_rule="approximate")
