"""A library call leaves the process as it found it (DESIGN.md, "State"; issue #20): numba's thread count,
the environment, the warnings filters and the floating-point environment.

What a first import or a first kernel call does to a process can only be seen in a fresh one, so most
checks run a short script in a subprocess (numba's pool of 2 threads, whatever the test run uses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest

from sparsegt.attention import numba_runtime

ROOT = Path(__file__).resolve().parents[1]
# every subpackage, so that a filter or a variable set by any module's import is seen
SUBPACKAGES = ("attention", "patterns", "data", "encodings", "nn", "models", "train", "cli")


def _run(script: str, **env: str) -> dict:
    """Run ``script`` in a fresh interpreter (two numba and torch threads unless ``env`` says otherwise);
    it prints one JSON line last, returned here."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    environment.update({"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT), **env})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- threads
def test_numba_threads_restores_the_callers_count_even_on_error():
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError), numba_runtime.numba_threads(1) as threads:
        assert threads == 1 and numba.get_num_threads() == 1
        raise RuntimeError("a kernel failed")
    assert numba.get_num_threads() == before


def test_thread_count_follows_torch_and_drops_to_one_for_small_work():
    import torch

    assert numba_runtime.thread_count(10, 1000) == 1
    expected = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    assert numba_runtime.thread_count(1000, 1000) == expected


def test_a_small_call_does_not_change_the_thread_count_seen_by_the_next_large_call():
    """A small call runs on one thread; afterwards numba's count is the caller's again, so the next large
    call (and any parallel loop that does not set a count: the tile plan, the encodings, the user's own)
    runs on every thread."""
    seen = _run("""
        import json, numba, torch
        torch.set_num_threads(2)
        import sparsegt
        from sparsegt import Graph, sparse_attention
        from sparsegt.attention import cpu_kernels
        from sparsegt.nn.gatedgcn import gated_aggregation

        inside = []
        kernel = cpu_kernels.attention_forward
        def recording(*args):
            inside.append(numba.get_num_threads())
            return kernel(*args)
        cpu_kernels.attention_forward = recording

        def attention(num_nodes, num_edges):
            g = torch.Generator().manual_seed(0)
            pattern = Graph.from_edge_index(torch.randint(0, num_nodes, (2, num_edges), generator=g),
                                            num_nodes=num_nodes)
            q = torch.randn(num_nodes, 4, 16, generator=g, requires_grad=True)
            sparse_attention(q, q, q, pattern, backend="cpu").sum().backward()

        def aggregation(num_nodes, num_edges):
            g = torch.Generator().manual_seed(0)
            graph = Graph.from_edge_index(torch.randint(0, num_nodes, (2, num_edges), generator=g),
                                          num_nodes=num_nodes)
            d, e, b = (torch.randn(num_nodes, 8, generator=g, requires_grad=True) for _ in range(3))
            c = torch.randn(num_edges, 8, generator=g, requires_grad=True)
            edge_hat, agg = gated_aggregation(graph, d, e, b, c)
            (edge_hat.sum() + agg.sum()).backward()

        counts = {"start": numba.get_num_threads()}
        attention(20, 50)
        counts["after small attention"] = numba.get_num_threads()
        aggregation(20, 50)
        counts["after small aggregation"] = numba.get_num_threads()
        attention(1000, 20000)  # E * H * (D + Dv) = 1.3M, above PARALLEL_MIN_WORK
        counts["inside small, large"] = inside
        counts["after large"] = numba.get_num_threads()
        print(json.dumps(counts))
    """)
    assert seen == {"start": 2, "after small attention": 2, "after small aggregation": 2,
                    "inside small, large": [1, 2], "after large": 2}


# ------------------------------------------------------------------------ environment, warnings filters
def test_import_writes_no_environment_variable():
    changed = _run(f"""
        import json, os
        before = dict(os.environ)
        import sparsegt
        for name in {SUBPACKAGES!r}:
            __import__("sparsegt." + name)
        after = dict(os.environ)
        print(json.dumps(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))))
    """)
    assert changed == []


def test_import_adds_no_warnings_filter():
    """The filters our dependencies add on their import are theirs: they are imported first."""
    added = _run(f"""
        import json, warnings
        import numpy, scipy.sparse, scipy.sparse.linalg, torch, numba, llvmlite  # their own filters are not ours
        before = list(warnings.filters)
        import sparsegt
        for name in {SUBPACKAGES!r}:
            __import__("sparsegt." + name)
        print(json.dumps([str(f) for f in warnings.filters if f not in before]))
    """)
    assert added == []


def test_kernels_inlining_exp_in_a_branch_compile_without_numba_ir_warnings():
    """The false alarm that used to be silenced by a process-wide filter is gone at its source, and `exp`
    still gives its documented values (0 below -87.33, NaN for NaN, saturated at exp(88))."""

    @numba.njit(fastmath={"reassoc", "contract", "nsz", "arcp"})
    def exp_in_branches(x, shift, out):
        for i in range(x.shape[0]):
            if shift:
                out[i] = numba_runtime.exp(x[i] - np.float32(1.0))
            else:
                out[i] = numba_runtime.exp(x[i])

    x = np.array([0.0, 1.0, -1.0, -87.0, -87.34, -np.inf, np.nan, 88.0, 100.0, np.inf], np.float32)
    out = np.empty_like(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp_in_branches(x, False, out)
        exp_in_branches(x, True, np.empty_like(x))
    assert [str(w.message) for w in caught if issubclass(w.category, numba.NumbaWarning)] == []
    finite = slice(0, 4)
    np.testing.assert_allclose(out[finite], np.exp(x[finite].astype(np.float64)), rtol=3e-7)
    assert out[4] == 0 and out[5] == 0 and np.isnan(out[6])
    assert out[7] == out[8] == out[9]
    np.testing.assert_allclose(out[7], np.exp(88.0), rtol=3e-7)


# --------------------------------------------------------------------------- floating-point environment
FP_ENVIRONMENT = """
    import ctypes, ctypes.util, json
    import numpy as np, torch, numba
    torch.set_num_threads(2)

    @numba.njit(parallel=True)
    def _times(a, b, out):
        for i in numba.prange(a.shape[0]):
            out[i] = a[i] * b[i]

    def fp_environment():
        '''What a changed floating-point environment would change: the rounding mode, and whether denormals
        survive (flush-to-zero / denormals-are-zero) on this thread, torch's and numba's worker threads.'''
        tiny = np.full(1 << 16, 1e-40, np.float32)
        out = np.empty_like(tiny)
        _times(tiny, np.ones_like(tiny), out)
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        return {"rounding": libm.fegetround(),
                "denormals, this thread": bool(np.float32(1e-40) * np.float32(1.0) != 0),
                "denormals, torch": bool((torch.full((1 << 20,), 1e-40) * 1.0 != 0).all()),
                "denormals, numba": bool((out != 0).all())}
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the rounding mode from glibc's libm")
def test_first_kernel_calls_leave_the_floating_point_environment_alone():
    """The trainer used to run a warm-up step because "the first kernel call changes the floating-point
    environment". Every fused kernel family's first call (forward and backward), in a fresh process,
    leaves it as it was; so does importing sparsegt."""
    seen = _run(FP_ENVIRONMENT + """
    seen = {"fresh process": fp_environment()}
    import sparsegt
    from sparsegt import Graph, sparse_attention
    from sparsegt.nn.gatedgcn import gated_aggregation
    from sparsegt.nn.grit import GRITAttention
    from sparsegt.patterns import window
    seen["import sparsegt"] = fp_environment()

    g = torch.Generator().manual_seed(0)
    graph = Graph.from_edge_index(torch.randint(0, 200, (2, 2000), generator=g), num_nodes=200)
    for backend, pattern in (("cpu", graph), ("ranges", window(200, 8)), ("tiles", window(200, 8))):
        q, k, v = (torch.randn(200, 2, 8, generator=g, requires_grad=True) for _ in range(3))
        sparse_attention(q, k, v, pattern, backend=backend).sum().backward()
        seen[backend] = fp_environment()
    d, e, b = (torch.randn(200, 8, generator=g, requires_grad=True) for _ in range(3))
    c = torch.randn(2000, 8, generator=g, requires_grad=True)
    sum(t.sum() for t in gated_aggregation(graph, d, e, b, c)).backward()
    seen["gatedgcn"] = fp_environment()
    pattern = graph.pattern()
    x, pair = torch.randn(200, 16, generator=g), torch.randn(2000, 16, generator=g, requires_grad=True)
    sum(t.sum() for t in GRITAttention(16, 2)(x, pattern, pair)).backward()
    seen["grit"] = fp_environment()
    print(json.dumps(seen))
    """)
    first = seen.pop("fresh process")
    assert first["denormals, this thread"] and first["denormals, torch"] and first["denormals, numba"]
    assert seen == {step: first for step in seen}


def test_a_first_call_computes_what_later_calls_compute():
    """`sparse_attention` called directly in a fresh process gives the same bits on its first call as on
    later ones (what the trainer's warm-up step was for), forward and gradients, float32."""
    same = _run("""
        import json, torch
        torch.set_num_threads(2)
        from sparsegt import Graph, sparse_attention

        g = torch.Generator().manual_seed(0)
        pattern = Graph.from_edge_index(torch.randint(0, 500, (2, 20000), generator=g), num_nodes=500)
        inputs = [torch.randn(500, 4, 32, generator=g) for _ in range(3)] + [torch.randn(20000, 4, generator=g)]

        def call():
            q, k, v, bias = (t.clone().requires_grad_() for t in inputs)
            out = sparse_attention(q, k, v, pattern, bias=bias, backend="cpu")
            (out * out).sum().backward()
            return [out.detach()] + [t.grad for t in (q, k, v, bias)]

        first, second, third = call(), call(), call()
        print(json.dumps([all(torch.equal(a, b) for a, b in zip(first, later)) for later in (second, third)]))
    """)
    assert same == [True, True]


# ----------------------------------------------------------------------------------------- matplotlib
def test_drawing_leaves_matplotlibs_backend_and_figures_alone():
    """`draw_pattern` and `plot_curves` used to call ``matplotlib.use("Agg")``, switching a notebook's
    backend; they draw on a `Figure` of their own now."""
    state = _run("""
        import json, os, tempfile
        import matplotlib
        matplotlib.use("svg")  # a backend the user chose
        import matplotlib.pyplot as plt
        from sparsegt.patterns import window
        from sparsegt.patterns.draw import draw_pattern
        from sparsegt.train.plots import plot_curves

        folder = tempfile.mkdtemp()
        draw_pattern(window(16, 2), os.path.join(folder, "pattern.png"))
        history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "train_metric": 0.5} for e in range(3)]
        plot_curves(history, "accuracy", os.path.join(folder, "curves.png"))
        print(json.dumps({"backend": matplotlib.get_backend(), "open figures": len(plt.get_fignums()),
                          "files": sorted(os.listdir(folder))}))
    """)
    assert state == {"backend": "svg", "open figures": 0, "files": ["curves.png", "pattern.png"]}
