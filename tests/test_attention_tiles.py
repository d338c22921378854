"""The dense-tiles backend against the torch reference and the dense oracle: values, every gradient,
dropout, lse, nasty patterns, tiles of every shape (one tile, many tiles, many chunks), and auto's choice."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsegt import Graph, sparse_attention
from sparsegt.attention import tile_plan as tile_plan_module
from sparsegt.attention import tiles
from sparsegt.attention.tile_plan import tile_fill, tile_plan
from sparsegt.attention.tiles import tiles_attention
from sparsegt.patterns import full, window

from .attention_checks import assert_equals_dense_oracle, assert_gradcheck, assert_same, auto_backend, outputs_and_grads
from .strategies import patterns, random_qkv

# (rows per tile, columns per block): the default, small tiles (many tiles of several widths), 1 x 1
TILE_SHAPES = [(64, 32), (3, 2), (1, 1)]


def run(backend, g, q, k, v, bias=None, dropout_p=0.0, seed=None, grad_out=None, grad_lse=None, tile_shape=None):
    def attention(q, k, v, bias):
        if backend == "tiles":
            plan = tile_plan(g, *tile_shape) if tile_shape else None
            return tiles_attention(q, k, v, g, bias, None, q.shape[-1] ** -0.5, dropout_p, seed, plan=plan)
        return sparse_attention(q, k, v, g, bias=bias, dropout_p=dropout_p, dropout_seed=seed, return_lse=True,
                                backend="torch")

    return outputs_and_grads(attention, (q, k, v, bias), grad_out, grad_lse)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few scores, so that one call runs many chunks of every width."""
    monkeypatch.setattr(tile_plan_module, "CHUNK_ENTRIES", 16)


@given(patterns(max_rows=14, max_cols=14, max_edges=80, allow_duplicates=False), st.sampled_from([1.0, 1e4]),
       st.booleans(), st.sampled_from([0.0, 0.4]), st.sampled_from(TILE_SHAPES), st.booleans(), st.booleans())
def test_values_and_gradients_match_reference_fp64(g, logit_scale, with_bias, dropout_p, tile_shape, same_dims,
                                                   with_lse_grad):
    """Without bias and dropout, D == Dv and no lse gradient, the fused flash kernels run per chunk."""
    dv = 3 if same_dims else 5
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=3, logit_scale=logit_scale, value_dim=dv)
    grad_out = torch.randn(g.num_nodes, 2, dv, dtype=torch.float64)
    grad_lse = torch.randn(g.num_nodes, 2, dtype=torch.float64) if with_lse_grad else None
    args = (g, q, k, v, bias if with_bias else None, dropout_p, 123)
    ours = run("tiles", *args, grad_out=grad_out, grad_lse=grad_lse, tile_shape=tile_shape)
    ref = run("torch", *args, grad_out=grad_out, grad_lse=grad_lse)
    assert_same(ours, ref, torch.float64)
    empty = g.degree() == 0
    assert (ours[0][empty] == 0).all() and torch.isneginf(ours[1][empty]).all()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the patch is constant
@given(patterns(max_rows=20, max_cols=20, max_edges=120, allow_duplicates=False), st.sampled_from(TILE_SHAPES))
def test_many_chunks_match_reference_fp32(small_chunks, g, tile_shape):
    q, k, v, bias, _ = (t.float() for t in random_qkv(g, heads=3, dim=8, seed=4))
    grad_out, grad_lse = torch.randn(g.num_nodes, 3, 8), torch.randn(g.num_nodes, 3)
    args = (g, q, k, v, bias, 0.2, 7)
    assert_same(run("tiles", *args, grad_out=grad_out, grad_lse=grad_lse, tile_shape=tile_shape),
                run("torch", *args, grad_out=grad_out, grad_lse=grad_lse), torch.float32)


@given(patterns(allow_duplicates=False))
def test_equals_dense_oracle(g):
    q, k, v, bias, _ = random_qkv(g, heads=2, dim=4, seed=5)
    out, lse = tiles_attention(q, k, v, g, bias, None, 0.5, 0.0, None, plan=tile_plan(g, 2, 3))
    assert_equals_dense_oracle(out, lse, q, k, v, g, bias)


@settings(max_examples=8)
@given(patterns(max_rows=6, max_cols=6, max_edges=16, allow_duplicates=False), st.sampled_from(TILE_SHAPES))
def test_gradcheck_with_bias_dropout_and_lse(g, tile_shape):
    q, k, v, bias, _ = (t.requires_grad_() for t in random_qkv(g, heads=2, dim=2, seed=2, value_dim=3))
    plan = tile_plan(g, *tile_shape)
    assert_gradcheck(lambda q, k, v, bias: tiles_attention(q, k, v, g, bias, None, 0.7, 0.3, 99, plan=plan),
                     (q, k, v, bias))


def test_window_and_full_per_graph_match_reference_with_chunks(small_chunks):
    batch = Graph.batch([Graph.empty(n) for n in (5, 0, 1, 17, 9)])
    for g in (window(70, 6), window(70, 6, causal=True), full(batch)):
        q, k, v, bias, _ = (t.float() for t in random_qkv(g, heads=2, dim=4, seed=1))
        grad_out, grad_lse = torch.randn(g.num_nodes, 2, 4), torch.randn(g.num_nodes, 2)
        args = (g, q, k, v, bias, 0.5, 3)
        assert_same(run("tiles", *args, grad_out=grad_out, grad_lse=grad_lse, tile_shape=(8, 4)),
                    run("torch", *args, grad_out=grad_out, grad_lse=grad_lse), torch.float32)


def test_plan_places_every_edge_once():
    g = window(50, 4)
    plan = tile_plan(g, 8, 4)
    placed = plan.edge_map[plan.edge_map >= 0]
    assert torch.equal(torch.sort(placed.long()).values, torch.arange(g.num_edges))
    assert plan.duplicates == 0
    assert plan.fill == pytest.approx(g.num_edges / plan.edge_map.numel())
    assert tile_fill(g, 8, 4) == plan.fill
    widths = [blocks for _, _, blocks in plan.groups]
    assert widths == sorted(widths) and len(set(widths)) == len(widths)


def test_duplicates_and_gate_are_refused_with_a_message_and_auto_avoids_them():
    dup = Graph(torch.tensor([0, 2, 2]), torch.tensor([1, 1]), num_cols=2)
    q = torch.randn(2, 1, 4)
    with pytest.raises(ValueError, match="1 duplicate"):
        sparse_attention(q, q, q, dup, backend="tiles")
    assert auto_backend(q, dup, None) == "cpu"
    g = window(300, 100)
    q = torch.randn(300, 1, 4)
    gate = torch.ones(g.num_edges, 1, 4)
    with pytest.raises(ValueError, match="gate"):
        sparse_attention(q, q, q, g, gate=gate, backend="tiles")
    with pytest.raises(ValueError, match="float32 and float64.*bfloat16"):
        sparse_attention(q.bfloat16(), q.bfloat16(), q.bfloat16(), g, backend="tiles")
    assert auto_backend(q, g, gate) == "cpu"


def test_auto_takes_tiles_for_long_dense_rows_and_the_kernel_otherwise():
    wide = torch.zeros(1, 1, 64)  # heads too wide for the ranges kernel
    assert auto_backend(wide, window(2048, 100), None) == "tiles"
    assert auto_backend(wide, full(Graph.batch([Graph.empty(300)] * 4)), None) == "tiles"
    assert auto_backend(wide, full(Graph.batch([Graph.empty(100)] * 8)), None) == "cpu"
    scattered = Graph.from_edge_index(torch.randint(0, 4096, (2, 40000), generator=torch.Generator().manual_seed(0)),
                                      4096, remove_duplicates=True)
    assert tile_fill(scattered) < 0.05
    assert auto_backend(wide, scattered, None) == "cpu"


def test_fused_flash_path_runs_and_matches_reference(monkeypatch):
    """No bias, no dropout, D == Dv, no lse gradient: torch's flash kernels compute each chunk."""
    calls = []
    for name in ("_FLASH", "_FLASH_BACKWARD"):
        kernel = getattr(tiles, name)
        counted = lambda *a, kernel=kernel, name=name, **kw: calls.append(name) or kernel(*a, **kw)  # noqa: E731
        monkeypatch.setattr(tiles, name, counted)
    batch = Graph.batch([Graph.empty(n) for n in (5, 0, 1, 17, 9)])
    for g in (window(70, 6), full(batch), Graph.from_edge_index(torch.tensor([[0, 1], [2, 2]]), 4)):
        q, k, v, _, _ = random_qkv(g, heads=2, dim=4, seed=3)
        grad_out = torch.randn(g.num_nodes, 2, 4, dtype=torch.float64)
        assert_same(run("tiles", g, q, k, v, grad_out=grad_out, tile_shape=(8, 4)),
                    run("torch", g, q, k, v, grad_out=grad_out), torch.float64)
    assert "_FLASH" in calls and "_FLASH_BACKWARD" in calls


@pytest.mark.parametrize("backend", ["torch", "cpu", "ranges", "tiles", "auto"])
def test_a_row_whose_every_key_is_masked_gives_zeros_and_minus_inf_on_every_backend(backend):
    """Issue #14.4: tiles gave such a row the mean of v and lse ~ -75 (the exponent floor raised -inf scores)."""
    g = full(Graph.batch([Graph.empty(200)]))
    q, k, v = (torch.randn(200, 1, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    bias = torch.zeros(g.num_edges, 1)
    bias[:200] = float("-inf")  # row 0: every key masked
    out, lse = sparse_attention(q, k, v, g, bias=bias, return_lse=True, backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and lse[0].item() == float("-inf")
    reference = sparse_attention(q, k, v, g, bias=bias, backend="torch")
    torch.testing.assert_close(out[1:], reference[1:], atol=1e-5, rtol=1e-5)
