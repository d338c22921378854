"""Zero-TPrune (issue #19): the recomputed attention weights are the kernel's, the weighted PageRank is
networkx's on the same graph, the pruned sizes are the requested ones, merging is the size-weighted mean into
the most similar kept node, and ratio 0 gives the unpruned model's outputs."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from sparsegt import Graph, sparse_attention
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, ModelConfig
from sparsegt.nn import LayerState, SparseMultiheadAttention
from sparsegt.nn.segment import gather_keys, segment_sum
from sparsegt.patterns import full
from sparsegt.sparsify import ZeroTPrune, attention_weights, prune_and_merge, weighted_pagerank

DT = torch.float64


def random_digraph(n: int, p: float, seed: int) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=gen) < p
    mask[: max(1, n // 4)] = False                     # some dangling nodes (no out-edges)
    rows, cols = mask.nonzero(as_tuple=True)
    return Graph.from_edge_index(torch.stack([cols, rows]), n)


def networkx_pagerank(g: Graph, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    G = nx.DiGraph()
    G.add_nodes_from(range(g.num_nodes))
    for r, c, w in zip(g.row_index().tolist(), g.indices.tolist(), weight.tolist(), strict=True):
        G.add_edge(r, c, weight=w)
    ranks = nx.pagerank(G, alpha=alpha, weight="weight", tol=1e-13, max_iter=10_000)
    return torch.tensor([ranks[v] for v in range(g.num_nodes)], dtype=DT)


@pytest.mark.parametrize("damping", [0.85, 0.5])
def test_weighted_pagerank_equals_networkx_with_dangling_nodes(damping):
    g = random_digraph(15, 0.3, seed=1)
    weight = torch.rand(g.num_edges, dtype=DT, generator=torch.Generator().manual_seed(2)) + 0.1
    ours = weighted_pagerank(g, weight, damping, max_iter=10_000, tol=1e-13)
    assert torch.allclose(ours, networkx_pagerank(g, weight, damping), atol=1e-10)


@pytest.mark.parametrize("damping", [1.0, 0.85])
def test_the_numba_iteration_equals_the_torch_route(damping):
    """The CPU kernel (each graph its own iteration) and the torch route (the GPU's): same scores, on a batch
    with an empty graph, a one-node graph, dangling nodes and 3 heads. At a loose tolerance they differ by
    their stopping rules only (the kernel stops each graph and head when it converges, the torch route when all
    have), within what the tolerance allows."""
    import sparsegt.sparsify.attention_graph as module

    graphs = [random_digraph(n, 0.4, seed=n) for n in (6, 0, 1, 11)]
    batch = Graph.batch(graphs)
    weight = torch.rand(batch.num_edges, 3, dtype=DT, generator=torch.Generator().manual_seed(4)) + 0.05
    loose = [(200, 1e-4)] if damping < 1 else []  # damping 1 has no contraction: no bound from the tolerance
    for max_iter, tol in [(10_000, 1e-13), *loose]:
        kernel = weighted_pagerank(batch, weight, damping, max_iter=max_iter, tol=tol)
        reference = module._power_iteration_torch(batch.row_index(), batch.indices, *_transition(batch, weight),
                                                  batch.batch_index, batch.ptr.diff().to(DT), damping, max_iter, tol)
        # a last L1 change below n tol leaves at most n tol damping / (1 - damping) to the fixed point
        bound = 1e-10 if tol < 1e-10 else 2 * 11 * tol * damping / (1 - damping)
        assert torch.allclose(kernel, reference, atol=bound)
        assert torch.allclose(kernel.reshape(-1, 3)[:6].sum(0), torch.ones(3, dtype=DT))


def test_full_block_dots_are_the_gathered_products_of_a_full_pattern():
    """The padded-block route of `attention_weights` on `full` patterns: the same [E, H] dot products as the
    gathers, in CSR order, with empty and one-node graphs in the batch and for one unbatched graph; any other
    pattern (missing entries, another order, a rectangle) is declined."""
    from sparsegt.nn.segment import gather_keys, gather_queries
    from sparsegt.patterns import full, khop
    from sparsegt.sparsify.attention_graph import full_block_dots

    gen = torch.Generator().manual_seed(5)
    for graph in (Graph.batch([random_digraph(n, 0.3, seed=n) for n in (5, 0, 1, 8, 3)]), random_digraph(7, 0.3, 7)):
        pattern = full(graph)
        q, k = (torch.randn(graph.num_nodes, 2, 4, generator=gen, dtype=DT) for _ in range(2))
        want = (gather_queries(pattern, q) * gather_keys(pattern, k)).sum(-1)
        torch.testing.assert_close(full_block_dots(pattern, q, k), want)
        assert full_block_dots(khop(graph, 1), q, k) is None
    reordered = Graph(pattern.indptr, pattern.indices.flip(0), pattern.num_nodes, validate=False)
    assert full_block_dots(reordered, q, k) is None


@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("sizes", [[6, 1, 9, 4], [20] + [1] * 11])   # padded blocks; gathered pairs (padding 12x)
def test_most_similar_kept_is_the_most_similar_kept_node_of_the_graph(sizes, duplicates):
    """The merge target of every pruned node, by either route of `most_similar_kept`: the kept node of its graph
    with the largest dot product, ties (identical rows) going to the lowest index."""
    import torch.nn.functional as F

    from sparsegt.sparsify.zero_tprune import most_similar_kept

    gen = torch.Generator().manual_seed(8)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(sizes).cumsum(0)])
    x = torch.randn(int(ptr[-1]), 5, generator=gen, dtype=DT)
    pruned = torch.rand(x.shape[0], generator=gen) < 0.4
    pruned[ptr[:-1]] = False                                # every graph keeps a node
    if duplicates:                                          # in the first graph: 1 and 3 equal to 4, 4 pruned
        x[1], x[3] = x[4], x[4]
        pruned[1], pruned[3], pruned[4] = False, False, True
    unit = F.normalize(x, dim=-1)
    target = most_similar_kept(unit, ptr, pruned)
    assert torch.equal(target[pruned], _pairs_route(unit, ptr, pruned)[pruned])
    if duplicates:
        assert int(target[4]) == 1


def _pairs_route(unit: torch.Tensor, ptr: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """The gathered-pairs route of `most_similar_kept`, written out by hand."""
    out = torch.full((unit.shape[0],), -1)
    for b in range(ptr.numel() - 1):
        nodes = range(int(ptr[b]), int(ptr[b + 1]))
        kept = [j for j in nodes if not pruned[j]]
        for i in nodes:
            if pruned[i]:
                scores = torch.stack([(unit[i] * unit[j]).sum() for j in kept])
                out[i] = kept[int(torch.nonzero(scores == scores.max())[0])]
    return out


def _transition(g: Graph, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros(g.num_nodes, weight.shape[1], dtype=DT).index_add_(0, g.row_index(), weight)
    return weight / out[g.row_index()].clamp_min(1e-300), (out == 0).to(DT)


def test_weighted_pagerank_runs_per_graph_and_per_head():
    graphs = [random_digraph(n, 0.4, seed=n) for n in (6, 9)]
    batch = Graph.batch(graphs)
    weight = torch.rand(batch.num_edges, 2, dtype=DT, generator=torch.Generator().manual_seed(3)) + 0.05
    ours = weighted_pagerank(batch, weight, 0.85, max_iter=10_000, tol=1e-13)
    start = 0
    for b, g in enumerate(graphs):
        e0, e1 = int(batch.edge_ptr[b]), int(batch.edge_ptr[b + 1])
        for h in range(2):
            want = networkx_pagerank(g, weight[e0:e1, h], 0.85)
            assert torch.allclose(ours[start:start + g.num_nodes, h], want, atol=1e-10)
        start += g.num_nodes


def test_attention_weights_are_the_kernels_and_their_pagerank_is_networkx_on_the_attention_graph():
    torch.manual_seed(0)
    attention = SparseMultiheadAttention(8, 2, edge_dim=3, edge_mode="gate", score_clamp=0.5).to(DT)
    graph = Graph.batch([random_digraph(7, 0.5, seed=4), random_digraph(5, 0.6, seed=5)])
    x, edge_attr = torch.randn(12, 8, dtype=DT), torch.randn(graph.num_edges, 3, dtype=DT)
    pattern, weights = attention_weights(attention, x, graph, edge_attr=edge_attr)
    _, _, v = attention.project(x)
    mixed = segment_sum(pattern, weights[:, :, None] * gather_keys(pattern, v))       # sum_j a_ij v_j
    assert torch.allclose(attention.out_proj(mixed.flatten(1)), attention(x, pattern=graph, edge_attr=edge_attr))
    # the full attention graph of one graph (self-loops, all rows normalised) with Zero-TPrune's damping 1
    plain = SparseMultiheadAttention(8, 2).to(DT)
    pattern, weights = attention_weights(plain, x[:7], full(Graph.empty(7)))
    q, k, v = plain.project(x[:7])
    assert torch.allclose(sparse_attention(q, k, v, pattern),
                          segment_sum(pattern, weights[:, :, None] * gather_keys(pattern, v)))
    ours = weighted_pagerank(pattern, weights.mean(-1), damping=1.0, max_iter=10_000, tol=1e-13)
    assert torch.allclose(ours, networkx_pagerank(pattern, weights.mean(-1), 1.0), atol=1e-10)


def test_prune_and_merge_by_hand():
    # one path graph 0-1-2-3; importance ranks nodes 2 and 3 lowest; 2 is closest to 0, 3 to 1
    edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    graph = Graph.from_edge_index(edges, 4)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, 2.0]], dtype=DT)
    state = LayerState(x, graph, edge_attr=torch.arange(6, dtype=DT)[:, None], pattern=full(graph))
    importance = torch.tensor([0.4, 0.3, 0.1, 0.2], dtype=DT)
    new, origin, size = prune_and_merge(state, importance, 0.5, torch.arange(4), torch.ones(4, dtype=DT))
    assert torch.allclose(new.x, torch.tensor([[0.95, 0.05], [0.0, 1.5]], dtype=DT))
    assert origin.tolist() == [0, 1, 0, 1] and size.tolist() == [2.0, 2.0]
    assert new.graph.to_edge_index().tolist() == [[1, 0], [0, 1]]       # only the edge 0-1 is left
    assert new.edge_attr[:, 0].tolist() == [0.0, 1.0]   # CSR entries 0 (0 <- 1) and 1 (1 <- 0) keep their states
    assert new.pattern.num_edges == 4                                  # full on the two kept nodes


def tiny_model(layer: str, level: str = "graph", **extra) -> GraphTransformer:
    torch.manual_seed(0)
    task = (TaskSpec("graph", "regression", 2, "mae", higher_is_better=False) if level == "graph"
            else TaskSpec("node", "multiclass", 3, "accuracy"))
    config = ModelConfig(layer=layer, num_layers=3, hidden=8, num_heads=2, head_layers=1, **extra)
    model = GraphTransformer(config, task, FeatureSpec("continuous", dim=3),
                             FeatureSpec("continuous", dim=2) if layer == "gt" else None).to(DT)
    model.train()
    for _ in range(2):   # move the BatchNorm running statistics off their initial values
        model(batch_of([9, 5, 12]))
    return model


def batch_of(sizes: list[int], seed: int = 6) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        ei = torch.randint(0, n, (2, 2 * n), generator=gen)
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)
        edge_attr = torch.randn(ei.shape[1], 2, generator=gen, dtype=DT)
        graphs.append(Graph.from_edge_index(ei, n, edge_attr, x=torch.randn(n, 3, generator=gen, dtype=DT),
                                            remove_duplicates=True))
    return Graph.batch(graphs)


@pytest.mark.parametrize("layer,level,extra", [("gps", "graph", {}), ("gt", "node", {}),
                                                ("gps", "node", {"attention": "topk", "topk": 3})])
def test_ratio_zero_gives_the_unpruned_outputs(layer, level, extra):
    model = tiny_model(layer, level, **extra)
    batch = batch_of([9, 5, 12], seed=7)
    model.eval()
    with torch.no_grad():
        want = model(batch)
    model.train()
    result = ZeroTPrune(model, {0: 0.0, 1: 0.0}).run(batch)
    assert torch.allclose(result.output, want, atol=1e-12)
    assert result.nodes_per_layer == [26, 26, 26, 26] and result.nodes_per_graph == [9, 5, 12]
    assert model.training


def test_pruned_sizes_are_as_requested():
    model = tiny_model("gps")
    sizes = [9, 5, 12, 1]
    result = ZeroTPrune(model, {0: 0.5, 1: 0.25}).run(batch_of(sizes, seed=8))
    expected = []
    for n in sizes:
        after0 = n - min(math.floor(0.5 * n + 0.5), n - 1)
        expected.append(after0 - min(math.floor(0.25 * after0 + 0.5), after0 - 1))
    assert result.nodes_per_graph == expected
    assert result.nodes_per_layer[0] == sum(sizes) and result.nodes_per_layer[-1] == sum(expected)
    assert result.output.shape == (4, 2) and bool(torch.isfinite(result.output).all())


def test_node_level_outputs_follow_the_merges():
    model = tiny_model("gt", "node")
    batch = batch_of([9, 5, 12], seed=9)
    out = ZeroTPrune(model, {0: 0.4}).run(batch)
    assert out.output.shape == (26, 3)
    assert out.nodes_per_graph == [9 - 4, 5 - 2, 12 - 5]
    assert torch.unique(out.output, dim=0).shape[0] == sum(out.nodes_per_graph)   # one row per kept node


def test_unsupported_models_and_schedules_are_value_errors():
    with pytest.raises(ValueError, match="layer index"):
        ZeroTPrune(tiny_model("gps"), {2: 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ZeroTPrune(tiny_model("gps"), {0: 1.0})
    torch.manual_seed(0)
    performer = GraphTransformer(ModelConfig(layer="gps", attention="performer", num_layers=2, hidden=8,
                                             num_heads=2), TaskSpec("graph", "regression", 1, "mae"),
                                 FeatureSpec("continuous", dim=3))
    with pytest.raises(ValueError, match="performer"):
        ZeroTPrune(performer, {0: 0.5})
