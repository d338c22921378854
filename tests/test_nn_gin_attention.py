"""Graph-Aware Isomorphic Attention (issue #19): GIN with eps = 0 and an identity MLP is attention + a residual
through W_o; the PNA aggregators are the weighted mean / std and the row max / min; Sparse GIN-Attention
fine-tuning starts unchanged and trains exactly L (2Cr + r + C + 1) parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsegt import Graph
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, ModelConfig
from sparsegt.nn import GINAttention, SparseMultiheadAttention
from sparsegt.nn.segment import gather_keys, gather_queries, segment_softmax
from sparsegt.patterns import full, khop
from sparsegt.sparsify import add_sparse_gin_attention

DT = torch.float64


def graph_batch() -> Graph:
    gen = torch.Generator().manual_seed(3)
    graphs = []
    for n in (6, 4):
        ei = torch.randint(0, n, (2, 2 * n), generator=gen)
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)
        graphs.append(Graph.from_edge_index(ei, n, torch.randn(ei.shape[1], 2, generator=gen, dtype=DT),
                                            x=torch.randn(n, 3, generator=gen, dtype=DT), remove_duplicates=True))
    return Graph.batch(graphs)


def test_gin_with_zero_eps_and_identity_mlp_is_attention_plus_residual():
    torch.manual_seed(0)
    layer = GINAttention(8, 2, mlp=nn.Identity()).to(DT)
    x, pattern = torch.randn(10, 8, dtype=DT), full(graph_batch())
    attention = SparseMultiheadAttention(8, 2).to(DT)
    attention.load_state_dict(layer.attention.state_dict())
    _, _, v = attention.project(x)
    residual = v.reshape(10, 8) @ attention.out_proj.weight.T          # W_o v_i (the bias is in attention(x))
    assert torch.allclose(layer(x, pattern), attention(x, pattern=pattern) + residual, atol=1e-12)


def test_pna_aggregators_by_hand():
    torch.manual_seed(1)
    layer = GINAttention(4, 1, aggregation="pna", mlp=nn.Identity(), eps=0.5).to(DT)
    layer.attention.out_proj = nn.Identity()
    batch = graph_batch()
    x, pattern = torch.randn(10, 4, dtype=DT), khop(batch, 1)
    q, k, v = layer.attention.project(x)
    a = segment_softmax(pattern, (gather_queries(pattern, q) * gather_keys(pattern, k)).sum(-1) / 2.0)  # [E, 1]
    out = layer(x, pattern).reshape(10, 5, 4)
    row, col = pattern.row_index(), pattern.indices
    for i in range(10):
        sel = row == i
        w, vals = a[sel, 0, None], v[col[sel], 0]
        mean = (w * vals).sum(0)
        std = torch.sqrt(torch.relu((w * vals * vals).sum(0) - mean * mean) + 1e-5)
        want = torch.stack([1.5 * v[i, 0], mean, std, vals.max(0).values, vals.min(0).values])
        assert torch.allclose(out[i], want, atol=1e-12)


def tiny_model(layer: str) -> GraphTransformer:
    torch.manual_seed(0)
    config = ModelConfig(layer=layer, num_layers=2, hidden=8, num_heads=2, head_layers=1)
    return GraphTransformer(config, TaskSpec("node", "multiclass", 3, "accuracy"), FeatureSpec("continuous", dim=3),
                            FeatureSpec("continuous", dim=2) if layer == "gt" else None).to(DT).eval()


@pytest.mark.parametrize("layer", ["gt", "gps"])
def test_sparse_gin_finetuning_starts_unchanged_and_trains_only_the_budget(layer):
    model, batch = tiny_model(layer), graph_batch()
    before = model(batch)
    trainable = add_sparse_gin_attention(model, hidden=3)
    C, r, L = 8, 3, 2
    assert sum(p.numel() for p in trainable) == L * (2 * C * r + r + C + 1)
    assert model.num_parameters() == L * (2 * C * r + r + C + 1)       # everything else is frozen
    assert torch.equal(model(batch), before)
    with torch.no_grad():
        for p in trainable:
            p.normal_()
    model(batch).sum().backward()
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_gps_layer_with_gin_attention_runs_the_gin_update_over_the_full_pattern():
    """`GPSLayer(attention="gin_attention")`: with eps = -1 and an identity MLP the GIN update is the attention's
    weighted sum alone, so the layer equals the full-attention GPS layer with the same weights."""
    from sparsegt.nn import GPSLayer, LayerState

    torch.manual_seed(0)
    batch = graph_batch()
    x = torch.randn(batch.num_nodes, 8, dtype=DT)
    gin = GPSLayer(8, 2, "gine", "gin_attention").to(DT)
    gin.attention.mlp = nn.Identity()
    with torch.no_grad():
        gin.attention.eps.fill_(-1.0)
    plain = GPSLayer(8, 2, "gine", "full").to(DT)
    plain.load_state_dict({k.replace("attention.attention.", "attention."): v for k, v in gin.state_dict().items()
                           if k != "attention.eps"})
    gin.eval(), plain.eval()
    state = LayerState(x, Graph(batch.indptr, batch.indices, batch.num_nodes, ptr=batch.ptr))
    torch.testing.assert_close(gin(state).x, plain(state).x)
    pna = GPSLayer(8, 2, "gine", "pna_attention").to(DT).eval()
    assert pna(state).x.shape == (batch.num_nodes, 8)
