"""The Triton backend against the torch reference and the dense oracle: values, every gradient, dropout
bits, hub rows cut into segments, empty and fully masked rows, NaN rows, large logits, half precision.

Without a GPU these run in Triton's CPU interpreter (conftest sets ``TRITON_INTERPRET=1``), at small sizes;
on a machine with CUDA the same file runs the compiled kernels on the GPU unchanged.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton", reason="Triton is not installed (pip install 'sparsegt[triton]'; make installs it)")

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.attention.api import choose_backend  # noqa: E402
from sparsegt.attention.backend import AttentionInputs  # noqa: E402
from sparsegt.attention.cpu import cpu_attention  # noqa: E402
from sparsegt.attention.triton_backend import TRITON, segments, triton_attention  # noqa: E402
from sparsegt.patterns import full  # noqa: E402

from .attention_checks import (  # noqa: E402
    TOL,
    assert_equals_dense_oracle,
    assert_gradcheck,
    assert_same,
    outputs_and_grads,
)
from .strategies import patterns, random_qkv  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_device(*tensors):
    return [None if t is None else t.to(DEVICE) for t in tensors]


def triton_fn(g, scale, dropout_p=0.0, seed=None, score_clamp=None, piece=256, block_edges=32):
    def run(q, k, v, bias=None, gate=None):
        return triton_attention(q, k, v, g, bias, gate, scale, dropout_p, seed, score_clamp=score_clamp,
                                piece=piece, block_edges=block_edges)
    return run


def reference_fn(g, dropout_p=0.0, seed=None, score_clamp=None):
    def run(q, k, v, bias=None, gate=None):
        return sparse_attention(q, k, v, g, bias=bias, gate=gate, dropout_p=dropout_p, dropout_seed=seed,
                                return_lse=True, score_clamp=score_clamp, backend="torch")
    return run


def compare(g, inputs, dtype=torch.float64, dropout_p=0.0, seed=None, score_clamp=None, piece=256, block_edges=32,
            reference_dtype=None):
    """Triton (in ``dtype``) and the reference (in ``reference_dtype``, default the same) on one call:
    outputs and gradients of sum(out * r1) + sum(lse * r2)."""
    g = g.to(DEVICE)
    inputs = on_device(*[None if t is None else t.to(dtype) for t in inputs])
    gen = torch.Generator().manual_seed(7)
    grad_out = torch.randn(g.num_nodes, inputs[0].shape[1], inputs[2].shape[2], generator=gen, dtype=torch.float64)
    grad_lse = torch.randn(g.num_nodes, inputs[0].shape[1], generator=gen, dtype=torch.float64)
    scale = inputs[0].shape[-1] ** -0.5
    ours = outputs_and_grads(triton_fn(g, scale, dropout_p, seed, score_clamp, piece, block_edges), inputs,
                             *on_device(grad_out.to(dtype), grad_lse.to(dtype)))
    ref_inputs = [None if t is None else t.to(reference_dtype or dtype) for t in inputs]
    ref = outputs_and_grads(reference_fn(g, dropout_p, seed, score_clamp), ref_inputs,
                            *on_device(grad_out.to(reference_dtype or dtype), grad_lse.to(reference_dtype or dtype)))
    return ours, ref


# ---------------------------------------------------------------------------------------------- values
@settings(max_examples=12)
@given(patterns(max_rows=10, max_cols=10, max_edges=40), st.sampled_from([1.0, 1e4]), st.booleans(), st.booleans(),
       st.sampled_from([None, 0.7]), st.sampled_from([0.0, 0.3]), st.sampled_from([(256, 32), (3, 2)]))
def test_values_and_gradients_match_reference_fp64(g, logit_scale, with_bias, with_gate, clamp, dropout_p, cut):
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale, value_dim=5)
    piece, block_edges = cut
    ours, ref = compare(g, (q, k, v, bias if with_bias else None, gate if with_gate else None),
                        dropout_p=dropout_p, seed=2**40 + 12345, score_clamp=clamp, piece=piece,
                        block_edges=block_edges)
    assert_same(ours, ref, torch.float64)
    empty = (g.degree() == 0).to(DEVICE)
    assert (ours[0][empty] == 0).all() and torch.isneginf(ours[1][empty]).all()


@settings(max_examples=6)
@given(patterns(max_rows=8, max_cols=8, max_edges=30, allow_duplicates=False))
def test_equals_dense_oracle(g):
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=4, seed=3)
    out, lse = triton_attention(*on_device(q, k, v), g.to(DEVICE), *on_device(bias, gate), 4 ** -0.5, 0.0, None,
                                piece=2, block_edges=2)
    assert_equals_dense_oracle(out.cpu(), lse.cpu(), q, k, v, g, bias, gate)


def test_gradcheck_with_bias_gate_clamp_and_lse():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 2, 0], [0, 0, 1, 2, 2]]), 3)
    q, k, v, bias, gate = (t.to(DEVICE).requires_grad_() for t in random_qkv(g, heads=1, dim=2, seed=5))
    assert_gradcheck(triton_fn(g.to(DEVICE), 0.8, score_clamp=0.9, piece=1, block_edges=2), (q, k, v, bias, gate))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    """float32, bfloat16, float16 inputs against the float64 reference on the same (rounded) inputs: the error
    is the output's own rounding, not an accumulated one (a 400-key hub row included)."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.zeros(400, dtype=torch.long), torch.randint(1, 30, (200,), generator=gen)])
    g = Graph.from_edge_index(torch.stack([torch.randint(0, 30, (600,), generator=gen), rows]), 30)
    q, k, v, bias, gate = random_qkv(g, heads=2, dim=16, seed=1)
    rounded = [t.to(dtype).double() for t in (q, k, v, bias, gate)]
    ours, ref = compare(g, rounded, dtype=dtype, reference_dtype=torch.float64)
    assert ours[0].dtype == dtype and ours[1].dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(ours[0].double(), ref[0], atol=4 * eps, rtol=4 * eps)
    torch.testing.assert_close(ours[1].double(), ref[1], atol=4 * eps, rtol=4 * eps)
    for name, a, b in zip("qkv", ours[2], ref[2]):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, atol=8 * eps * scale, rtol=8 * eps,
                                   msg=lambda m, n=name: f"d{n}: {m}")


# ---------------------------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("seed", [0, 1, 2**32 + 5, 2**62 - 1])
def test_dropout_mask_is_the_cpu_kernels_bit_for_bit(seed):
    """Same seed, same kept weights as the CPU kernel and the reference: outputs and gradients agree to
    rounding (one weight kept differently would move them by O(1))."""
    g = full(Graph.batch([Graph.empty(9), Graph.empty(6)]))
    q, k, v, bias, _ = random_qkv(g, heads=3, dim=4, seed=2)
    ours, ref = compare(g, (q, k, v, bias, None), dropout_p=0.5, seed=seed, block_edges=4)
    assert_same(ours, ref, torch.float64)
    cpu_out, _ = cpu_attention(q, k, v, g, bias, None, 0.5, 0.5, seed)
    torch.testing.assert_close(ours[0].cpu(), cpu_out, **TOL[torch.float64])


# ---------------------------------------------------------------------------------------------- nasty rows
def test_hub_row_cut_into_segments_and_merged():
    """One row of 300 edges beside rows of one or none: cut into pieces of 256 (and of 7; its keys' columns
    into pieces too), merged exactly."""
    rows = torch.cat([torch.zeros(300, dtype=torch.long), torch.tensor([1, 3])])
    cols = torch.cat([torch.arange(300) % 40, torch.tensor([5, 7])])  # 40 keys, each 7-8 times in the hub row
    g = Graph.from_edge_index(torch.stack([cols, rows]), 4, num_cols=40)
    plan = segments(g, "rows", 256)
    assert plan.split and plan.ptr.tolist() == [0, 2, 3, 3 + 1, 5]
    q, k, v, bias, gate = random_qkv(g, heads=1, dim=4, seed=4)
    for piece in (256, 7):
        ours, ref = compare(g, (q, k, v, bias, gate), piece=piece, block_edges=16)
        assert_same(ours, ref, torch.float64)


def test_empty_graph_rows_without_edges_and_a_row_whose_every_key_is_masked():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 1], [0, 0, 2, 2]]), 4, num_cols=3)
    q, k, v, bias, _ = random_qkv(g, heads=1, dim=2, seed=6)
    bias[2:] = float("-inf")  # row 2: every key masked
    ours, ref = compare(g, (q, k, v, bias, None), piece=1, block_edges=2)
    assert_same(ours, ref, torch.float64)
    assert (ours[0][1:] == 0).all() and torch.isneginf(ours[1][1:]).all()
    assert all(torch.isfinite(grad).all() for grad in ours[2])
    empty = Graph.empty(0, 0)
    q0 = torch.zeros(0, 2, 4, device=DEVICE)
    out, lse = triton_attention(q0, q0, q0, empty.to(DEVICE), None, None, 0.5, 0.0, None)
    assert out.shape == (0, 2, 4) and lse.shape == (0, 2)


def test_nan_reaches_exactly_the_rows_that_see_it():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 1, 2], [0, 0, 1, 2]]), 3)
    q, k, v, _, _ = random_qkv(g, heads=1, dim=2, seed=8)
    k[1, 0, 0] = float("nan")  # key 1: seen by rows 0 and 1
    out, lse = triton_attention(*on_device(q, k, v), g.to(DEVICE), None, None, 0.5, 0.0, None, piece=1,
                                block_edges=2)
    assert torch.isnan(out[:2]).all() and torch.isnan(lse[:2]).all()
    assert torch.isfinite(out[2]).all() and torch.isfinite(lse[2]).all()


@pytest.mark.parametrize("offset", [2.0**10, 2.0**20])
def test_a_constant_added_to_every_score_changes_nothing_float32(offset):
    """softmax(s + c) = softmax(s): in float32, with c = 2^10 or 2^20, outputs and every gradient equal those
    without c. Scores are exact here (small integers, a bias on a 1/8 grid), so any difference is the kernel's:
    a backward that rebuilt the weights from a float32 lse = c + log l would lose ulp(c) (1/8 at 2^20) in
    every exponent; the kernels keep the row maximum apart from the log-sum."""
    g = full(Graph.batch([Graph.empty(12), Graph.empty(5)]))
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randint(-2, 3, (17, 2, 4), generator=gen).double() for _ in range(3))  # scale 1/2: exact
    bias = torch.randint(-16, 17, (g.num_edges, 2), generator=gen).double() / 8
    run = {}
    for c in (0.0, offset):
        run[c], _ = compare(g, (q, k, v, bias + c, None), dtype=torch.float32)
    base, shifted = run[0.0], run[offset]
    torch.testing.assert_close(shifted[0], base[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shifted[1] - offset, base[1], atol=offset * 2**-23, rtol=0)
    for a, b in zip(shifted[2], base[2]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- dispatch
def cuda_like_call(dtype=torch.float32):
    """A call described by fake CUDA tensors: what auto would do on a GPU, without one."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    pattern = full(Graph.batch([Graph.empty(30)] * 2))
    with FakeTensorMode(allow_non_fake_inputs=True):
        q = torch.empty(60, 4, 16, device="cuda", dtype=dtype)
        bias = torch.empty(pattern.num_edges, 4, device="cuda", dtype=dtype)
    return AttentionInputs(q, q, q, pattern, bias=bias, dropout_p=0.1, score_clamp=5.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_auto_takes_triton_on_cuda_and_never_on_cpu(dtype):
    inputs = cuda_like_call(dtype)
    assert choose_backend(inputs) is TRITON
    assert inputs.pattern.plans() == {}  # deciding read no pattern data
    g = full(Graph.batch([Graph.empty(40)]))
    q = torch.randn(40, 2, 8)
    assert choose_backend(AttentionInputs(q, q, q, g)).name != "triton"
    assert "CUDA only" in TRITON.unsupported_reasons(AttentionInputs(q, q, q, g), auto=True)[0]


def test_without_triton_or_outside_the_interpreter_it_says_why(monkeypatch):
    from sparsegt.attention import triton_backend

    g = full(Graph.batch([Graph.empty(5)]))
    q = torch.randn(5, 1, 4)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="only in Triton's interpreter"):
        sparse_attention(q, q, q, g, backend="triton")
    monkeypatch.setattr(triton_backend, "triton_installed", lambda: False)
    assert choose_backend(cuda_like_call()).name == "torch"
    with pytest.raises(ValueError, match=r"needs Triton, which is not installed: pip install 'sparsegt\[triton\]'"):
        sparse_attention(q, q, q, g, backend="triton")


def test_sparse_attention_runs_it_by_name():
    g = full(Graph.batch([Graph.empty(6), Graph.empty(3)])).to(DEVICE)
    q, k, v = (torch.randn(9, 2, 4, device=DEVICE) for _ in range(3))
    out = sparse_attention(q, k, v, g, backend="triton")
    torch.testing.assert_close(out, sparse_attention(q, k, v, g, backend="torch"), **TOL[torch.float32])
