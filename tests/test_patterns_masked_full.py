"""`masked_full`: a dense sparse pattern run as the full pattern with a -inf mask gives the same attention
(values and gradients, GT's clamp included), and is refused where it would not be the same softmax or would
not pay; GT models take it once per batch and compute what they computed on the graph's own edges."""

import pytest
import torch

from sparsegt import Graph, sparse_attention
from sparsegt.patterns import MaskedPattern, full, masked_full


def dense_batch(sizes=(7, 0, 12, 1, 9), p=0.5, seed=0):
    """A batch of random graphs with ~p of all pairs as edges (isolated nodes likely), node labels in x."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        adjacency = torch.rand(n, n, generator=gen) < p
        graphs.append(Graph.from_edge_index(adjacency.nonzero().t().flip(0), n,
                                            x=torch.randint(0, 3, (n,), generator=gen)))
    return Graph.batch(graphs)


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_same_attention_values_and_gradients_as_the_sparse_pattern(clamp):
    graph = dense_batch()
    cover = masked_full(graph, heads=3)
    assert isinstance(cover, MaskedPattern) and cover.pattern.num_edges == full(graph).num_edges
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(graph.num_nodes, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
               for _ in range(3))
    grad = torch.randn(graph.num_nodes, 3, 4, dtype=torch.float64, generator=gen)
    results = []
    for pattern, bias in ((graph, None), (cover.pattern, masked_full(graph, 3, dtype=torch.float64).bias)):
        out = sparse_attention(q, k, v, pattern, bias=bias, score_clamp=clamp)
        results.append([out, *torch.autograd.grad((out * grad).sum(), (q, k, v))])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    isolated = graph.degree() == 0
    assert isolated.any() and (results[1][0][isolated] == 0).all()  # rows without edges: zeros, as the graph


def test_refused_where_it_is_not_the_same_softmax_or_does_not_pay():
    assert masked_full(dense_batch(p=0.05), heads=2) is None  # sparse: the extra scores would cost more
    duplicated = Graph(torch.tensor([0, 3, 4]), torch.tensor([0, 1, 1, 0]), num_cols=2)
    assert masked_full(duplicated, heads=2) is None  # a softmax over a multiset
    two = Graph.batch([Graph.empty(2), Graph.empty(2)])
    across = Graph(torch.tensor([0, 2, 3, 4, 5]), torch.tensor([0, 2, 1, 2, 3]), num_cols=4, ptr=two.ptr)
    assert masked_full(across, heads=2) is None  # an edge between two graphs of the batch
    assert masked_full(Graph.empty(3, 5), heads=2) is None and masked_full(Graph.empty(0), heads=1) is None


def test_gt_model_on_the_cover_computes_what_it_computed_on_the_graph(monkeypatch):
    from sparsegt.data.spec import FeatureSpec, TaskSpec
    from sparsegt.models import GraphTransformer, ModelConfig
    from sparsegt.models.families import GTFamily

    graph = dense_batch(sizes=(10, 6, 14), p=0.45, seed=3)
    torch.manual_seed(0)
    model = GraphTransformer(ModelConfig(layer="gt", num_layers=2, hidden=16, num_heads=4, norm="batch"),
                             TaskSpec("node", "multiclass", 2, "weighted_accuracy"), FeatureSpec("categorical", (3,)),
                             FeatureSpec()).double()
    prepared = GTFamily.prepare(model, model.encode(graph))
    assert isinstance(prepared.pattern, MaskedPattern)
    results = []
    for use_cover in (True, False):
        if not use_cover:
            monkeypatch.setattr(GTFamily, "prepare", staticmethod(lambda model, state: state))
        model.zero_grad()
        out = model(graph)
        out.sin().sum().backward()
        results.append([out.detach(), *(p.grad.clone() for p in model.parameters() if p.grad is not None)])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
