"""The backend interface (issue #16): auto's choice, the reasons a backend gives, and the one error."""

from __future__ import annotations

import pytest
import torch

from sparsegt import Graph
from sparsegt.attention import sparse_attention
from sparsegt.attention.api import BACKENDS, choose_backend
from sparsegt.attention.backend import AttentionInputs
from sparsegt.patterns import full, window

from .attention_checks import auto_backend


def old_auto_backend(q, k, v, pattern, gate, score_clamp):
    """`api._auto_backend` as it was before the backend interface, with sparse_attention's finite-k/v step;
    since ranges takes GT's score clamp, a clamp no longer sends a call of runs to the cpu kernel (tiles
    still refuses it)."""
    from sparsegt.attention.ranges import is_runs
    from sparsegt.attention.tile_plan import tile_fill, tile_plan

    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return "torch"
    if gate is not None:
        return "cpu"
    mean_degree = pattern.num_edges / max(1, pattern.num_nodes)
    if q.shape[2] <= 32 and mean_degree >= 32 and is_runs(pattern):
        return "ranges"
    if score_clamp is not None:
        return "cpu"
    long_rows = mean_degree >= 128 and pattern.num_edges < 2**31
    if long_rows and tile_fill(pattern) >= 0.25 and not tile_plan(pattern).duplicates:
        finite = bool(torch.isfinite(k).all()) and bool(torch.isfinite(v).all())
        return "tiles" if finite else "cpu"
    return "cpu"


def _patterns():
    gen = torch.Generator().manual_seed(0)
    scattered = Graph.from_edge_index(torch.randint(0, 1024, (2, 20000), generator=gen), 1024, remove_duplicates=True)
    dense_dup = Graph(torch.arange(0, 300 * 201, 201), torch.cat([torch.arange(200), torch.tensor([0])]).repeat(299),
                      num_cols=200)
    return {
        "full_small": full(Graph.batch([Graph.empty(n) for n in (5, 0, 7)])),
        "full_100x8": full(Graph.batch([Graph.empty(100)] * 8)),
        "full_300x4": full(Graph.batch([Graph.empty(300)] * 4)),
        "window_4": window(500, 4),
        "window_100": window(1024, 100),
        "gap_runs": Graph(torch.tensor([0, 40]), torch.arange(0, 80, 2), num_cols=80),
        "scattered": scattered,
        "dense_duplicates": dense_dup,
        "empty": Graph.empty(3, 5),
        "no_rows": Graph.empty(0, 0),
    }


PATTERNS = _patterns()


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_auto_chooses_as_the_rule_it_replaced(name):
    pattern = PATTERNS[name]
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for head_dim in (8, 32, 33, 64):
            q = torch.randn(pattern.num_nodes, 2, head_dim, generator=gen).to(dtype)
            k = torch.randn(pattern.num_cols, 2, head_dim, generator=gen).to(dtype)
            v = torch.randn(pattern.num_cols, 2, head_dim, generator=gen).to(dtype)
            k_nan = k.clone()
            if k_nan.numel():
                k_nan[0, 0, 0] = float("nan")
            gate = torch.ones(pattern.num_edges, 2, head_dim, dtype=dtype)
            for keys, gate_, clamp, dropout_p in ((k, None, None, 0.0), (k, gate, None, 0.0), (k, None, 5.0, 0.0),
                                                  (k_nan, None, None, 0.0), (k, None, None, 0.2)):
                inputs = AttentionInputs(q, keys, v, pattern, gate=gate_, dropout_p=dropout_p, score_clamp=clamp)
                expected = old_auto_backend(q, keys, v, pattern, gate_, clamp)
                assert choose_backend(inputs).name == expected, (name, dtype, head_dim, gate_ is not None, clamp)


def test_auto_on_another_device_takes_torch_without_reading_the_pattern():
    """A described call on the meta device (no GPU needed): every kernel backend says why not; no plan is built."""
    pattern = full(Graph.batch([Graph.empty(300)] * 2))
    q = torch.empty(600, 2, 16, device="meta")
    inputs = AttentionInputs(q, q, q, pattern)
    assert choose_backend(inputs).name == "torch"
    assert pattern.plans() == {}
    reasons = {b.name: b.unsupported_reasons(inputs, auto=True) for b in BACKENDS}
    assert "CPU" in reasons["ranges"][0] and "CPU" in reasons["cpu"][0] and "CPU only" in reasons["tiles"][0]
    assert reasons["torch"] == []


def test_backends_state_what_they_support():
    by_name = {b.name: b for b in BACKENDS}
    assert [b.name for b in BACKENDS] == ["triton", "ranges", "tiles", "cpu", "torch"]
    assert by_name["ranges"].supports.pattern == "runs" and not by_name["ranges"].supports.gate
    tiles = by_name["tiles"].supports
    assert tiles.pattern == "no duplicate edges" and tiles.finite_keys_and_values
    assert not by_name["tiles"].supports.score_clamp and by_name["cpu"].supports.score_clamp
    assert by_name["ranges"].supports.score_clamp
    assert by_name["torch"].supports.devices is None and by_name["torch"].supports.dtypes is None


def test_a_backend_that_cannot_run_lists_every_backends_reasons():
    g = window(40, 3)
    q = torch.randn(40, 1, 4)
    gate = torch.ones(g.num_edges, 1, 4)
    with pytest.raises(ValueError) as err:
        sparse_attention(q, q, q, g, gate=gate, backend="ranges")
    message = str(err.value)
    assert message.startswith("backend='ranges' cannot run this call: does not take a gate")
    assert "\n  tiles: does not take a gate" in message
    assert "\n  cpu: can run it" in message and "\n  torch: can run it" in message
    with pytest.raises(ValueError, match="backend must be one of"):
        sparse_attention(q, q, q, g, backend="flash")


def test_fused_layers_choose_their_path_through_the_same_interface():
    from sparsegt.attention.backend import first_runnable
    from sparsegt.nn import gatedgcn, grit

    g = window(10, 2)
    d = torch.randn(10, 4)
    c = torch.randn(g.num_edges, 4)
    assert first_runnable(gatedgcn.PATHS, g, d, d, d, c).name == "numba"
    assert first_runnable(gatedgcn.PATHS, g, d, d, d, c.double()).name == "torch"  # two dtypes
    half = d.bfloat16()
    assert gatedgcn.PATHS[0].unsupported_reasons(g, half, half, half, c.bfloat16()) == [
        "supports float32 and float64, but d, e, b, c are torch.bfloat16; cast with .float()"]
    q = torch.randn(10, 2, 2)
    assert first_runnable(grit.PATHS, q, c).name == "numba"
    assert first_runnable(grit.PATHS, q.bfloat16(), c.bfloat16()).name == "torch"


NAMES = ("auto", *(b.name for b in BACKENDS))


@pytest.mark.parametrize("backend", NAMES)
def test_bad_inputs_are_the_same_value_error_on_every_backend(backend):
    """Issue #14.9 and #14.13: H or D of 0 (ZeroDivisionError), meta tensors, a dropout seed that is not an
    integer (accepted by some backends, a TypeError in others), and a pattern built with validate=False whose
    index is out of range (a kernel read out of bounds) are one ValueError before any backend runs."""
    g = full(Graph.batch([Graph.empty(8)]))
    q = torch.randn(8, 2, 4)
    for shape in ((8, 0, 4), (8, 2, 0)):
        empty = torch.zeros(shape)
        with pytest.raises(ValueError, match="H .heads. and D .channels per head. must be >= 1"):
            sparse_attention(empty, empty, empty, g, backend=backend)
    meta = torch.empty(8, 2, 4, device="meta")
    with pytest.raises(ValueError, match="q is a meta tensor"):
        sparse_attention(meta, meta, meta, g, backend=backend)
    with pytest.raises(ValueError, match="bias is a meta tensor"):
        sparse_attention(q, q, q, g, bias=torch.empty(g.num_edges, 2, device="meta"), backend=backend)
    for seed in (1.5, 2.0, True, -1, 2**64, "7"):
        with pytest.raises(ValueError, match=r"dropout_seed must be an integer in 0..2\*\*64-1"):
            sparse_attention(q, q, q, g, dropout_p=0.1, dropout_seed=seed, backend=backend)
    for seed in (0, 7, 2**64 - 1):
        sparse_attention(q, q, q, g, dropout_p=0.1, dropout_seed=seed, backend=backend)
    indices = g.indices.clone()
    indices[5] = 10**9
    unchecked = Graph(g.indptr, indices, 8, validate=False)
    with pytest.raises(ValueError, match="pattern.indices hold 1000000000, outside 0..7"):
        sparse_attention(q, q, q, unchecked, backend=backend)
    indptr = g.indptr.clone()
    indptr[3] = 10**9
    with pytest.raises(ValueError, match="pattern.indptr decreases"):
        sparse_attention(q, q, q, Graph(indptr, g.indices, 8, validate=False), backend=backend)


@pytest.mark.parametrize("backend", [b.name for b in BACKENDS])
def test_double_backward_works_on_torch_and_is_a_clear_error_elsewhere(backend):
    """Issue #14.13: the kernel backends' backward is once-differentiable; a gradient of a gradient there said
    "element 0 of tensors does not require grad" (or was silently taken as constant)."""
    g = full(Graph.batch([Graph.empty(6)]))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 1, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = sparse_attention(q, k, v, g, backend=backend)
    (grad_q,) = torch.autograd.grad(out.square().sum(), q)  # first order: every backend
    assert torch.isfinite(grad_q).all()
    out = sparse_attention(q, k, v, g, backend=backend)
    if backend == "torch":
        (grad_q,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
        (second,) = torch.autograd.grad(grad_q.square().sum(), k)
        assert second.abs().sum() > 0
    else:
        with pytest.raises(RuntimeError, match=f"backend '{backend}' has no double backward.*backend='torch'"):
            torch.autograd.grad(out.square().sum(), q, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu_runs_on_the_float32_kernels_under_auto(dtype):
    """auto computes bf16/fp16 CPU inputs with the float32 kernels (not the O(E*H*D) reference) and casts back;
    gradients reach the half-precision leaves in their dtype."""
    g = full(Graph.batch([Graph.empty(40), Graph.empty(7)]))
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(47, 2, 8, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    out, lse = sparse_attention(q, k, v, g, return_lse=True)
    expected, expected_lse = sparse_attention(q.float(), k.float(), v.float(), g, return_lse=True)
    assert auto_backend(q.float(), g) != "torch"
    assert out.dtype == dtype and lse.dtype == dtype
    assert torch.equal(out, expected.to(dtype)) and torch.equal(lse, expected_lse.to(dtype))
    out.float().sum().backward()
    assert q.grad.dtype == dtype and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError, match="cast with .float()"):
        sparse_attention(q, k, v, g, backend="cpu")
