"""What the attention backends' tests share: outputs and gradients through one call, comparison with the
reference (values and every gradient), the dense oracle, and gradcheck with a finite lse."""

from __future__ import annotations

import torch

from .test_attention_reference import dense_oracle

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=1e-5, rtol=1e-5)}


def finite_lse(lse):
    """lse with the -inf of empty rows replaced by 0 (a loss or gradcheck output must be finite)."""
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def outputs_and_grads(attention, inputs, grad_out, grad_lse=None):
    """``attention(*leaves) -> (out, lse)`` on fresh leaves copied from ``inputs`` (None stays None).

    Returns ``(out, lse, grads)``: the gradients of ``sum(out * grad_out) + sum(lse * grad_lse)`` (empty
    rows' lse left out) with respect to the leaves that are not None."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out, lse = attention(*leaves)
    loss = (out * grad_out).sum()
    if grad_lse is not None:
        loss = loss + (finite_lse(lse) * grad_lse).sum()
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True) if loss.requires_grad else [None] * len(wanted)
    return out.detach(), lse.detach(), grads


def assert_same(ours, ref, dtype, names=("q", "k", "v", "bias", "gate")):
    """Two ``(out, lse, grads)`` agree; a gradient one side leaves as None counts as zeros."""
    torch.testing.assert_close(ours[0], ref[0], **TOL[dtype])
    torch.testing.assert_close(ours[1], ref[1], **TOL[dtype])
    for name, a, b in zip(names, ours[2] or [], ref[2] or [], strict=False):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"grad {name}: {m}")


def assert_equals_dense_oracle(out, lse, q, k, v, g, bias=None, gate=None, score_clamp=None):
    ref_out, ref_lse = dense_oracle(q, k, v, g, bias, gate, score_clamp=score_clamp)
    torch.testing.assert_close(out, ref_out, **TOL[torch.float64])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float64])


def assert_gradcheck(attention, inputs):
    """gradcheck of ``attention(*inputs) -> (out, lse)`` (fp64 inputs that require grad)."""
    def f(*tensors):
        out, lse = attention(*tensors)
        return out, finite_lse(lse)

    assert torch.autograd.gradcheck(f, tuple(inputs))


def auto_backend(q, pattern, gate=None, score_clamp=None, k=None, v=None):
    """The name of the backend ``backend="auto"`` takes for a call (q's device, dtype and head width)."""
    from sparsegt.attention.api import choose_backend
    from sparsegt.attention.backend import AttentionInputs

    k = q if k is None else k
    return choose_backend(AttentionInputs(q, k, k if v is None else v, pattern, gate=gate,
                                          score_clamp=score_clamp)).name
