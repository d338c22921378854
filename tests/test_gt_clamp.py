"""GT's score clamp: applied by default (the paper's 5), a no-op while the scores stay inside [-5, 5],
a change once they leave it, and the same through the CPU kernel and the torch reference."""

import torch

from sparsegt import Graph
from sparsegt.nn import GTLayer, LayerState


def outputs(layer, x, g, edge_attr):
    state = layer(LayerState(x, g, edge_attr))
    out, edges = state.x, state.edge_attr
    return out if edges is None else torch.cat([out.flatten(), edges.flatten()])


def test_clamp_is_the_papers_and_acts_only_on_large_scores():
    g = Graph.from_edge_index(torch.randint(0, 25, (2, 120), generator=torch.Generator().manual_seed(0)), 25)
    for edge_features in (False, True):
        torch.manual_seed(0)
        layer = GTLayer(16, 4, edge_features=edge_features).eval()
        assert layer.attention.score_clamp == 5.0
        edge_attr = torch.randn(g.num_edges, 16) if edge_features else None
        for scale, should_differ in ((0.05, False), (40.0, True)):
            x = torch.randn(25, 16) * scale
            clamped = outputs(layer, x, g, edge_attr)
            layer.attention.score_clamp = None
            unclamped = outputs(layer, x, g, edge_attr)
            layer.attention.score_clamp = 5.0
            assert torch.allclose(clamped, unclamped, atol=1e-5) != should_differ
            layer.attention.backend = "torch"
            torch.testing.assert_close(outputs(layer, x, g, edge_attr), clamped, atol=1e-4, rtol=1e-4)
            layer.attention.backend = "auto"
