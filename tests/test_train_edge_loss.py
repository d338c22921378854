"""Edge-level training and the density-normalised edge loss (issue #19; Knyazev et al., BMVC 2020)."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, ModelConfig
from sparsegt.train.losses import density_normalized_edge_loss, make_loss
from sparsegt.train.trainer import select_prediction

TASK = TaskSpec("edge", "multiclass", 3, "accuracy")


def edge_batch() -> Graph:
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n, labelled in ((8, 2), (4, 3)):                      # a sparse-labelled graph and a dense one
        ei = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
        ei = torch.cat([ei, ei.flip(0)], 1)
        graph = Graph.from_edge_index(ei, n, x=torch.randn(n, 3, generator=gen))
        y = torch.zeros(graph.num_edges, dtype=torch.long)
        y[:labelled] = torch.tensor([1, 2, 1])[:labelled]
        graph.edge_data["y"] = y
        graphs.append(graph)
    return Graph.batch(graphs)


def test_density_normalized_loss_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    foreground = torch.tensor([True, False, False, True, True])
    graph = torch.tensor([0, 0, 0, 1, 1])
    # graph 0: (1 + 2 + 3) / 1 labelled edge; graph 1: (4 + 5) / 2; mean over graphs
    assert float(density_normalized_edge_loss(losses, foreground, graph, 2)) == pytest.approx((6 + 4.5) / 2)
    # a graph without labelled edges keeps the plain mean
    assert float(density_normalized_edge_loss(losses, torch.zeros(5, dtype=torch.bool), graph, 2)) == \
        pytest.approx((2 + 4.5) / 2)


def test_edge_level_prediction_and_loss_through_the_model():
    batch = edge_batch()
    torch.manual_seed(0)
    model = GraphTransformer(ModelConfig(layer="gt", num_layers=1, hidden=8, num_heads=2, head_layers=1), TASK,
                             FeatureSpec("continuous", dim=3))
    prediction, target = select_prediction(model(batch), batch, TASK)
    assert prediction.shape == (batch.num_edges, 3) and torch.equal(target, batch.edge_data["y"])
    name, loss_fn = make_loss(TASK, "density_normalized_edge")
    loss = loss_fn(prediction, target, batch=batch)
    per_edge = torch.nn.functional.cross_entropy(prediction, target, reduction="none")
    e = int(batch.edge_ptr[1])
    want = (per_edge[:e].sum() / 2 + per_edge[e:].sum() / 3) / 2
    assert torch.allclose(loss, want)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    _, plain = make_loss(TASK)
    assert torch.allclose(plain(prediction, target, batch=batch), per_edge.mean())


def test_the_density_loss_needs_an_edge_task():
    with pytest.raises(ValueError, match="edge-level task"):
        make_loss(TaskSpec("node", "multiclass", 3, "accuracy"), "density_normalized_edge")
