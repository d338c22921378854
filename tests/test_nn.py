"""Layers of sparsegt.nn: forward/backward on awkward batches, equivariance, batch independence, and
dense oracles (torch.nn.MultiheadAttention, dense adjacency products)."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.nn import (
    ExphormerLayer,
    GCNConv,
    GINEConv,
    GPSLayer,
    GRITLayer,
    GTLayer,
    MPNNLayer,
    MPNNVirtualNodeLayer,
    PerformerAttention,
    SparseMultiheadAttention,
    TopKAttentionLayer,
    exphormer_pattern,
)
from sparsegt.nn.segment import (
    edge_positions,
    gather_keys,
    gather_queries,
    neighbour_sum,
    segment_softmax,
    segment_sum,
)
from sparsegt.patterns import full

C, H = 8, 2
DT = torch.float64


def random_graph(n: int, num_edges: int, generator: torch.Generator, edge_dim: int | None = C) -> Graph:
    if n == 0 or num_edges == 0:
        ei = torch.zeros(2, 0, dtype=torch.long)
    else:
        ei = torch.randint(0, n, (2, num_edges), generator=generator)
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)  # undirected, as the benchmark graphs
    edge_attr = None
    if edge_dim is not None:
        edge_attr = torch.randn(ei.shape[1], edge_dim, generator=generator, dtype=DT)
    x = torch.randn(n, C, generator=generator, dtype=DT)
    return Graph.from_edge_index(ei, n, edge_attr, x=x, remove_duplicates=True)


def awkward_graphs(seed: int = 0) -> list[Graph]:
    """Graphs of 6, 0, 1, 9 and 4 nodes: an empty and a one-node graph in the middle."""
    g = torch.Generator().manual_seed(seed)
    return [random_graph(n, m, g) for n, m in ((6, 8), (0, 0), (1, 0), (9, 14), (4, 3))]


def permute_graph(graph: Graph, perm: torch.Tensor) -> Graph:
    """New node i is old node perm[i]."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    ei = inverse[graph.to_edge_index()]
    return Graph.from_edge_index(ei, graph.num_nodes, graph.edge_attr, x=graph.x[perm])


# ---------------------------------------------------------------- layer zoo: name -> (module, call)
def pair_features(x: torch.Tensor, pattern: Graph) -> torch.Tensor:
    """Pair states that permute with the nodes (GRIT's input in the layer tests)."""
    return torch.tanh(x[pattern.row_index()] * x[pattern.indices] + x[pattern.indices])


def make_layer(name: str):
    torch.manual_seed(0)
    if name.startswith("gps"):
        _, local, attention = name.split("-")
        module = GPSLayer(C, H, local, attention, dropout=0.1, attn_dropout=0.1, topk=3,
                          performer_features=16)
        return module, lambda x, b, e: module(x, b, e)[0]
    if name == "gt":
        module = GTLayer(C, H, dropout=0.1)
        return module, lambda x, b, e: module(x, b)[0]
    if name == "gt-edge":
        module = GTLayer(C, H, dropout=0.1, edge_features=True, norm="layer")
        return module, lambda x, b, e: module(x, b, e)[0]
    if name == "grit":
        module = GRITLayer(C, H, dropout=0.1, attn_dropout=0.1)

        def call(x, b, e):
            pattern = full(b)
            return module(x, pattern, pair_features(x, pattern), torch.log1p(b.degree().to(x.dtype)))[0]
        return module, call
    if name.startswith("exphormer"):
        degree = 0 if name.endswith("noexp") else 4
        module = ExphormerLayer(C, H, "gatedgcn", dropout=0.1, attn_dropout=0.1)
        virtual_state = torch.randn(2, C, dtype=DT)

        def call(x, b, e):
            structure = exphormer_pattern(b, degree, 2)
            return module(x, b, structure, e, virtual_state.repeat(b.num_graphs, 1))[0]
        return module, call
    if name == "mpnn_vn":
        module = MPNNVirtualNodeLayer(C, "gine", dropout=0.1)
        vn = torch.randn(1, C, dtype=DT)
        return module, lambda x, b, e: module(x, b, e, vn.expand(b.num_graphs, -1))[0]
    if name == "topk":
        module = TopKAttentionLayer(C, H, k=3, dropout=0.1, attn_dropout=0.1)
        return module, lambda x, b, e: module(x, b)
    if name.startswith("mpnn-"):
        module = MPNNLayer(name.split("-")[1], C, dropout=0.1)
        return module, lambda x, b, e: module(x, b, e)[0]
    if name == "performer":
        module = PerformerAttention(C, H, num_features=16)
        return module, lambda x, b, e: module(x, b)
    raise AssertionError(name)


LAYERS = ["gps-gine-full", "gps-gatedgcn-full", "gps-none-full", "gps-gine-topk", "gps-gine-performer",
          "gps-gatedgcn-none", "gt", "gt-edge", "grit", "exphormer", "exphormer-noexp", "mpnn_vn", "topk",
          "mpnn-gine", "mpnn-gatedgcn", "mpnn-gcn", "performer"]
# A random expander is keyed by node position, so Exphormer with one is not permutation-equivariant.
EQUIVARIANT = [name for name in LAYERS if name != "exphormer"]


@pytest.mark.parametrize("name", LAYERS)
def test_forward_backward_on_empty_and_single_node_graphs(name):
    module, call = make_layer(name)
    module = module.to(DT).train()
    batch = Graph.batch(awkward_graphs())
    x = batch.x.clone().requires_grad_(True)
    out = call(x, batch, batch.edge_attr)
    assert out.shape == (batch.num_nodes, C)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_permutation_equivariance(name):
    module, call = make_layer(name)
    module = module.to(DT).eval()
    graphs = awkward_graphs(1)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(gr.num_nodes, generator=g) for gr in graphs]
    batch = Graph.batch(graphs)
    permuted = Graph.batch([permute_graph(gr, p) for gr, p in zip(graphs, perms, strict=True)])
    offsets = batch.ptr[:-1].tolist()
    global_perm = torch.cat([p + o for p, o in zip(perms, offsets, strict=True)])
    with torch.no_grad():
        out = call(batch.x, batch, batch.edge_attr)
        out_perm = call(permuted.x, permuted, permuted.edge_attr)
    torch.testing.assert_close(out_perm, out[global_perm], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", LAYERS)
def test_batch_independence(name):
    module, call = make_layer(name)
    module = module.to(DT).eval()
    graphs = awkward_graphs(2)
    batch = Graph.batch(graphs)
    with torch.no_grad():
        together = call(batch.x, batch, batch.edge_attr)
        for i, graph in enumerate(graphs):
            alone_batch = Graph.batch([graph])
            alone = call(alone_batch.x, alone_batch, alone_batch.edge_attr)
            lo, hi = int(batch.ptr[i]), int(batch.ptr[i + 1])
            torch.testing.assert_close(together[lo:hi], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- dense oracles
def test_sparse_mha_loads_torch_mha_weights_and_matches_per_graph():
    torch.manual_seed(3)
    mha = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=DT).eval()
    ours = SparseMultiheadAttention(C, H).to(DT).eval()
    ours.load_state_dict(mha.state_dict())
    graphs = awkward_graphs(3)
    batch = Graph.batch(graphs)
    out = ours(batch.x, batch.x, batch.x, full(batch))
    for i, graph in enumerate(graphs):
        if graph.num_nodes == 0:
            continue
        ref, _ = mha(graph.x[None], graph.x[None], graph.x[None], need_weights=False)
        torch.testing.assert_close(out[int(batch.ptr[i]):int(batch.ptr[i + 1])], ref[0])


def test_gps_layer_full_attention_equals_dense_multihead_attention():
    torch.manual_seed(4)
    layer = GPSLayer(C, H, local="none", attention="full").to(DT)
    # non-trivial BatchNorm statistics, then evaluation mode
    layer.train()
    warm_up = Graph.batch(awkward_graphs(9) * 3)
    layer(torch.randn(warm_up.num_nodes, C, dtype=DT) * 3 + 1, warm_up)
    layer.eval()
    mha = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=DT).eval()
    mha.load_state_dict(layer.attention.state_dict())
    graphs = awkward_graphs(4)
    batch = Graph.batch(graphs)
    with torch.no_grad():
        out, _ = layer(batch.x, batch)
        for i, graph in enumerate(graphs):
            if graph.num_nodes == 0:
                continue
            x = graph.x
            attended, _ = mha(x[None], x[None], x[None], need_weights=False)
            h = layer.norm_attention(x + attended[0])
            ref = layer.norm_out(h + layer.feed_forward.lin2(torch.relu(layer.feed_forward.lin1(h))))
            torch.testing.assert_close(out[int(batch.ptr[i]):int(batch.ptr[i + 1])], ref)


def test_gine_and_gcn_match_dense_adjacency():
    torch.manual_seed(5)
    graph = awkward_graphs(5)[3]
    adjacency = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=DT)
    adjacency[graph.row_index(), graph.indices] = 1.0
    x = graph.x
    gine = GINEConv(C).to(DT)
    torch.nn.init.normal_(gine.dummy_edge)
    expected = gine.mlp(x + adjacency @ torch.relu(x + gine.dummy_edge))
    torch.testing.assert_close(gine(x, graph), expected)
    # with edge features: a dense [N, N, C] message tensor
    messages = torch.zeros(graph.num_nodes, graph.num_nodes, C, dtype=DT)
    messages[graph.row_index(), graph.indices] = torch.relu(x[graph.indices] + graph.edge_attr)
    torch.testing.assert_close(gine(x, graph, graph.edge_attr), gine.mlp(x + messages.sum(1)))
    gcn = GCNConv(C, 5).to(DT)
    a_hat = adjacency + torch.eye(graph.num_nodes, dtype=DT)
    d = a_hat.sum(1).rsqrt()
    expected = (d[:, None] * a_hat * d[None]) @ (x @ gcn.lin.weight.t()) + gcn.lin.bias
    torch.testing.assert_close(gcn(x, graph), expected)


def test_performer_approaches_softmax_attention_per_graph():
    torch.manual_seed(6)
    performer = PerformerAttention(C, H, num_features=4096).to(DT)
    exact = SparseMultiheadAttention(C, H).to(DT)
    with torch.no_grad():
        exact.in_proj_weight.copy_(performer.qkv.weight * 0.3)
        performer.qkv.weight.mul_(0.3)
        exact.in_proj_bias.copy_(performer.qkv.bias)
        exact.out_proj.load_state_dict(performer.out_proj.state_dict())
    batch = Graph.batch(awkward_graphs(6))
    approx, reference = performer(batch.x, batch), exact(batch.x, pattern=full(batch))
    assert (approx - reference).abs().max() < 0.1 * reference.abs().max()


def test_grit_attention_rows_are_convex_combinations():
    torch.manual_seed(7)
    layer = GRITLayer(C, H).to(DT)
    batch = Graph.batch(awkward_graphs(7))
    pattern = full(batch)
    scores = torch.randn(pattern.num_edges, H, dtype=DT)
    weights = segment_softmax(pattern, scores)
    row_sums = segment_sum(pattern, weights)
    nonempty = pattern.degree() > 0
    torch.testing.assert_close(row_sums[nonempty], torch.ones_like(row_sums[nonempty]))
    out, pair = layer(batch.x, pattern, pair_features(batch.x, pattern), torch.log1p(batch.degree().to(DT)))
    assert out.shape == batch.x.shape and pair.shape == (pattern.num_edges, C)


# ---------------------------------------------------------------- segment primitives
def test_segment_primitives_gradcheck_and_match_index_add():
    g = torch.Generator().manual_seed(8)
    graph = Graph.from_edge_index(torch.randint(0, 6, (2, 17), generator=g), 8)  # rows 6, 7 empty
    x = torch.randn(8, 3, dtype=DT, generator=g, requires_grad=True)
    w = torch.rand(graph.num_edges, dtype=DT, generator=g, requires_grad=True)
    v = torch.randn(graph.num_edges, 2, 3, dtype=DT, generator=g, requires_grad=True)
    s = torch.randn(graph.num_edges, 2, dtype=DT, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: neighbour_sum(graph, x, w), (x, w), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: segment_sum(graph, v), (v,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: gather_keys(graph, x), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: gather_queries(graph, x), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda s: segment_softmax(graph, s), (s,), fast_mode=True)
    row = graph.row_index()
    expected = torch.zeros(8, 3, dtype=DT).index_add(0, row, x[graph.indices] * w[:, None])
    torch.testing.assert_close(neighbour_sum(graph, x, w), expected)
    batch = Graph.batch(awkward_graphs(8))
    built = full(batch)
    sorted_csc = Graph(built.indptr, built.indices, built.num_cols).csc()  # fresh graph: csc by sorting
    for computed, sorted_ in zip(built.csc(), sorted_csc, strict=True):
        assert torch.equal(computed, sorted_)
    everything = full(graph)
    positions = edge_positions(everything, graph)
    assert torch.equal(everything.row_index()[positions], row)
    assert torch.equal(everything.indices[positions], graph.indices)


def test_bad_inputs_raise_value_errors():
    batch = Graph.batch(awkward_graphs())
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SparseMultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="local must be one of"):
        GPSLayer(C, H, local="gin")
    with pytest.raises(ValueError, match="edge_mode=None"):
        attention = SparseMultiheadAttention(C, H)
        attention(batch.x.float(), pattern=batch, edge_attr=torch.zeros(batch.num_edges, C))
    with pytest.raises(ValueError, match="needs attention_pattern"):
        GPSLayer(C, H, attention="pattern").to(DT)(batch.x, batch)
    with pytest.raises(ValueError, match="rows but the batch has"):
        MPNNVirtualNodeLayer(C).to(DT)(batch.x, batch, None, torch.zeros(2, C, dtype=DT))
