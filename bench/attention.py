"""Sparse attention on CPU: the fused kernel against the torch reference, PyG's edge softmax, dense SDPA
with a mask and FlexAttention, measured side by side in one run.

    python bench/attention.py                 # the default sweep (what `make bench` runs)
    python bench/attention.py --quick         # N=4096 only
    python bench/attention.py --full          # every graph x N x (H, D) x method the guards allow
    python bench/attention.py --sizes 16384 --graphs er --methods cpu,pyg --heads-dims 4x32
    python bench/attention.py --profile       # where the kernel's time goes (N=16384, ER, H=4, D=32)

Graphs: ``er`` Erdos-Renyi with average degree 16; ``band`` a window |i - j| <= 8; ``ba`` a
Barabasi-Albert power-law graph (m=8, so average degree ~16, hubs with thousands of edges);
``pattern`` a batch of PATTERN-sized graphs (44-190 nodes, mean ~117) with full attention inside each.

Methods: ``cpu`` this library's fused kernel (``backend="cpu"``); ``ranges`` its kernel for patterns whose
rows are runs of consecutive keys (``band`` and ``pattern``; ``backend="ranges"``); ``torch`` its
pure-PyTorch reference;
``pyg`` the edge-softmax path of PyG's TransformerConv (gather q_i and k_j per edge,
``torch_geometric.utils.softmax``, multiply v_j, scatter-sum); ``sdpa`` dense
``scaled_dot_product_attention`` with an N x N boolean mask; ``flex`` FlexAttention compiled with a
block mask (forward only: on CPU it refuses inputs that require grad).

How it measures: every (graph, N, H, D, method) runs in a fresh subprocess with ``--threads`` torch
(and numba) threads. After a warm-up call (JIT compilation, caches), the peak extra memory of one
forward and of one forward+backward is the rise of the process's resident-set high-water mark
(``VmHWM`` in /proc/self/status, reset through /proc/self/clear_refs) above the resident set before
the call; glibc is told to mmap every block of 64 KiB or more, so freed tensors leave the resident set
and the mark counts live memory only. It includes the gradients of q, k, v (the same for every
method) and, for ``sdpa``/``flex``, the N x N mask they need. Times are medians of several calls.
GFLOP/s counts 4*E*H*D floating-point operations for a forward. ``x PyG`` is PyG's median time over
the method's, in the same run. The machine may be shared: absolute times drift, ratios hold better.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "attention.json"
GRAPHS = ("er", "band", "ba", "pattern")
METHODS = ("cpu", "ranges", "torch", "pyg", "sdpa", "flex")
MEMORY_BUDGET = 8 * 2**30  # skip a method whose estimated peak exceeds this (the machine is shared)


# ---------------------------------------------------------------------------------------------- graphs
def build_graph(kind: str, n: int, seed: int = 0):
    import numpy as np
    import torch

    from sparsegt import Graph

    rng = np.random.default_rng(seed)
    if kind == "er":
        e = 16 * n
        edge_index = torch.as_tensor(rng.integers(0, n, (2, e)))
        return Graph.from_edge_index(edge_index, n, remove_duplicates=True)
    if kind == "band":
        rows = np.repeat(np.arange(n), 17)
        cols = rows + np.tile(np.arange(-8, 9), n)
        keep = (cols >= 0) & (cols < n)
        return Graph.from_edge_index(torch.as_tensor(np.stack([cols[keep], rows[keep]])), n)
    if kind == "ba":
        src, dst = _barabasi_albert(n, 8, rng)
        edge_index = torch.as_tensor(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]))
        return Graph.from_edge_index(edge_index, n, remove_duplicates=True)
    if kind == "pattern":
        sizes = []
        while sum(sizes) < n:
            sizes.append(int(rng.integers(44, 191)))
        sizes[-1] -= sum(sizes) - n
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        cols = np.concatenate([np.tile(np.arange(offsets[b], offsets[b + 1]), size)
                               for b, size in enumerate(sizes)])
        indptr = torch.as_tensor(np.concatenate([[0], np.cumsum(np.repeat(sizes, sizes))]))
        return Graph(indptr, torch.as_tensor(cols), n)
    raise ValueError(f"unknown graph {kind!r}; choose from {GRAPHS}")


def _barabasi_albert(n: int, m: int, rng):
    """Preferential attachment: each new node links to m earlier nodes drawn in proportion to degree
    (with replacement; duplicate links are removed afterwards)."""
    import numpy as np

    targets = np.empty(2 * m * n, np.int64)  # every edge end seen so far: sampling it is degree-weighted
    filled = 0
    src = np.empty(m * (n - m), np.int64)
    dst = np.empty(m * (n - m), np.int64)
    draws = rng.random((n, m))
    for t in range(m, n):
        base = (t - m) * m
        if filled == 0:
            chosen = np.arange(m)
        else:
            chosen = targets[(draws[t] * filled).astype(np.int64)]
        src[base:base + m] = t
        dst[base:base + m] = chosen
        targets[filled:filled + m] = chosen
        targets[filled + m:filled + 2 * m] = t
        filled += 2 * m
    return src, dst


# ---------------------------------------------------------------------------------------------- methods
def make_method(name: str, g, heads: int, dim: int):
    """A callable (q, k, v) -> out [N, H, D] for one method, with its setup (masks, compilation) done."""
    import torch

    from sparsegt import sparse_attention

    n = g.num_nodes
    scale = dim**-0.5
    if name in ("cpu", "ranges", "torch"):
        return lambda q, k, v: sparse_attention(q, k, v, g, backend=name)
    if name == "pyg":
        from torch_geometric.utils import scatter, softmax

        dst, src = g.row_index(), g.indices

        def pyg(q, k, v):  # TransformerConv.message + aggregate, as PyG 2.8.1 computes them
            alpha = (q[dst] * k[src]).sum(dim=-1) * scale
            alpha = softmax(alpha, dst, None, n)
            return scatter(v[src] * alpha.view(-1, heads, 1), dst, dim=0, dim_size=n, reduce="sum")

        return pyg
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[g.row_index(), g.indices] = True
    if name == "sdpa":
        def sdpa(q, k, v):
            q4, k4, v4 = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out = torch.nn.functional.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=scale)
            return out.squeeze(0).transpose(0, 1)

        return sdpa
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        block_mask = create_block_mask(lambda b, h, qi, kv: mask[qi, kv], None, None, n, n, device="cpu")
        compiled = torch.compile(flex_attention)

        def flex(q, k, v):
            q4, k4, v4 = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            return compiled(q4, k4, v4, block_mask=block_mask, scale=scale).squeeze(0).transpose(0, 1)

        return flex
    raise ValueError(f"unknown method {name!r}; choose from {METHODS}")


def skip_reason(method: str, graph: str, n: int, num_edges: int, heads: int, dim: int) -> str | None:
    """Why a combination is not measured (too slow or too big for this machine), or None."""
    per_edge = num_edges * heads * dim * 4
    if method == "ranges" and graph not in ("band", "pattern"):
        return "rows are not runs of consecutive keys"
    if method in ("pyg", "torch") and 8 * per_edge > MEMORY_BUDGET:
        return f"needs ~{8 * per_edge / 2**30:.0f} GiB (E*H*D tensors)"
    if method in ("sdpa", "flex") and n > 16384:
        return "N^2 mask too large"
    return None


# ---------------------------------------------------------------------------------------------- worker
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _peak_extra(fn) -> int:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - base)


def _median_ms(fn, min_time: float, max_repeats: int) -> tuple[float, int]:
    times = []
    while len(times) < max_repeats:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if sum(times) >= min_time and len(times) >= 3 or sum(times) > 4 * min_time:
            break
    times.sort()
    return 1e3 * times[len(times) // 2], len(times)


def worker(spec: dict) -> dict:
    import torch

    from sparsegt import Graph

    torch.set_num_threads(spec["threads"])
    indptr, indices, num_cols = torch.load(spec["graph_file"])
    g = Graph(indptr, indices, num_cols, validate=False)
    heads, dim = spec["heads"], spec["dim"]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(g.num_nodes, heads, dim, generator=gen) for _ in range(3))
    if spec["method"] == "cpu":
        g.csc()  # the transposed pattern is cached on the graph, as in training
    fn = make_method(spec["method"], g, heads, dim)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def forward():
        with torch.no_grad():
            fn(q, k, v)

    def forward_backward():
        for t in leaves:
            t.grad = None
        fn(*leaves).sum().backward()

    result = dict(spec, num_edges=g.num_edges)
    forward()
    result["fwd_mib"] = _peak_extra(forward) / 2**20
    result["fwd_ms"], result["fwd_runs"] = _median_ms(forward, spec["min_time"], spec["max_repeats"])
    if spec["method"] == "flex":
        result["fwdbwd_note"] = "no backward on CPU"
        return result
    forward_backward()
    result["fwdbwd_mib"] = _peak_extra(forward_backward) / 2**20
    result["fwdbwd_ms"], result["fwdbwd_runs"] = _median_ms(forward_backward, spec["min_time"],
                                                             spec["max_repeats"])
    return result


def run_worker(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(spec["threads"]))
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timed out after {timeout:.0f} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        if "VecAVX512" in proc.stderr:  # torch 2.13's inductor CPU flex-attention template asserts AVX-512
            return dict(spec, error="compiled FlexAttention needs AVX-512 on CPU (inductor template)")
        errors = [line for line in proc.stderr.splitlines() if "Error" in line.split(":")[0]]
        tail = (errors or proc.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(spec, error=tail[:160])
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- profile
def profile(threads: int, n: int) -> None:
    """Where the kernel's time goes: its stages (torch.profiler ranges recorded by the backend), and the
    cost of gathering rows, seen by running the same amount of arithmetic on patterns whose keys are
    scattered (ER), neighbouring (band) or the same 16 keys for every row (all in L1)."""
    import torch

    from sparsegt import Graph, sparse_attention

    torch.set_num_threads(threads)
    heads, dim = 4, 32
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(n).repeat_interleave(16)
    patterns = {
        "ER (random keys)": build_graph("er", n),
        "band (neighbouring keys)": Graph.from_edge_index(
            torch.stack([(rows + torch.arange(16).repeat(n)) % n, rows]), n),
        "same 16 keys for every row": Graph.from_edge_index(
            torch.stack([torch.arange(16).repeat(n), rows]), n),
    }
    q, k, v = (torch.randn(n, heads, dim, generator=gen).requires_grad_() for _ in range(3))
    print(f"profile: N={n}, H={heads}, D={dim}, {threads} threads, load average {os.getloadavg()[0]:.1f}")
    for name, g in patterns.items():
        g.csc()
        step = lambda g=g: sparse_attention(q, k, v, g, backend="cpu").sum().backward()
        step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
        stages = {e.key: e.cpu_time_total / 5e3 for e in prof.key_averages()
                  if e.key.startswith("sparsegt.cpu.")}
        total = sum(stages.values())
        flops = 4 * g.num_edges * heads * dim
        parts = ", ".join(f"{key.removeprefix('sparsegt.cpu.')} {ms:.1f} ms" for key, ms in stages.items())
        fwd = stages.get("sparsegt.cpu.forward", float("nan"))
        print(f"  {name:28s} E={g.num_edges}: kernels {total:.1f} ms per fwd+bwd ({parts}); "
              f"forward {flops / fwd / 1e6:.1f} GFLOP/s")


# ---------------------------------------------------------------------------------------------- sweep
def default_cases(quick: bool, full: bool) -> list[tuple[str, int, int, int, tuple[str, ...]]]:
    """(graph, N, H, D, methods) to measure. The default takes ~10 minutes on two idle cores (half an
    hour when the machine is shared); --full measures everything the memory guards allow (hours)."""
    if full:
        return [(g, n, h, d, METHODS) for g in GRAPHS for n in (4096, 16384, 65536, 262144)
                for h, d in ((4, 32), (8, 64))]
    small = [("er", 4096, 4, 32, METHODS), ("band", 4096, 4, 32, ("cpu", "torch", "pyg")),
             ("ba", 4096, 4, 32, ("cpu", "torch", "pyg")), ("pattern", 4096, 4, 32, ("cpu", "ranges", "pyg", "sdpa")),
             ("pattern", 4096, 4, 16, ("cpu", "ranges", "pyg", "sdpa"))]
    if quick:
        return small
    return small + [
        ("er", 16384, 4, 32, ("cpu", "torch", "pyg", "sdpa")),
        ("band", 16384, 4, 32, ("cpu", "pyg")),
        ("ba", 16384, 4, 32, ("cpu", "pyg")),
        ("pattern", 16384, 4, 32, ("cpu", "ranges", "pyg")),
        ("er", 16384, 8, 64, ("cpu", "pyg")),
        ("er", 65536, 4, 32, ("cpu", "pyg")),
        ("er", 262144, 4, 32, ("cpu",)),
        ("ba", 262144, 4, 32, ("cpu",)),
    ]


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                load_average=os.getloadavg())


def print_table(rows: list[dict]) -> None:
    anchor = {(r["graph"], r["n"], r["heads"], r["dim"]): r for r in rows
              if r["method"] == "pyg" and "fwd_ms" in r}
    header = ["graph", "N", "E", "HxD", "method", "fwd ms", "fwd+bwd ms", "fwd MiB", "f+b MiB", "GFLOP/s",
              "x PyG fwd", "x PyG f+b"]
    table = []
    for r in rows:
        key = (r["graph"], r["n"], r["heads"], r["dim"])
        cells = [r["graph"], str(r["n"]), str(r.get("num_edges", "")), f"{r['heads']}x{r['dim']}",
                 r["method"]]
        if "error" in r or "skipped" in r:
            table.append(cells + [r.get("skipped") or "error: " + r["error"]] + [""] * 6)
            continue
        gflops = 4 * r["num_edges"] * r["heads"] * r["dim"] / (r["fwd_ms"] * 1e6)
        pyg = anchor.get(key)
        ratio = lambda field, pyg=pyg, r=r: (
            f"{pyg[field] / r[field]:.1f}" if pyg and field in pyg and field in r else "")
        fwdbwd = f"{r['fwdbwd_ms']:.1f}" if "fwdbwd_ms" in r else r.get("fwdbwd_note", "")
        cells += [f"{r['fwd_ms']:.1f}", fwdbwd,
                  f"{r['fwd_mib']:.0f}", f"{r['fwdbwd_mib']:.0f}" if "fwdbwd_mib" in r else "",
                  f"{gflops:.1f}", ratio("fwd_ms"), ratio("fwdbwd_ms")]
        table.append(cells)
    try:
        from rich.console import Console
        from rich.table import Table

        out = Table(title="sparse attention, CPU (median ms; peak extra MiB; x PyG = PyG time / method time)")
        for h in header:
            out.add_column(h, justify="left" if h in ("graph", "method") else "right")
        for cells in table:
            out.add_row(*cells)
        Console(width=200).print(out)
    except ImportError:
        print(" | ".join(header))
        for cells in table:
            print(" | ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=4096 only")
    parser.add_argument("--full", action="store_true", help="every combination the memory guards allow")
    parser.add_argument("--sizes", help="comma-separated N, e.g. 4096,16384")
    parser.add_argument("--graphs", help=f"comma-separated subset of {','.join(GRAPHS)}")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--heads-dims", help="comma-separated HxD, e.g. 4x32,8x64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per measurement")
    parser.add_argument("--max-repeats", type=int, default=9)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement subprocess")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--profile", action="store_true", help="where the CPU kernel's time goes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.profile:
        profile(args.threads, args.sizes and int(args.sizes.split(",")[0]) or 16384)
        return
    cases = default_cases(args.quick, args.full)
    if args.sizes or args.graphs or args.heads_dims:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (4096, 16384, 65536, 262144)
        graphs = args.graphs.split(",") if args.graphs else GRAPHS
        hds = ([tuple(int(x) for x in hd.split("x")) for hd in args.heads_dims.split(",")]
               if args.heads_dims else [(4, 32)])
        cases = [(g, n, h, d, METHODS) for g in graphs for n in sizes for h, d in hds]
    wanted = set(args.methods.split(",")) if args.methods else set(METHODS)
    for name in wanted - set(METHODS):
        raise SystemExit(f"unknown method {name!r}; choose from {','.join(METHODS)}")
    import torch

    rows = []
    info = machine()
    scratch = Path(tempfile.mkdtemp(prefix="sparsegt-bench-"))
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, threads {args.threads}, "
          f"load average at start {info['load_average'][0]:.1f}", flush=True)
    for graph, n, heads, dim, methods in cases:
        graph_file = scratch / f"{graph}-{n}.pt"
        if not graph_file.exists():  # built once, shared by every measurement subprocess
            g = build_graph(graph, n)
            torch.save((g.indptr, g.indices, g.num_cols), graph_file)
        num_edges = int(torch.load(graph_file)[1].numel())
        for method in [m for m in METHODS if m in methods and m in wanted]:
            spec = dict(graph=graph, n=n, heads=heads, dim=dim, method=method, threads=args.threads,
                        min_time=args.min_time, max_repeats=args.max_repeats, graph_file=str(graph_file))
            reason = skip_reason(method, graph, n, num_edges, heads, dim)
            if reason:
                row = dict(spec, num_edges=num_edges, skipped=reason)
            else:
                row = run_worker(spec, args.timeout)
            row.pop("graph_file", None)
            rows.append(row)
            done = ("skipped: " + row["skipped"]) if "skipped" in row else row.get("error") or (
                f"fwd {row['fwd_ms']:.1f} ms, fwd+bwd {row.get('fwdbwd_ms', float('nan')):.1f} ms, "
                f"peak {row['fwd_mib']:.0f} / {row.get('fwdbwd_mib', float('nan')):.0f} MiB")
            print(f"  {graph:8s} N={n:<7d} E={num_edges:<9d} {heads}x{dim:<3d} {method:6s} {done}",
                  flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    info["load_average_end"] = os.getloadavg()
    print_table(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(dict(machine=info, threads=args.threads, rows=rows), indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
