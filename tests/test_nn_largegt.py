"""LargeGT: hop aggregates, the seed neighbourhood, local attention vs a dense oracle, the EMA codebook on hand
examples, global attention vs a dense oracle, and a few training steps on dcsbm-tiny."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsegt.data.hop_features import HOP_FEATURES, add_hop_features, propagated_features
from sparsegt.graph import Graph
from sparsegt.models import ModelConfig
from sparsegt.nn import EMACodebook, LargeGTGlobalAttention, LargeGTLocalAttention, token_pattern
from sparsegt.patterns import seed_neighbourhood
from sparsegt.train.config import RunConfig, apply_overrides
from sparsegt.train.run import train_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_graph(n: int = 12, p: float = 0.25, seed: int = 0, symmetric: bool = True) -> Graph:
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=g) < p
    adj = adj | adj.T if symmetric else adj
    adj.fill_diagonal_(False)
    return Graph.from_edge_index(torch.nonzero(adj).T, n, node_data={"x": torch.randn(n, 3, generator=g)})


def dense_adjacency(graph: Graph) -> torch.Tensor:
    a = torch.zeros(graph.num_nodes, graph.num_cols, dtype=torch.float64)
    a[graph.row_index(), graph.indices] = 1.0
    return a


def test_hop_features_are_powers_of_the_renormalised_adjacency():
    graph = random_graph(seed=1)
    a = dense_adjacency(graph) + torch.eye(graph.num_nodes, dtype=torch.float64)
    d = a.sum(1) ** -0.5
    a_hat = d[:, None] * a * d[None, :]
    x = graph.x.double()
    out = propagated_features(graph, hops=3)
    assert out.shape == (graph.num_nodes, 3, 3) and out.dtype == torch.float32
    for h in range(3):
        x = a_hat @ x
        torch.testing.assert_close(out[:, h].double(), x, rtol=1e-5, atol=1e-6)


def test_hop_features_errors_say_what_is_wrong():
    graph = random_graph()
    with pytest.raises(ValueError, match="hops must be >= 1"):
        propagated_features(graph, hops=0)
    with pytest.raises(ValueError, match="continuous node features"):
        propagated_features(graph.with_data(node_data={"x": torch.zeros(12, 2, dtype=torch.long)}))


def test_seed_neighbourhood_is_the_k_hop_ball_of_each_seed():
    graph = random_graph(n=15, p=0.15, seed=2, symmetric=False)
    seeds = torch.tensor([4, 0, 9, 4])
    a = dense_adjacency(graph)
    reach = torch.eye(15, dtype=torch.float64)
    hop_of = torch.full((15, 15), -1)
    hop_of[reach.bool()] = 0
    for step in range(1, 3):
        reach = ((reach + reach @ a) > 0).double()
        hop_of[(hop_of < 0) & reach.bool()] = step
    pattern = seed_neighbourhood(graph, seeds, 2)
    assert (pattern.num_nodes, pattern.num_cols) == (4, 15)
    for row, seed in enumerate(seeds.tolist()):
        cols = pattern.indices[pattern.indptr[row]:pattern.indptr[row + 1]]
        expected = torch.nonzero(reach[seed]).reshape(-1)
        assert cols.tolist() == expected.tolist()
        hops = pattern.edge_data["hop"][pattern.indptr[row]:pattern.indptr[row + 1]]
        assert hops.tolist() == hop_of[seed, expected].tolist()
    assert seed_neighbourhood(graph, seeds, 0).indices.tolist() == seeds.tolist()


def test_local_attention_over_the_sampled_neighbourhood_equals_a_dense_reference():
    torch.manual_seed(0)
    graph = random_graph(n=14, p=0.2, seed=3)
    seeds = torch.tensor([2, 7, 11])
    tokens_per_node, C, H = 3, 8, 2
    tokens = torch.randn(graph.num_nodes * tokens_per_node, C, dtype=torch.float64)
    query = tokens.view(graph.num_nodes, tokens_per_node, C)[seeds, 0]
    pattern = token_pattern(seed_neighbourhood(graph, seeds, 2), tokens_per_node)
    layer = LargeGTLocalAttention(C, H).double()
    out = layer(query, tokens, pattern)

    # dense oracle: each seed attends to the 3 tokens of every node within 2 hops of it
    a = dense_adjacency(graph) + torch.eye(graph.num_nodes, dtype=torch.float64)
    ball = (a @ a) > 0
    mask = ball[seeds].repeat_interleave(tokens_per_node, dim=1)  # [S, 3n]
    attention = layer.attention
    q, k, v = attention.project(layer.norm(query), layer.norm(tokens))
    scores = torch.einsum("shd,thd->hst", q, k) / math.sqrt(C // H)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    expected = attention.out_proj(torch.einsum("hst,thd->shd", weights, v).reshape(len(seeds), C))
    torch.testing.assert_close(out, expected)


def test_codebook_update_on_a_hand_example():
    book = EMACodebook(3, 2, decay=0.5)
    book.centroids.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-8.0, 4.0]]))
    book.counts.copy_(torch.tensor([1.0, 1.0, 2.0]))
    book.sums.copy_(book.centroids * book.counts[:, None])
    z = torch.tensor([[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    assignment = book.update(z)
    assert assignment.tolist() == [0, 0, 1]
    # n_0 = 0.5 * 1 + 0.5 * 2 = 1.5, m_0 = 0.5 * (0, 0) + 0.5 * (4, 4) = (2, 2): c_0 = (4/3, 4/3)
    # n_1 = 0.5 + 0.5 = 1, m_1 = 0.5 * (10, 10) + 0.5 * (9, 9): c_1 = (9.5, 9.5)
    # empty cluster 2: n_2 = 0.5 * 2 = 1, m_2 = 0.5 * (-16, 8) = (-8, 4): the centroid does not move
    assert book.counts.tolist() == [1.5, 1.0, 1.0]
    torch.testing.assert_close(book.centroids, torch.tensor([[4 / 3, 4 / 3], [9.5, 9.5], [-8.0, 4.0]]))
    assert book.sums[2].tolist() == [-8.0, 4.0]
    # the centroid moved toward the mean (2, 2) of its embeddings by w = 0.5 * 2 / (0.5 * 1 + 0.5 * 2) = 2/3
    torch.testing.assert_close(book.centroids[0], (1 - 2 / 3) * torch.zeros(2) + 2 / 3 * torch.tensor([2.0, 2.0]))


def test_dead_centroids_are_seeded_farthest_first_and_the_first_batch_initialises():
    book = EMACodebook(3, 1, decay=0.9)
    z = torch.tensor([[0.0], [1.0], [5.0], [6.0], [2.0]])
    assignment = book.update(z)  # nothing live: the first 3 embeddings seed centroids 0, 1, 2
    assert assignment.tolist() == [0, 1, 2, 2, 1]
    assert book.live.all()
    torch.testing.assert_close(book.centroids.reshape(-1), torch.tensor([0.0, 1.5, 5.5]))
    # centroid 1 dies; the embedding farthest from the live centroids (100) seeds it and equals it
    book.counts[1] = 0.0
    assignment = book.update(torch.tensor([[0.5], [100.0], [5.0]]))
    assert assignment.tolist() == [0, 1, 2]
    assert book.centroids[1].item() == pytest.approx(100.0)
    book.reset_parameters()
    assert not book.live.any()


def test_global_attention_equals_a_dense_reference_with_log_count_bias():
    torch.manual_seed(1)
    C, H, K, d = 8, 2, 5, 4
    layer = LargeGTGlobalAttention(C, H, K, d, decay=0.9).double()
    book = layer.codebook
    book.centroids.copy_(torch.randn(K, d, dtype=torch.float64))
    book.counts.copy_(torch.tensor([3.0, 0.0, 1.0, 0.5, 2.0], dtype=torch.float64))  # centroid 1 is dead
    x = torch.randn(6, C, dtype=torch.float64)
    out = layer(x)
    live = torch.tensor([0, 2, 3, 4])
    z = layer.to_codebook(x)
    q = layer.query(z).view(6, H, C // H)
    k = layer.key(book.centroids[live]).view(4, H, C // H)
    v = layer.value(book.centroids[live]).view(4, H, C // H)
    scores = torch.einsum("shd,khd->hsk", q, k) / math.sqrt(C // H) + book.counts[live].log()
    expected = layer.out_proj(torch.einsum("hsk,khd->shd", torch.softmax(scores, -1), v).reshape(6, C))
    torch.testing.assert_close(out, expected)
    before = book.centroids.clone()
    layer(x)  # update=False: the codebook stays
    assert torch.equal(book.centroids, before)
    layer(x, update=True)
    assert not torch.equal(book.centroids, before) and book.live.all()


def test_largegt_config_is_checked():
    with pytest.raises(ValueError, match="num_centroids"):
        ModelConfig(layer="largegt", num_centroids=-1)
    with pytest.raises(ValueError, match="drop\\s+model.lap_pe"):
        ModelConfig(layer="largegt", lap_pe={"k": 4})


def test_add_hop_features_shares_one_tensor_across_the_splits(tmp_path):
    from sparsegt.data import load_dataset

    dataset = load_dataset("dcsbm", root=tmp_path, num_nodes=600, num_communities=4)
    with_hops = add_hop_features(dataset, 2)
    tensors = [split[0].node_data[HOP_FEATURES] for split in (with_hops.train, with_hops.val, with_hops.test)]
    assert tensors[0].shape == (600, 2, dataset.train[0].x.shape[1])
    assert tensors[0] is tensors[1] is tensors[2]
    assert with_hops.train[0].indptr is dataset.train[0].indptr  # the sampler still sees the same graph


@pytest.mark.parametrize("num_centroids", [32, 0])
def test_largegt_trains_on_dcsbm_tiny(tmp_path, num_centroids):
    config = apply_overrides(RunConfig(), [
        "data.name=dcsbm-tiny", "data.fanouts=[5,4]", "data.batch_size=512", "data.eval_batch_size=1024",
        "model.layer=largegt", "model.num_layers=1", "model.hidden=16", "model.num_heads=2",
        f"model.num_centroids={num_centroids}", "model.codebook_dim=8", "train.epochs=4", "train.lr=3e-3",
        "train.warmup_epochs=0", "train.threads=1", "train.chance_check_epochs=0", "train.bn_recalibration=0",
        f"data.root={tmp_path / 'cache'}", f"out_dir={tmp_path}"])
    result = train_run(config, quiet=True)
    assert result.summary["status"] == "completed"
    losses = [json.loads(line)["train_loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
