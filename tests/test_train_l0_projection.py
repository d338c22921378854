"""TEDDY's projected gradient descent onto the l0 ball, called in a plain training loop (issue #19)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsegt.train.l0_projection import L0BallProjection, weight_matrices


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 3))


@pytest.mark.parametrize("keep_fraction", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_a_training_loop_with_the_projection_keeps_exactly_k_per_tensor(keep_fraction):
    model = small_model()
    projection = L0BallProjection(keep_fraction)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 6, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()   # Adam moves pruned entries off zero again; the projection puts them back
        projection.project(model)
        for name, p in model.named_parameters():
            if weight_matrices(name, p):
                assert int(torch.count_nonzero(p)) == math.floor(keep_fraction * p.numel() + 0.5)
            else:  # biases and the norm's scale stay dense
                assert int(torch.count_nonzero(p)) == p.numel()
    assert math.isfinite(float(loss.detach()))


def test_the_kept_entries_are_the_largest_magnitudes_and_projection_is_idempotent():
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    projection = L0BallProjection(0.25)
    projection.project(model)
    once = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            kept = once[name] != 0
            assert torch.equal(once[name][kept], before[name][kept])     # kept entries unchanged
            assert float(before[name][kept].abs().min()) >= float(before[name][~kept].abs().max())
    projection.project(model)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), once[name])


def test_equal_magnitudes_keep_the_first_positions():
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.fill_(-0.5)
    L0BallProjection(0.5).project(layer)
    assert layer.weight.flatten().ne(0).tolist() == [True] * 6 + [False] * 6


def test_custom_selection_and_nonzero_fraction():
    model = small_model()
    only_first = lambda name, p: name == "0.weight"  # noqa: E731
    L0BallProjection(0.5, select=only_first).project(model)
    assert L0BallProjection.nonzero_fraction(model, only_first) == 0.5
    assert int(torch.count_nonzero(model[3].weight)) == model[3].weight.numel()


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="keep_fraction"):
        L0BallProjection(1.2)
    with pytest.raises(ValueError, match="no parameter"):
        L0BallProjection(0.5, select=lambda name, p: False).project(small_model())
