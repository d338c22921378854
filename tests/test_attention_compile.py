"""`sparse_attention` under torch.compile: one custom op, no graph break, the same values and gradients as
eager (a GPS layer with GINE and full attention; the attention call alone with bias, gate and dropout)."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph, sparse_attention
from sparsegt.nn.gps import GPSLayer
from sparsegt.nn.state import LayerState
from sparsegt.patterns import full


def small_batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n in (7, 1, 12):
        edges = torch.randint(0, n, (2, 2 * n), generator=gen)
        graphs.append(Graph.from_edge_index(edges, n, remove_duplicates=True))
    batch = Graph.batch(graphs)
    x = torch.randn(batch.num_nodes, 16, generator=gen, dtype=dtype)
    edge_attr = torch.randn(batch.num_edges, 16, generator=gen, dtype=dtype)
    return batch, x, edge_attr


def test_gps_layer_compiles_without_graph_breaks_and_matches_eager():
    torch.manual_seed(0)
    layer = GPSLayer(16, num_heads=4, local="gine", attention="full").double().eval()
    batch, x, edge_attr = small_batch()
    pattern = full(batch)

    def step(x, edge_attr):
        return layer(LayerState(x, batch, edge_attr, pattern)).x

    explanation = torch._dynamo.explain(step)(x, edge_attr)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    ops = [str(node.target) for graph in explanation.graphs for node in graph.graph.nodes]
    assert any("sparsegt.sparse_attention" in op for op in ops), ops

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    results = []
    for run in (step, compiled):
        xs, es = x.clone().requires_grad_(), edge_attr.clone().requires_grad_()
        out = run(xs, es)
        params = [p for p in layer.parameters() if p.requires_grad]
        grads = torch.autograd.grad(out.pow(2).sum(), (xs, es, *params), allow_unused=True)
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-10, rtol=1e-9)
    for a, b in zip(results[1][1], results[0][1]):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("backend", ["auto", "cpu", "torch"])
def test_compiled_attention_with_bias_gate_and_seeded_dropout_matches_eager(backend):
    g = full(Graph.batch([Graph.empty(9), Graph.empty(4)]))
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(13, 2, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(g.num_edges, 2, generator=gen, dtype=torch.float64)
    gate = torch.randn(g.num_edges, 2, 4, generator=gen, dtype=torch.float64)

    def attend(q, k, v, bias, gate):
        out, lse = sparse_attention(q, k, v, g, bias=bias, gate=gate, dropout_p=0.25, dropout_seed=1234,
                                    return_lse=True, backend=backend)
        return (out * out).sum() + torch.where(torch.isfinite(lse), lse, 0).sum()

    compiled = torch.compile(attend, backend="aot_eager", fullgraph=True)
    results = []
    for run in (attend, compiled):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, bias, gate)]
        loss = run(*leaves)
        results.append((loss.detach(), torch.autograd.grad(loss, leaves)))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["gps-pattern", "gt-pattern", "exphormer-pattern", "grit-pattern"])
def test_preset_models_compile_and_match_eager(name):
    """Each PATTERN preset (2 layers) compiled whole (graph breaks allowed, e.g. where patterns are built):
    the numba layer kernels step aside for their torch ops while tracing, attention is the custom op;
    outputs and parameter gradients equal eager's in float64."""
    from .test_layer_contract import build, cases, make_batch, synthetic_state

    config, level, edge_features = cases()[name]
    model = build(config, level, edge_features)
    model.load_state_dict(synthetic_state([(k, tuple(v.shape), str(v.dtype)) for k, v in
                                           model.state_dict().items()]))
    model.eval()
    batch = make_batch(config, edge_features)
    compiled = torch.compile(model, backend="aot_eager")
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for run in (model, compiled):
        out = run(batch)
        results.append((out.detach(), torch.autograd.grad(out.pow(2).sum(), params, allow_unused=True)))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-10, rtol=1e-9)
    for a, b in zip(results[1][1], results[0][1]):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
