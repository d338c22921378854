"""Layers of sparsegt.nn: forward/backward on awkward batches, equivariance, batch independence, and
dense oracles (torch.nn.MultiheadAttention, dense adjacency products)."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.nn import (
    ExphormerEmbeddings,
    ExphormerInputs,
    ExphormerLayer,
    GCNConv,
    GINEConv,
    GPSLayer,
    GRITLayer,
    GTLayer,
    LayerState,
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


def grit_state(x: torch.Tensor, batch: Graph, pattern: Graph, pair: torch.Tensor) -> LayerState:
    return LayerState(x, batch, pattern=pattern, pair=pair, context=torch.log1p(batch.degree().to(x.dtype)))


def make_layer(name: str):
    torch.manual_seed(0)
    if name.startswith("gps"):
        _, local, attention = name.split("-")
        module = GPSLayer(C, H, local, attention, dropout=0.1, attn_dropout=0.1, topk=3,
                          performer_features=16)
        return module, lambda x, b, e: module(LayerState(x, b, e)).x
    if name == "gt":
        module = GTLayer(C, H, dropout=0.1)
        return module, lambda x, b, e: module(LayerState(x, b)).x
    if name == "gt-edge":
        module = GTLayer(C, H, dropout=0.1, edge_features=True, norm="layer")
        return module, lambda x, b, e: module(LayerState(x, b, e)).x
    if name == "grit":
        module = GRITLayer(C, H, dropout=0.1, attn_dropout=0.1)

        def call(x, b, e):
            pattern = full(b)
            return module(grit_state(x, b, pattern, pair_features(x, pattern))).x
        return module, call
    if name.startswith("exphormer"):
        degree = 0 if name.endswith("noexp") else 4
        module = ExphormerLayer(C, H, "gatedgcn", dropout=0.1, attn_dropout=0.1)
        embeddings = ExphormerEmbeddings(C, 2).to(DT)

        def call(x, b, e):
            structure = exphormer_pattern(b, degree, 2)
            return module(LayerState(x, b, e, pattern=structure, virtual=embeddings.virtual_states(b.num_graphs),
                                     context=ExphormerInputs(embeddings.edge_types(), e))).x
        return module, call
    if name == "mpnn_vn":
        module = MPNNVirtualNodeLayer(C, "gine", dropout=0.1)
        vn = torch.randn(1, C, dtype=DT)
        return module, lambda x, b, e: module(LayerState(x, b, e, virtual=vn.expand(b.num_graphs, -1))).x
    if name == "topk":
        module = TopKAttentionLayer(C, H, k=3, dropout=0.1, attn_dropout=0.1)
        return module, lambda x, b, e: module(LayerState(x, b)).x
    if name.startswith("mpnn-"):
        module = MPNNLayer(name.split("-")[1], C, dropout=0.1)
        return module, lambda x, b, e: module(LayerState(x, b, e)).x
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
    layer(LayerState(torch.randn(warm_up.num_nodes, C, dtype=DT) * 3 + 1, warm_up))
    layer.eval()
    mha = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=DT).eval()
    mha.load_state_dict(layer.attention.state_dict())
    graphs = awkward_graphs(4)
    batch = Graph.batch(graphs)
    with torch.no_grad():
        out = layer(LayerState(batch.x, batch)).x
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
    torch.testing.assert_close(gine(x, graph)[0], expected)
    # with edge features: a dense [N, N, C] message tensor
    messages = torch.zeros(graph.num_nodes, graph.num_nodes, C, dtype=DT)
    messages[graph.row_index(), graph.indices] = torch.relu(x[graph.indices] + graph.edge_attr)
    out, edge_attr = gine(x, graph, graph.edge_attr)
    torch.testing.assert_close(out, gine.mlp(x + messages.sum(1)))
    assert edge_attr is graph.edge_attr  # GINE returns the edge features unchanged (one local convention)
    gcn = GCNConv(C, 5).to(DT)
    a_hat = adjacency + torch.eye(graph.num_nodes, dtype=DT)
    d = a_hat.sum(1).rsqrt()
    expected = (d[:, None] * a_hat * d[None]) @ (x @ gcn.lin.weight.t()) + gcn.lin.bias
    torch.testing.assert_close(gcn(x, graph)[0], expected)


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
    state = layer(grit_state(batch.x, batch, pattern, pair_features(batch.x, pattern)))
    out, pair = state.x, state.pair
    assert out.shape == batch.x.shape and pair.shape == (pattern.num_edges, C)


def grit_equations(layer: GRITLayer, x, pattern, pair, log_degree):
    """GRIT's layer written straight from its docstring (W_Ev applied on every pair, autograd throughout):
    the oracle of the fused kernels."""
    attention = layer.attention
    Hh, D, Cc = attention.num_heads, attention.head_dim, attention.channels
    q, k, v = (lin(x).view(-1, Hh, D) for lin in (attention.query, attention.key, attention.value))
    e_weight, e_bias = attention.edge_lin(pair).view(-1, 2, Hh, D).unbind(1)
    u = (q[pattern.row_index()] + k[pattern.indices]) * e_weight
    signed = torch.sqrt(torch.relu(u) + 1e-8) - torch.sqrt(torch.relu(-u) + 1e-8)
    pair_hat = torch.relu(signed + e_bias)
    score = torch.einsum("ehd,hd->eh", pair_hat, attention.score).contiguous()  # dropout draws in memory order
    if attention.score_clamp is not None:
        score = score.clamp(-attention.score_clamp, attention.score_clamp)
    weight = attention.attn_dropout(segment_softmax(pattern, score))
    message = v[pattern.indices] + torch.einsum("ehd,hdc->ehc", pair_hat, attention.edge_value)
    h = layer.dropout(segment_sum(pattern, weight[..., None] * message).reshape(-1, Cc))
    h = h * layer.degree_scaler[0] + h * log_degree[:, None] * layer.degree_scaler[1]
    h = layer.norm_node(x + layer.node_out(h))  # GRIT: dropout before the scaler and O_h, none after
    new_pair = layer.norm_pair(pair + layer.pair_out(layer.dropout(pair_hat.reshape(-1, Cc))))
    ffn = layer.feed_forward
    return layer.norm_out(h + ffn.lin2(ffn.dropout(ffn.lin1(h).relu()))), new_pair  # no dropout after lin2


@pytest.mark.parametrize(("fused", "dtype", "clamp"), [(True, torch.float64, 0.05), (False, torch.float64, 0.05),
                                                       (True, torch.float32, 0.05), (True, torch.float64, None)])
def test_grit_layer_equals_its_equations_forward_and_backward(fused, dtype, clamp):
    """The fused CPU kernels (and the torch-ops path) give GRIT's equations, clamp and dropout included."""
    torch.manual_seed(11)
    layer = GRITLayer(C, H, dropout=0.1, attn_dropout=0.3, score_clamp=clamp).to(dtype).train()
    layer.attention.fused = fused
    batch = Graph.batch(awkward_graphs(11))
    pattern = full(batch)
    x0 = batch.x.to(dtype)
    pair0 = pair_features(x0, pattern)
    log_degree = torch.log1p(batch.degree().to(dtype))
    results = []
    def run_layer(x, pattern, pair, log_degree):
        state = layer(LayerState(x, batch, pattern=pattern, pair=pair, context=log_degree))
        return state.x, state.pair

    for run in (run_layer, lambda *a: grit_equations(layer, *a)):
        torch.manual_seed(12)  # the same dropout masks in both runs
        x, pair = x0.clone().requires_grad_(True), pair0.clone().requires_grad_(True)
        out, new_pair = run(x, pattern, pair, log_degree)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum() + new_pair.square().sum()
        grads = torch.autograd.grad(loss, [x, pair, *layer.parameters()])
        results.append((out, new_pair, *grads))
    tolerance = dict(atol=1e-10, rtol=1e-8) if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
    if clamp is not None:
        scores = torch.einsum("ehd,hd->eh", layer.attention(x0, pattern, pair0)[1].detach().view(-1, H, C // H),
                              layer.attention.score)
        assert (scores.abs() > clamp).any() and not (scores.abs() > clamp).all()  # the clamp's mask is exercised
    for fused_value, reference in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, reference, **tolerance)


def test_grit_fused_pair_kernel_gradcheck_and_kinks():
    from sparsegt.nn.grit import _PairHat, pair_hat_reference

    g = torch.Generator().manual_seed(13)
    batch = Graph.batch(awkward_graphs(13))
    pattern = full(batch)
    n, e = batch.num_nodes, pattern.num_edges
    q = torch.randn(n, H, C // H, dtype=DT, generator=g, requires_grad=True)
    k = torch.randn(n, H, C // H, dtype=DT, generator=g, requires_grad=True)
    bias = torch.randn(e, C, dtype=DT, generator=g, requires_grad=True)
    pair = torch.randn(e, C, dtype=DT, generator=g, requires_grad=True)
    weight_ew = torch.randn(C, C, dtype=DT, generator=g, requires_grad=True)
    bias_ew = torch.randn(C, dtype=DT, generator=g, requires_grad=True)
    score_weight = torch.randn(H, C // H, dtype=DT, generator=g, requires_grad=True)
    inputs = (q, k, pair, weight_ew, bias_ew, bias, score_weight)
    assert torch.autograd.gradcheck(lambda *t: _PairHat.apply(*t, pattern), inputs, fast_mode=True)
    # exact zeros of rho's argument (zero slope there, as autograd of the reference gives) and of the ReLU
    with torch.no_grad():
        pair[::3] = 0.0
        bias_ew[::2] = 0.0
        bias[1::3] = -1e3
    fused, fused_score = _PairHat.apply(*inputs, pattern)
    weight = torch.nn.functional.linear(pair, weight_ew, bias_ew)
    assert (weight == 0).any()
    reference = pair_hat_reference(q, k, weight, bias, pattern)
    reference_score = torch.einsum("ehd,hd->eh", reference.view(e, H, C // H), score_weight)
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(fused_score, reference_score)
    probes = torch.randn(e, C, dtype=DT, generator=g), torch.randn(e, H, dtype=DT, generator=g)
    for a, b in zip(torch.autograd.grad((fused, fused_score), inputs, probes),
                    torch.autograd.grad((reference, reference_score), inputs, probes), strict=True):
        torch.testing.assert_close(a, b)


def test_grit_fused_attention_split_over_threads_equals_the_torch_path():
    """Large enough to run on two threads in several row chunks (key gradients summed over chunks)."""
    from sparsegt.nn import GRITAttention

    g = torch.Generator().manual_seed(16)
    graphs = [random_graph(n, 3 * n, g, edge_dim=None) for n in (70, 1, 55, 40)]
    pattern = full(Graph.batch(graphs))
    torch.manual_seed(16)
    attention = GRITAttention(32, 4).to(DT)
    x = torch.randn(pattern.num_nodes, 32, dtype=DT, generator=g, requires_grad=True)
    pair = torch.randn(pattern.num_edges, 32, dtype=DT, generator=g, requires_grad=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for fused in (True, False):
            attention.fused = fused
            out, pair_hat = attention(x, pattern, pair)
            grads = torch.autograd.grad(out.sin().sum() + pair_hat.sum(), [x, pair, *attention.parameters()])
            results.append((out, pair_hat, *grads))
    finally:
        torch.set_num_threads(previous)
    import numba

    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert len(pattern.plans().get(("row_chunks", 8), ())) == 9  # eight chunks were used
    for fused_value, reference in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, reference)


def exphormer_reference(layer, embeddings, batch, x, edge_attr, gate_features, pe, virtual, degree):
    """ExphormerLayer as the authors' code computes it: edge lists concatenated (exp_edge_fixer.py), scores
    ``exp(clamp(sum(K_src * Q_dst / sqrt(D) * E(attr)), -5, 5))`` summed by scatter (Exphormer.py, with the
    ``+ 1e-6`` of the denominator left out so that the comparison is exact), GatedGCN with the
    EquivStableLapPE gate (gatedgcn_layer.py), norm1_local / norm1_attn / FFN / norm2 (multi_model_layer.py).
    Returns ``(x, edge_attr, virtual, raw scores)``."""
    n, num_virtual = batch.num_nodes, embeddings.num_virtual
    attention = layer.attention
    heads, width = attention.num_heads, attention.head_dim
    query_of, key_of = batch.row_index(), batch.indices
    srcs, dsts = [key_of], [query_of]
    attrs = [gate_features if gate_features is not None else embeddings.graph_edge.expand(batch.num_edges, -1)]
    if degree:
        from sparsegt.patterns import expander

        links = expander(batch, degree)
        srcs.append(links.indices)
        dsts.append(links.row_index())
        attrs.append(embeddings.expander_edge.expand(links.num_edges, -1))
    for v in range(num_virtual):
        token = n + batch.batch_index * num_virtual + v
        srcs += [torch.arange(n), token]
        dsts += [token, torch.arange(n)]
        attrs += [embeddings.virtual_in[v].expand(n, -1), embeddings.virtual_out[v].expand(n, -1)]
    src, dst, attr = torch.cat(srcs), torch.cat(dsts), torch.cat(attrs)
    tokens = torch.cat([x, virtual])
    q, k, v = (lin(tokens).view(-1, heads, width) for lin in (attention.query, attention.key, attention.value))
    gate = attention.edge(attr).view(-1, heads, width)
    raw = (k[src] * q[dst] / width ** 0.5 * gate).sum(-1, keepdim=True)
    score = raw.clamp(-5, 5).exp()
    weighted = torch.zeros_like(v).index_add(0, dst, v[src] * score)
    total = score.new_zeros(tokens.shape[0], heads, 1).index_add(0, dst, score)
    out = (weighted / torch.where(total > 0, total, torch.ones_like(total))).reshape(tokens.shape)
    gcn = layer.local_model
    a, b, d, e = gcn.node_lin(x).chunk(4, dim=-1)
    edge_hat = d[query_of] + e[key_of] + gcn.edge_lin(edge_attr)
    sigma = torch.sigmoid(edge_hat)
    if pe is not None:
        sigma = sigma * layer.pe_gate((pe[query_of] - pe[key_of]).square().sum(-1, keepdim=True))
    numerator = torch.zeros_like(x).index_add(0, query_of, sigma * b[key_of])
    denominator = torch.zeros_like(x).index_add(0, query_of, sigma)
    h_local = x + gcn.dropout(torch.relu(gcn.norm_x(a + numerator / (denominator + 1e-6))))
    new_edge = edge_attr + gcn.dropout(torch.relu(gcn.norm_e(edge_hat)))
    h = layer.norm_local(h_local) + layer.norm_attention(x + layer.dropout(out[:n]))
    return layer.norm_out(h + layer.feed_forward(h)), new_edge, out[n:], raw


@pytest.mark.parametrize("per_edge_gate", [True, False])
def test_exphormer_layer_equals_the_reference_code(per_edge_gate):
    """Forward and backward of ExphormerLayer (EquivStableLapPE gate, clamp, virtual tokens, expander pairs that
    are also graph edges) against the authors' formulation; per-edge gate features or the typed-keys path."""
    torch.manual_seed(14)
    layer = ExphormerLayer(C, H, "gatedgcn", dropout=0.0, pe_gate=True).to(DT).train()
    embeddings = ExphormerEmbeddings(C, 2).to(DT)
    batch = Graph.batch(awkward_graphs(14))
    structure = exphormer_pattern(batch, 4, 2)
    kinds = structure.entry_type[:, None] == torch.tensor([0, 1])
    pairs = structure.pattern.row_index() * structure.pattern.num_cols + structure.pattern.indices
    graph_and_expander = set(pairs[kinds[:, 0]].tolist()) & set(pairs[kinds[:, 1]].tolist())
    assert graph_and_expander  # such a pair is two softmax terms
    pe = torch.randn(batch.num_nodes, 3, dtype=DT)
    x0, edge0 = 3 * batch.x, batch.edge_attr
    gate0 = torch.randn(batch.num_edges, C, dtype=DT) if per_edge_gate else None
    virtual0 = embeddings.virtual_states(batch.num_graphs).detach()
    results = []
    for run in ("layer", "reference"):
        x, edge_attr, virtual = (t.clone().requires_grad_(True) for t in (x0, edge0, virtual0))
        gate = None if gate0 is None else gate0.clone().requires_grad_(True)
        if run == "layer":
            state = layer(LayerState(x, batch, edge_attr, pattern=structure, virtual=virtual, pe=pe,
                                     context=ExphormerInputs(embeddings.edge_types(), gate)))
            out, new_edge, new_virtual = state.x, state.edge_attr, state.virtual
        else:
            out, new_edge, new_virtual, raw = exphormer_reference(layer, embeddings, batch, x, edge_attr, gate,
                                                                  pe, virtual, 4)
            assert (raw.abs() > 5).any() and not (raw.abs() > 5).all()  # the clamp is exercised
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=DT).view_as(out)).sum() + new_edge.square().sum() \
            + new_virtual.sin().sum()
        inputs = [x, edge_attr, virtual, *([gate] if gate is not None else []), *layer.parameters(),
                  *embeddings.parameters()]
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)  # unused: the graph-edge vector, gates given
        results.append((out, new_edge, new_virtual,
                        *[torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs, strict=True)]))
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference)


def test_exphormer_pattern_has_the_reference_entries():
    """Graph edges, expander edges (kept when they repeat a graph edge), real -> its graph's virtual tokens and
    back; no virtual-virtual or virtual self entries; rows sorted by (type, key)."""
    batch = Graph.batch(awkward_graphs(16))
    n, num_virtual = batch.num_nodes, 3
    structure = exphormer_pattern(batch, 4, num_virtual)
    from sparsegt.patterns import expander

    pattern, kind = structure.pattern, structure.entry_type
    rows, cols = pattern.row_index(), pattern.indices
    assert pattern.num_edges == batch.num_edges + expander(batch, 4).num_edges + 2 * n * num_virtual
    assert structure.num_types == 2 + 2 * num_virtual
    graph_of = torch.cat([batch.batch_index, torch.arange(batch.num_graphs).repeat_interleave(num_virtual)])
    assert (graph_of[rows] == graph_of[cols]).all()
    virtual_row, virtual_col = rows >= n, cols >= n
    assert not (virtual_row & virtual_col).any()
    index = (torch.maximum(rows, cols) - n) % num_virtual
    torch.testing.assert_close(kind[virtual_row], 2 + index[virtual_row])
    torch.testing.assert_close(kind[virtual_col], 2 + num_virtual + index[virtual_col])
    assert ((kind < 2) == ~(virtual_row | virtual_col)).all()
    torch.testing.assert_close(cols[structure.graph_edge_position], batch.indices)
    torch.testing.assert_close(rows[structure.graph_edge_position], batch.row_index())
    typed = structure.typed()
    order = rows * typed.num_cols + typed.indices
    assert (order.diff() >= 0).all() and (typed.indices % pattern.num_cols == cols).all()


def test_exphormer_typed_keys_equal_the_gated_attention():
    """With one gate vector for all graph edges, the gates are folded into per-type keys: same outputs and
    gradients as gating every entry."""
    from sparsegt.nn import ExphormerAttention

    torch.manual_seed(14)
    attention = ExphormerAttention(C, H).to(DT).eval()
    embeddings = ExphormerEmbeddings(C, 2).to(DT)
    batch = Graph.batch(awkward_graphs(14))
    structure = exphormer_pattern(batch, 4, 2)
    tokens = torch.randn(structure.pattern.num_nodes, C, dtype=DT, requires_grad=True)
    types = embeddings.edge_types()
    out = attention(tokens, structure, types)
    reference = attention(tokens, structure, types, types[:1].expand(batch.num_edges, -1))
    torch.testing.assert_close(out, reference)
    probe = torch.randn_like(out)
    inputs = [tokens, *attention.parameters(), types]
    for a, b in zip(torch.autograd.grad(out, inputs, probe), torch.autograd.grad(reference, inputs, probe),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_exphormer_attention_reads_the_given_gate_features_not_the_local_edge_states():
    torch.manual_seed(15)
    layer = ExphormerLayer(C, H, "none").to(DT).eval()
    embeddings = ExphormerEmbeddings(C, 1).to(DT)
    batch = Graph.batch(awkward_graphs(15))
    structure = exphormer_pattern(batch, 4, 1)
    virtual, types = embeddings.virtual_states(batch.num_graphs), embeddings.edge_types()
    states = [torch.randn(batch.num_edges, C, dtype=DT) for _ in range(2)]
    with torch.no_grad():
        plain = [layer(LayerState(batch.x, batch, s, pattern=structure, virtual=virtual,
                                  context=ExphormerInputs(types))).x for s in states]
        gated = layer(LayerState(batch.x, batch, states[0], pattern=structure, virtual=virtual,
                                 context=ExphormerInputs(types, states[0]))).x
    torch.testing.assert_close(plain[0], plain[1])  # the local edge states do not reach the attention
    assert (gated - plain[0]).abs().max() > 1e-6      # the gate features do


def test_gatedgcn_edge_scale_scales_the_gates_in_both_sums():
    from sparsegt.nn import GatedGCNConv

    torch.manual_seed(17)
    conv = GatedGCNConv(C).to(DT).eval()
    batch = Graph.batch(awkward_graphs(17))
    plain = conv(batch.x, batch, batch.edge_attr)
    ones = conv(batch.x, batch, batch.edge_attr, edge_scale=torch.ones(batch.num_edges, 1, dtype=DT))
    for a, b in zip(plain, ones, strict=True):
        torch.testing.assert_close(a, b)
    # a common factor cancels in sum(r σ B x) / sum(r σ) (up to the 1e-6); the edge states never see r
    half = conv(batch.x, batch, batch.edge_attr, edge_scale=torch.full((batch.num_edges, 1), 0.5, dtype=DT))
    torch.testing.assert_close(half[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half[1], plain[1])


def test_rrwp_pairs_read_the_walk_from_the_key_to_the_query_as_grit_does():
    """GRIT's code puts P^k[r, c] on the edge r -> c (PyG source -> target) and c is the query."""
    from sparsegt.encodings import rrwp
    from sparsegt.nn import rrwp_pairs

    path = Graph.from_edge_index(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), 3)
    pattern = full(path)
    pairs = rrwp_pairs(path, pattern, 3)
    at = {(int(i), int(j)): pairs[e] for e, (i, j) in enumerate(zip(pattern.row_index(), pattern.indices))}
    assert at[(1, 0)][1] == 1.0 and at[(0, 1)][1] == 0.5   # node 0 walks to 1 surely; 1 to 0 half the time
    assert at[(0, 0)][0] == 1.0 and at[(1, 1)][2] == 1.0 and at[(0, 2)][2] == 0.5  # identity, two steps
    # in general: the transpose of sparsegt.encodings.rrwp (from the query), on a batch
    batch = Graph.batch(awkward_graphs(18))
    pattern = full(batch)
    ours, from_query = rrwp_pairs(batch, pattern, 4), rrwp(batch, pattern, 4)
    position = edge_positions(pattern, pattern.transpose())  # transposed entry t: (j, i) of pattern.csc()[2][t]
    torch.testing.assert_close(ours[pattern.csc()[2]], from_query[position])


def test_grit_projections_and_encoders_have_the_reference_biases():
    from sparsegt.models import RRWPEncoder

    torch.manual_seed(19)
    layer = GRITLayer(48, 8)
    attention = layer.attention
    assert attention.query.bias is not None and attention.key.bias is None and attention.value.bias is None
    assert attention.edge_lin.bias is not None
    assert 0.8 < layer.degree_scaler.std().item() * (48 + 1) ** 0.5 < 1.2  # GRIT's [1, C, 2] xavier std
    encoder = RRWPEncoder(5, 16)
    assert encoder.node_lin.bias is None and encoder.pair_lin.bias is None
    pattern = full(Graph.batch(awkward_graphs(19)))
    x = torch.zeros(pattern.num_nodes, 16)
    _, pair = encoder(x, pattern, torch.zeros(pattern.num_edges, 5))
    assert (pair == 0).all()  # a pair no walk reaches starts at 0, as GRIT's zero padding


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
    with pytest.raises(ValueError, match="needs state.pattern"):
        GPSLayer(C, H, attention="pattern").to(DT)(LayerState(batch.x, batch))
    with pytest.raises(ValueError, match="rows but the batch has"):
        MPNNVirtualNodeLayer(C).to(DT)(LayerState(batch.x, batch, virtual=torch.zeros(2, C, dtype=DT)))


def test_zero_heads_is_a_named_error_in_every_attention_layer():
    """Issue #14.9: num_heads=0 was a ZeroDivisionError (channels % 0) in Exphormer, GRIT and Performer."""
    from sparsegt.nn.attention import SparseMultiheadAttention
    from sparsegt.nn.exphormer import ExphormerAttention
    from sparsegt.nn.grit import GRITAttention
    from sparsegt.nn.performer import PerformerAttention

    for layer in (SparseMultiheadAttention, ExphormerAttention, GRITAttention, PerformerAttention):
        with pytest.raises(ValueError, match=r"multiple of num_heads \(0\)"):
            layer(8, 0)
