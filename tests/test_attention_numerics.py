"""Numerics at the edges, on every CPU kernel backend (cpu, ranges, tiles), against the torch reference:
a constant added to every score, logits of 1e4, and where a NaN score's gradient goes (issue #14.6).

Scores are exact here (small integers, scale 1/2, a bias on a 1/8 grid), so a float32 kernel can match the
float64 reference to its own rounding, whatever the offset: any larger difference is the kernel's."""

import pytest
import torch

from sparsegt import Graph, sparse_attention
from sparsegt.attention.cpu import cpu_attention
from sparsegt.patterns import full, window

from .attention_checks import outputs_and_grads

# "cpu-pieces" cuts every row into pieces of 3 edges: the partial results are merged (cpu_primitives)
BACKENDS = ("cpu", "cpu-pieces", "ranges", "tiles")


def attention(backend, pattern):
    """``(q, k, v, bias) -> (out, lse)`` through one backend (scale 1/2: head width 4)."""
    if backend == "cpu-pieces":
        return lambda q, k, v, bias: cpu_attention(q, k, v, pattern, bias, None, 0.5, 0.0, None, piece=3)
    return lambda q, k, v, bias: sparse_attention(q, k, v, pattern, bias=bias, return_lse=True, backend=backend)


def exact_inputs(pattern, seed=9, heads=2):
    """q, k, v [N, heads, 4] small integers and bias [E, heads] on a 1/8 grid (float64): every score exact."""
    gen = torch.Generator().manual_seed(seed)
    n = pattern.num_nodes
    q, k, v = (torch.randint(-2, 3, (n, heads, 4), generator=gen).double() for _ in range(3))
    bias = torch.randint(-16, 17, (pattern.num_edges, heads), generator=gen).double() / 8
    grad_out = torch.randn(n, heads, 4, generator=gen, dtype=torch.float64)
    grad_lse = torch.randn(n, heads, generator=gen, dtype=torch.float64)
    return [q, k, v, bias], grad_out, grad_lse


def run(backend, pattern, inputs, grad_out, grad_lse, dtype):
    """``(out, lse, [dq, dk, dv, dbias])`` in ``dtype`` (``backend="torch"``: the reference)."""
    cast = [None if t is None else t.to(dtype) for t in inputs]
    return outputs_and_grads(attention(backend, pattern), cast, grad_out.to(dtype), grad_lse.to(dtype))


PATTERN = full(Graph.batch([Graph.empty(12), Graph.empty(5)]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [2.0**10, 2.0**20])
def test_a_constant_added_to_every_score_changes_nothing_float32(backend, offset):
    """softmax(s + c) = softmax(s): in float32, with c = 2^10 or 2^20, outputs and every gradient equal those
    without c. A backward that rebuilt the weights from a float32 lse = c + log l lost ulp(c) (1/8 at 2^20) in
    every exponent (gradient errors 4e-5 at 2^10, 4% at 2^20); the kernels keep the row maximum apart from the
    log-sum."""
    inputs, grad_out, grad_lse = exact_inputs(PATTERN)
    base = run(backend, PATTERN, inputs, grad_out, grad_lse, torch.float32)
    shifted = run(backend, PATTERN, [*inputs[:3], inputs[3] + offset], grad_out, grad_lse, torch.float32)
    torch.testing.assert_close(shifted[0], base[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shifted[1] - offset, base[1], atol=offset * 2**-23, rtol=0)
    for name, a, b in zip("q k v bias".split(), shifted[2], base[2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m, name=name: f"grad {name}: {m}")


def large_logit_inputs(pattern, with_bias):
    """Exact inputs whose scores are about 1e4 with differences of a few units (so every edge keeps a weight):
    channel 0 of q and k is 141 (141 * 141 / 2 = 9940.5), the other channels small integers."""
    inputs, grad_out, grad_lse = exact_inputs(pattern, seed=4)
    inputs[0][..., 0] = 141.0
    inputs[1][..., 0] = 141.0
    if not with_bias:
        inputs[3] = None
    return inputs, grad_out, grad_lse


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_logits_of_1e4_match_the_float64_reference_to_float32_rounding(backend, with_bias):
    """Without a bias the tiles backend runs torch's fused flash kernels, whose backward rebuilds the weights
    from the lse: at such logits the tiles backward recomputes them exactly instead."""
    inputs, grad_out, grad_lse = large_logit_inputs(PATTERN, with_bias)
    ours = run(backend, PATTERN, inputs, grad_out, grad_lse, torch.float32)
    ref = run("torch", PATTERN, inputs, grad_out, grad_lse, torch.float64)
    assert ref[1].min() > 9000  # the logits are as large as meant
    torch.testing.assert_close(ours[0].double(), ref[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours[1].double(), ref[1], atol=0, rtol=2**-23)
    for name, a, b in zip("q k v bias".split(), ours[2], ref[2], strict=False):
        size = 1 + float(b.abs().max())  # dq and dk are about 141 times the weights' gradients
        torch.testing.assert_close(a.double(), b, atol=1e-6 * size, rtol=1e-6,
                                   msg=lambda m, name=name: f"grad {name}: {m}")


# ---------------------------------------------------------------------------------------------- NaN
NAN_PATTERN = window(5, 1)  # row i sees keys i-1, i, i+1 (runs: every backend takes it)


def nan_inputs(where):
    """Exact inputs with one NaN: in key 1 (head 0; rows 0, 1, 2 see it), in query 2 (head 1; with or without a
    bias, which for tiles is its other path: torch's fused kernels), in the bias of row 2's first edge or of
    the last edge (head 0)."""
    inputs, grad_out, grad_lse = exact_inputs(NAN_PATTERN, seed=3)
    q, k, _, bias = inputs
    if where == "key":
        k[1, 0, 0] = float("nan")
    elif where.startswith("query"):
        q[2, 1, 3] = float("nan")
        if where == "query without bias":
            inputs[3] = None
    elif where == "bias":
        bias[int(NAN_PATTERN.indptr[2]), 0] = float("nan")
    else:
        bias[-1, 0] = float("nan")
    return inputs, grad_out, grad_lse


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["key", "query", "query without bias", "bias", "last edge's bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_nan_score_makes_nan_exactly_the_gradients_the_reference_makes_nan(backend, where, dtype):
    """A NaN score reaches the gradients of its own edge (its bias, its key, its value) and of its row's query,
    as in the reference (autograd); the cpu kernel used to spread it to the gradient of every key and edge of
    the rows that see it. The other edges of a NaN row pass no finite gradient (the row's weights are
    undefined; the reference's finite numbers there come from its stand-in denominator 1): the finite entries
    equal the reference's with the upstream gradients of the NaN rows set to zero."""
    if backend == "tiles" and where == "key":
        pytest.skip("tiles refuses a NaN in k or v (test_attention_cpu checks the message)")
    inputs, grad_out, grad_lse = nan_inputs(where)
    ours = run(backend, NAN_PATTERN, inputs, grad_out, grad_lse, dtype)
    ref = run("torch", NAN_PATTERN, inputs, grad_out, grad_lse, dtype)
    nan_rows = torch.isnan(ref[1])
    assert nan_rows.any()
    quiet = run("torch", NAN_PATTERN, inputs, grad_out.masked_fill(nan_rows[..., None], 0),
                grad_lse.masked_fill(nan_rows, 0), dtype)
    torch.testing.assert_close(ours[0], ref[0], equal_nan=True)
    torch.testing.assert_close(ours[1], ref[1], equal_nan=True)
    for name, a, b, c in zip("q k v bias".split(), ours[2], ref[2], quiet[2], strict=False):
        assert torch.equal(torch.isnan(a), torch.isnan(b)), f"grad {name}: NaN at {torch.isnan(a).nonzero().tolist()}"
        torch.testing.assert_close(a, c, equal_nan=True, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("where", ["key", "gate"])
@pytest.mark.parametrize("score_clamp", [None, 0.75])
def test_a_nan_in_a_gate_or_through_a_score_clamp_stays_where_the_reference_puts_it(where, score_clamp):
    """The cpu kernel's options (gate, GT's score clamp) keep the rule of the test above."""
    inputs, grad_out, grad_lse = exact_inputs(NAN_PATTERN, seed=3)
    gate = torch.rand(NAN_PATTERN.num_edges, 2, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    if where == "key":
        inputs[1][1, 0, 0] = float("nan")
    else:
        gate[3, 0, 1] = float("nan")

    def through(backend):
        return lambda q, k, v, bias, gate: sparse_attention(q, k, v, NAN_PATTERN, bias=bias, gate=gate,
                                                            score_clamp=score_clamp, return_lse=True, backend=backend)

    ours = outputs_and_grads(through("cpu"), [*inputs, gate], grad_out, grad_lse)
    ref = outputs_and_grads(through("torch"), [*inputs, gate], grad_out, grad_lse)
    nan_rows = torch.isnan(ref[1])
    quiet = outputs_and_grads(through("torch"), [*inputs, gate], grad_out.masked_fill(nan_rows[..., None], 0),
                              grad_lse.masked_fill(nan_rows, 0))
    for name, a, b, c in zip("q k v bias gate".split(), ours[2], ref[2], quiet[2], strict=True):
        assert torch.equal(torch.isnan(a), torch.isnan(b)), f"grad {name}: NaN at {torch.isnan(a).nonzero().tolist()}"
        torch.testing.assert_close(a, c, equal_nan=True, msg=lambda m, name=name: f"grad {name}: {m}")
