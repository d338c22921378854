"""`batch_norm_relu` (fused numba kernels) against torch's ``skip + relu(BatchNorm1d(x))``: outputs, gradients
of x, the affine parameters and the skip input, running statistics and ``num_batches_tracked``, in training
and eval mode, momentum or cumulative average, with and without affine parameters; float64 gradcheck; the
numerics (a large common offset, NaN) and the errors torch gives."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsegt.nn.batch_norm_relu import batch_norm_relu, batch_norm_relu_torch

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=3e-5, rtol=3e-5)}


def run(fn, x, norm, skip_kind, seed=0):
    """Outputs, gradients (x, weight, bias, skip source) and buffers after one forward and backward of ``fn``."""
    gen = torch.Generator().manual_seed(seed)
    x = x.clone().requires_grad_()
    row = torch.randn(x.shape[1], dtype=x.dtype, generator=gen).requires_grad_()
    full = torch.randn(x.shape, dtype=x.dtype, generator=gen).requires_grad_()
    skip = {"none": None, "full": full, "row": row.expand(*x.shape)}[skip_kind]
    out = fn(x, norm, skip)
    weights = torch.randn(out.shape, dtype=x.dtype, generator=gen)
    (out * weights).sum().backward()
    grads = [x.grad, row.grad, full.grad]
    grads += [norm.weight.grad, norm.bias.grad] if norm.affine else []
    buffers = [norm.running_mean, norm.running_var, norm.num_batches_tracked] if norm.track_running_stats else []
    return [out.detach(), *grads, *buffers]


def compare(x, make_norm, skip_kind, training):
    results = []
    for fn in (batch_norm_relu, batch_norm_relu_torch):
        torch.manual_seed(0)
        norm = make_norm().to(x.dtype)
        with torch.no_grad():  # buffers and affine parameters away from their defaults
            if norm.track_running_stats:
                norm.running_mean.uniform_(-1, 1)
                norm.running_var.uniform_(0.5, 2)
            if norm.affine:
                norm.weight.uniform_(-2, 2)
                norm.bias.uniform_(-1, 1)
        norm.train(training)
        results.append(run(fn, x, norm, skip_kind))
    for index, (a, b) in enumerate(zip(*results, strict=True)):
        if a is None or b is None:
            assert a is None and b is None, f"entry {index}: a gradient on one side only"
            continue
        torch.testing.assert_close(a, b, **TOL[x.dtype], msg=lambda m, i=index: f"entry {i}: {m}")


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(2, 70), channels=st.integers(1, 9), dtype=st.sampled_from([torch.float64, torch.float32]),
       skip_kind=st.sampled_from(["none", "full", "row"]), training=st.booleans(),
       momentum=st.sampled_from([0.1, None, 0.5]), affine=st.booleans(), track=st.booleans(),
       scale=st.sampled_from([1.0, 1e-3, 50.0]))
def test_fused_equals_torch(rows, channels, dtype, skip_kind, training, momentum, affine, track, scale):
    x = torch.randn(rows, channels, dtype=dtype, generator=torch.Generator().manual_seed(rows * channels)) * scale
    compare(x, lambda: nn.BatchNorm1d(channels, momentum=momentum, affine=affine, track_running_stats=track),
            skip_kind, training)


def test_many_rows_split_into_chunks_and_a_large_common_offset():
    """Thousands of rows (chunks on every thread); then values 1e4 apart from their spread of 1, where float32
    itself resolves x only to 1e-3: the fused path (shifted float64 sums, x - mean first) stays within that
    resolution of the float64 result, torch's float32 batch norm is 50x further off (measured: 4.8e-4 vs 2.3e-2)."""
    gen = torch.Generator().manual_seed(1)
    compare(torch.randn(6000, 24, generator=gen), lambda: nn.BatchNorm1d(24), "full", True)
    x = torch.randn(6000, 24, generator=gen) + 1e4
    exact = batch_norm_relu_torch(x.double(), nn.BatchNorm1d(24).double())
    fused_error = (batch_norm_relu(x, nn.BatchNorm1d(24)).double() - exact).abs().max()
    torch_error = (batch_norm_relu_torch(x, nn.BatchNorm1d(24)).double() - exact).abs().max()
    assert fused_error < 1e-3 and fused_error < torch_error


@settings(max_examples=8, deadline=None)
@given(training=st.booleans(), skip_kind=st.sampled_from(["none", "full", "row"]))
def test_gradcheck(training, skip_kind):
    gen = torch.Generator().manual_seed(3)
    norm = nn.BatchNorm1d(3).double().train(training)
    with torch.no_grad():
        norm.weight.uniform_(-2, 2, generator=gen)
        norm.bias.uniform_(-0.5, 0.5, generator=gen)
    x = torch.randn(7, 3, dtype=torch.float64, generator=gen).requires_grad_()
    row = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    full = torch.randn(7, 3, dtype=torch.float64, generator=gen).requires_grad_()

    class Fused(nn.Module):  # functional_call swaps the norm's parameters for the checked tensors
        def __init__(self):
            super().__init__()
            self.norm = norm

        def forward(self, x, skip):
            return batch_norm_relu(x, self.norm, skip)

    module = Fused()

    def fn(x, weight, bias, row, full):
        skip = {"none": None, "full": full, "row": row.expand(7, 3)}[skip_kind]
        return torch.func.functional_call(module, {"norm.weight": weight, "norm.bias": bias}, (x, skip))

    weight, bias = (p.detach().clone().requires_grad_() for p in (norm.weight, norm.bias))
    assert torch.autograd.gradcheck(fn, (x, weight, bias, row, full))


def test_nan_stays_visible_and_one_row_in_training_is_torchs_error():
    norm = nn.BatchNorm1d(4)
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    out = batch_norm_relu(x, norm)
    assert out[:, 1].isnan().all() and not out[:, [0, 2, 3]].isnan().any()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        batch_norm_relu(torch.randn(1, 4), nn.BatchNorm1d(4))
    assert batch_norm_relu(torch.randn(0, 4), nn.BatchNorm1d(4).eval()).shape == (0, 4)


@pytest.mark.parametrize("skip_kind", ["full", "row"])
def test_a_bfloat16_skip_joins_the_float32_kernels(monkeypatch, skip_kind):
    """Under bfloat16 autocast the residual may arrive in bfloat16 beside a float32 input: the fused kernels
    take its upcast copy (they ran torch's ops before) and give torch's float32 sum; its gradient comes back
    in bfloat16."""
    import sparsegt.nn.batch_norm_relu as module

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=gen)
    skip = torch.randn(40 if skip_kind == "full" else 1, 6, generator=gen).to(torch.bfloat16)
    calls = []
    monkeypatch.setattr(module, "batch_norm_relu_torch", lambda *a: calls.append(a) or batch_norm_relu_torch(*a))
    outs = []
    for fn in (batch_norm_relu, batch_norm_relu_torch):
        torch.manual_seed(0)
        norm = nn.BatchNorm1d(6)
        leaf = skip.detach().clone().requires_grad_()
        out = fn(x, norm, leaf.expand(40, 6) if skip_kind == "row" else leaf)
        out.sum().backward()
        outs.append((out.detach(), leaf.grad))
    assert not calls                                      # the fused path ran
    assert outs[0][0].dtype == torch.float32 and outs[0][1].dtype == torch.bfloat16
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
