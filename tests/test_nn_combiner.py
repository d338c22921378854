"""Combiner (issue #19): the rectangular pattern reaches every key of a graph once; regions of one key are full
attention; the implied distribution over keys sums to 1 per query; gradients are exact (gradcheck, fp64)."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.nn import CombinerAttention, SparseMultiheadAttention, combiner_attention
from sparsegt.patterns import block_regions, combiner_pattern, full

DT = torch.float64


def batch_of(sizes: list[int]) -> Graph:
    return Graph.batch([Graph.empty(n) for n in sizes])


def test_block_regions_are_contiguous_blocks_per_graph():
    regions = block_regions(batch_of([5, 3]), 2)
    assert regions.tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
    assert block_regions(torch.tensor([0, 4]), 4).tolist() == [0, 0, 0, 0]


def test_the_pattern_has_own_region_keys_then_other_region_summaries():
    batch = batch_of([5, 3])
    combiner = combiner_pattern(batch, torch.tensor([7, 7, 2, 2, 2, 9, 9, 4]))
    pattern, N = combiner.pattern, 8
    assert pattern.num_nodes == N and pattern.num_cols == N + 4
    rows = [pattern.indices[pattern.indptr[i]:pattern.indptr[i + 1]].tolist() for i in range(N)]
    region = combiner.region.tolist()
    assert region[0] == region[1] != region[2] and combiner.region_size.sum() == N
    for i in range(N):
        graph = 0 if i < 5 else 1
        nodes = range(0, 5) if graph == 0 else range(5, 8)
        own = [j for j in nodes if region[j] == region[i]]
        others = sorted({N + region[j] for j in nodes if region[j] != region[i]})
        assert rows[i] == own + others
    with pytest.raises(ValueError, match="more than one graph"):
        combiner_pattern(batch, torch.tensor([0, 0, 1, 1, 1, 1, 2, 2]))


def test_regions_of_one_key_are_full_attention():
    torch.manual_seed(0)
    batch = batch_of([6, 4, 5])
    layer = CombinerAttention(8, 2).to(DT)
    torch.nn.init.normal_(layer.pool_score.weight)          # pooling is irrelevant with one key per region
    x = torch.randn(15, 8, dtype=DT)
    combiner = combiner_pattern(batch, torch.arange(15))
    reference = SparseMultiheadAttention(8, 2).to(DT)
    reference.load_state_dict(layer.attention.state_dict())
    assert torch.allclose(layer(x, combiner), reference(x, pattern=full(batch)), atol=1e-12, rtol=0)


def dense_key_distribution(q, k, pool_logits, region, size, graph):
    """p(j|i) [N, N, H] by the definition (direct in the own region, summary mass times q_r(j) elsewhere)."""
    N, H, D = q.shape
    same_graph = graph[:, None] == graph[None, :]
    same_region = region[:, None] == region[None, :]
    q_r = torch.zeros(N, H, dtype=DT)
    for r in region.unique():
        members = region == r
        q_r[members] = torch.softmax(pool_logits[members], 0)
    k_r = torch.zeros(len(size), H, D, dtype=DT).index_add(0, region, q_r[..., None] * k)
    direct = torch.einsum("ihd,jhd->ijh", q, k) / D ** 0.5
    summary = torch.einsum("ihd,rhd->irh", q, k_r) / D ** 0.5 + torch.log(size.to(DT))[None, :, None]
    p = torch.zeros(N, N, H, dtype=DT)
    for i in range(N):
        cols = [j for j in range(N) if same_graph[i, j] and same_region[i, j]]
        regs = sorted({int(region[j]) for j in range(N) if same_graph[i, j] and not same_region[i, j]})
        scores = torch.cat([direct[i, cols], summary[i, regs]])
        weights = torch.softmax(scores, 0)
        p[i, cols] = weights[: len(cols)]
        for n, r in enumerate(regs):
            members = region == r
            p[i, members] = weights[len(cols) + n] * q_r[members]
    return p


def test_local_and_summary_probabilities_sum_to_one_per_query():
    torch.manual_seed(1)
    batch = batch_of([7, 5])
    combiner = combiner_pattern(batch, block_regions(batch, 3))
    N, H, D = 12, 2, 3
    q, k = torch.randn(N, H, D, dtype=DT), torch.randn(N, H, D, dtype=DT)
    pool_logits = torch.randn(N, H, dtype=DT)
    identity = torch.eye(N, dtype=DT)[:, None, :].expand(N, H, N).contiguous()    # v_j = e_j: out_i = p(.|i)
    p = combiner_attention(q, k, identity, pool_logits, combiner)                  # [N, H, N]
    graph = batch.batch_index
    assert torch.allclose(p.sum(-1), torch.ones(N, H, dtype=DT), atol=1e-12)
    same_graph = graph[:, None] == graph[None, :]
    assert bool((p.permute(0, 2, 1)[same_graph] > 0).all())        # every key of the graph is reached
    assert bool((p.permute(0, 2, 1)[~same_graph] == 0).all())
    expected = dense_key_distribution(q, k, pool_logits, combiner.region, combiner.region_size, graph)
    assert torch.allclose(p.permute(0, 2, 1), expected, atol=1e-12)


def test_gradients_flow_gradcheck():
    torch.manual_seed(2)
    batch = batch_of([4, 3])
    combiner = combiner_pattern(batch, block_regions(batch, 2))
    N, H, D = 7, 2, 2
    inputs = [torch.randn(N, H, D, dtype=DT, requires_grad=True) for _ in range(3)]
    inputs.append(torch.randn(N, H, dtype=DT, requires_grad=True))
    assert torch.autograd.gradcheck(lambda q, k, v, t: combiner_attention(q, k, v, t, combiner, backend="torch"),
                                    inputs)


@pytest.mark.parametrize("block", [1, 64])
def test_gps_layer_with_combiner_attention_is_full_attention_at_the_extremes(block):
    """Regions of one node (summaries = the keys themselves) and one region per graph (every key direct) are
    both full attention: `GPSLayer(attention="combiner")` then computes what the same layer with full attention
    computes, weights shared."""
    from sparsegt.nn import GPSLayer, LayerState

    torch.manual_seed(0)
    graphs = [Graph.from_edge_index(torch.randint(0, n, (2, 2 * n)), n, x=torch.randn(n, 8, dtype=DT))
              for n in (6, 1, 9)]
    batch = Graph.batch(graphs)
    combiner = GPSLayer(8, 2, "gine", "combiner", combiner_block=block).to(DT)
    plain = GPSLayer(8, 2, "gine", "full").to(DT)
    state = {k.replace("attention.attention.", "attention."): v for k, v in combiner.state_dict().items()
             if not k.startswith("attention.pool_score")}
    plain.load_state_dict(state)
    torch.nn.init.normal_(combiner.attention.pool_score.weight)  # in-region pooling: moot at both extremes
    combiner.eval(), plain.eval()
    x = LayerState(batch.x, batch)
    torch.testing.assert_close(combiner(x).x, plain(x).x)
    # the family's once-per-batch pattern and the layer's own are the same regions
    shared = combiner_pattern(batch, block_regions(batch, block))
    torch.testing.assert_close(combiner(LayerState(batch.x, batch, pattern=shared)).x, plain(x).x)


def test_gps_layer_combiner_block_must_be_positive():
    from sparsegt.models import ModelConfig
    from sparsegt.nn import GPSLayer

    with pytest.raises(ValueError, match="combiner_block"):
        GPSLayer(8, 2, "gine", "combiner", combiner_block=0)
    with pytest.raises(ValueError, match="combiner_block"):
        ModelConfig(layer="gps", attention="combiner", combiner_block=0)
